"""``verger staging`` as a user runs it: a refresh killed halfway, status, classify, webhooks."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from verger.staging import UnclassifiedError, refresh

VERGER = [sys.executable, "-m", "verger"]


def verger(
    config: Path, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VERGER, "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _wait_for_loaded_copy(state: Path, process: subprocess.Popen[str]) -> None:
    """Until the refresh has loaded its copy and is masking it."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        if state.exists():
            try:
                with sqlite3.connect(state) as conn:
                    row = conn.execute(
                        "SELECT source FROM staging_refreshes ORDER BY id DESC LIMIT 1"
                    ).fetchone()
            except sqlite3.OperationalError:
                row = None
            if row and row[0]:
                return
        time.sleep(0.01)
    raise AssertionError("the refresh never loaded its copy")


def test_a_refresh_killed_halfway_leaves_staging_serving_the_old_copy(site):
    """Killed while masking: staging is untouched, status tells, the next refresh cleans up."""
    site.sql(
        "INSERT INTO messages (member_id, to_phone, body) SELECT 1 + g % 300,"
        " '+14155551001', 'call 415-555-1001 now ' || g FROM generate_series(1, 60000) g"
    )
    config = site.write_config()
    process = subprocess.Popen(
        [*VERGER, "-c", str(config), "staging", "refresh", "--snapshot"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _wait_for_loaded_copy(site.folder / ".verger" / "state.db", process)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()

    assert site.sql("SELECT note FROM marker", site.staging_url) == [("old copy",)]
    half = [n for n in site.databases() if "_refresh_" in n]
    assert len(half) == 1
    shown = verger(config, "--json", "staging", "status")
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["refreshes"][0]["status"] == "interrupted"
    assert status["left_behind"] == half

    site.sql("DELETE FROM messages WHERE id > 400")
    done = verger(config, "--json", "staging", "refresh", "--snapshot")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert f"dropped {half[0]}, left by an interrupted refresh" in answer["notes"]
    # The copy is live under staging's own name once swapped in.
    assert answer["database"] == site.staging
    assert not [n for n in site.databases() if "_refresh_" in n]
    statuses = [
        r["status"]
        for r in json.loads(verger(config, "--json", "staging", "status").stdout)[
            "refreshes"
        ]
    ]
    assert statuses == ["succeeded", "interrupted"]


def test_a_refresh_killed_during_the_swap_is_undone_by_the_next_one(site):
    """Staging renamed away and never replaced is renamed back before the next refresh."""
    site.sql(
        f'ALTER DATABASE "{site.staging}" RENAME TO "{site.staging}_previous"',
        site.production_url.rsplit("/", 1)[0] + "/postgres",
    )

    outcome = refresh(site.loaded(), site.store(), use_snapshot=True)

    assert f"renamed {site.staging}_previous back to {site.staging}" in outcome.notes
    assert site.sql("SELECT note FROM marker", site.staging_url + "_previous") == [
        ("old copy",)
    ]


def test_cli_errors_are_one_line_with_a_hint(site):
    """A refused refresh exits non-zero with one error line and a hint, no traceback."""
    site.sql("ALTER TABLE messages ADD COLUMN sender_ip text")
    done = verger(site.write_config(), "staging", "refresh", "--snapshot")

    assert done.returncode == 7
    assert "messages.sender_ip" in done.stderr
    assert "hint:" in done.stderr and "Traceback" not in done.stderr


def test_classify_proposes_rules_for_unclassified_columns(site):
    """classify proposes phone, email, text and keep from names and sampled values."""
    site.sql(
        "ALTER TABLE members ADD COLUMN mobile text, ADD COLUMN contact text,"
        " ADD COLUMN remarks text, ADD COLUMN plan text;"
        " UPDATE members SET mobile = '+1 415 555 ' || lpad(id::text, 4, '0'),"
        " contact = 'M' || id || '@mail.example', remarks = 'reach me at 415-555-'"
        " || lpad(id::text, 4, '0'), plan = 'basic'"
    )
    done = verger(site.write_config(), "--json", "staging", "classify")

    assert done.returncode == 0, done.stderr
    rules = {p["column"]: p["rule"] for p in json.loads(done.stdout)}
    assert rules == {
        "members.mobile": "phone",
        "members.contact": "email",
        "members.remarks": "text",
        "members.plan": "keep",
    }
    human = verger(site.write_config(), "staging", "classify").stdout
    assert "    members.mobile: phone" in human and "    - members.plan" in human


def test_webhooks_hear_of_success_and_failure(site, receiver):
    """refresh_succeeded and refresh_failed reach the configured webhooks."""
    site.extra = f"notify:\n  webhooks: ['{receiver.url}']"
    refresh(site.loaded(), site.store(), use_snapshot=True)
    site.sql("ALTER TABLE members ADD COLUMN nickname text")
    with pytest.raises(UnclassifiedError):
        refresh(site.loaded(), site.store(), use_snapshot=True)

    events = [(body["event"], body["refresh_id"]) for body in receiver.received]
    assert events == [("refresh_succeeded", 1), ("refresh_failed", 2)]
    assert "members.nickname" in receiver.received[1]["reason"]
    assert "no leak" in receiver.received[0]["text"]


def test_classify_proposes_name_for_a_column_called_name_in_a_table_of_people(site):
    """members.name and contact_name are proposed as name; churches.name stays kept."""
    site.sql(
        "ALTER TABLE members ADD COLUMN name text, ADD COLUMN contact_name text;"
        " UPDATE members SET name = 'Olivia Quartermaine', contact_name = 'Ann Lee';"
        " CREATE TABLE venues (id int PRIMARY KEY, name text);"
        " INSERT INTO venues VALUES (1, 'Main hall')"
    )
    site.keep.remove("churches.name")
    done = verger(site.write_config(), "--json", "staging", "classify")

    assert done.returncode == 0, done.stderr
    rules = {p["column"]: p["rule"] for p in json.loads(done.stdout)}
    assert rules["members.name"] == "name"
    assert rules["members.contact_name"] == "name"
    assert rules["venues.name"] == "keep"


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _forked(pid: int) -> list[int]:
    """The refresh's forked Python children (not its psql readers)."""
    return [c for c in _children(pid) if "python" in _command(c)]


def _command(pid: int) -> str:
    # A psql reader may end between being listed and being read.
    try:
        return Path(f"/proc/{pid}/comm").read_text(errors="replace")
    except OSError:
        return ""


def test_a_refresh_killed_with_sigkill_takes_its_forked_children_with_it(site):
    """kill -9 of the refresh alone: its children end, production's session closes, next runs."""
    site.sql(
        "INSERT INTO messages (member_id, to_phone, body) SELECT 1 + g % 300,"
        " '+14155551001', 'mail m' || g || '@mail.example now'"
        " FROM generate_series(1, 60000) g"
    )
    config = site.write_config()
    process = subprocess.Popen(
        [*VERGER, "-c", str(config), "staging", "refresh", "--snapshot"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    everyone: list[int] = []
    try:
        _wait_for_loaded_copy(site.folder / ".verger" / "state.db", process)
        deadline = time.monotonic() + 30
        while not _forked(process.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        forked = _forked(process.pid)
        everyone = forked + _children(process.pid)
        assert forked, "the refresh forked no hunting process"
        process.kill()
        process.wait()

        deadline = time.monotonic() + 5
        while any(_running(c) for c in everyone) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [c for c in everyone if _running(c)]
        idle = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND state LIKE 'idle in%%'"
        deadline = time.monotonic() + 5
        while site.sql(idle.replace("%s", f"'{site.production}'")) != [(0,)]:
            assert time.monotonic() < deadline, "a production session stayed open"
            time.sleep(0.05)
    finally:
        for pid in everyone:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
        if process.poll() is None:
            process.kill()
            process.wait()

    site.sql("DELETE FROM messages WHERE id > 400")
    done = verger(config, "--json", "staging", "refresh", "--snapshot")
    assert done.returncode == 0, done.stderr
    assert site.sql("SELECT count(*) FROM members", site.staging_url) == [(300,)]


HOLD = """
import fcntl, json, sys, time
handle = open(sys.argv[1], "a+")
fcntl.flock(handle, fcntl.LOCK_EX)
handle.truncate(0)
handle.write(json.dumps({"job": "staging refresh", "pid": int(sys.argv[2]), "since": 0}))
handle.flush()
print("held", flush=True)
time.sleep(600)
"""


def test_a_lock_left_held_after_its_refresh_died_is_taken_back(site):
    """A process holding the lock of a refresh whose pid is dead is ended; the refresh runs."""
    folder = site.folder / ".verger" / "staging" / site.staging
    folder.mkdir(parents=True)
    gone = subprocess.Popen(["true"])
    gone.wait()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder / "job.lock"), str(gone.pid)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"

        outcome = refresh(site.loaded(), site.store(), use_snapshot=True)

        assert holder.wait(timeout=5) == -signal.SIGKILL
        assert outcome.rows_masked > 300
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


@pytest.mark.parametrize(
    ("how", "code", "said"),
    [("ctrl-c", 130, "with Ctrl-C"), ("sigterm", 143, "by SIGTERM")],
)
def test_a_refresh_stopped_by_a_signal_says_staging_keeps_its_old_copy(
    site, how, code, said
):
    """Ctrl-C (SIGINT to the terminal's whole group) or SIGTERM (to verger alone,
    as kill or a service manager sends it) while masking: one line and a hint
    say the refresh was interrupted, staging still serves the old copy and the
    half-built copy was removed, which is so; the exit status is 130 or 143
    and the refresh is recorded as interrupted."""
    site.sql(
        "INSERT INTO messages (member_id, to_phone, body) SELECT 1 + g % 300,"
        " '+14155551001', 'call 415-555-1001 now ' || g FROM generate_series(1, 60000) g"
    )
    config = site.write_config()
    process = subprocess.Popen(
        [*VERGER, "-c", str(config), "staging", "refresh", "--snapshot"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _wait_for_loaded_copy(site.folder / ".verger" / "state.db", process)
        if how == "ctrl-c":
            os.killpg(process.pid, signal.SIGINT)
        else:
            process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()

    assert process.returncode == code, err
    lines = [line for line in err.splitlines() if "interrupted" in line]
    assert len(lines) == 1, err
    assert f"interrupted {said}: staging still serves the old copy" in lines[0]
    assert "was removed" in lines[0] and "Traceback" not in err
    assert "hint: run 'verger staging refresh' again when ready" in err
    assert site.sql("SELECT note FROM marker", site.staging_url) == [("old copy",)]
    assert not [n for n in site.databases() if "_refresh_" in n]
    shown = verger(config, "--json", "staging", "status")
    assert json.loads(shown.stdout)["refreshes"][0]["status"] == "interrupted"
