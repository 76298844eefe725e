"""The backup commands end to end: real PostgreSQL, real pgBackRest, the real CLI."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import pwd
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PASSPHRASE, Recorder, Source, backup_config, verger

pytestmark = pytest.mark.skipif(
    not Path("/usr/bin/pgbackrest").exists(), reason="pgBackRest is not installed"
)


def _ready(config: Path, source: Source) -> None:
    """Set up archiving and restart the source so that archive_mode applies."""
    verger(config, "backup", "setup", check=True)
    source.restart()
    verger(config, "backup", "setup", check=True)


def _switch_wal(source: Source) -> str:
    """Close the current WAL segment and wait until it is archived."""
    # A switch with nothing written since the last one closes no segment.
    source.sql("SELECT pg_logical_emit_message(false, 'verger', 'switch')")
    (name,) = source.sql("SELECT pg_walfile_name(pg_switch_wal())")[0]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        (last,) = source.sql("SELECT last_archived_wal FROM pg_stat_archiver")[0]
        if last is not None and str(last) >= str(name):
            return str(name)
        time.sleep(0.2)
    raise AssertionError(f"{name} was not archived within 30s")


def _listed(config: Path) -> list[dict[str, object]]:
    done = verger(config, "--json", "backup", "list", check=True)
    rows: list[dict[str, object]] = json.loads(done.stdout)["backups"]
    return rows


def _wait_for_running_backup(config: Path, timeout: float = 60.0) -> None:
    """Wait until the catalog holds a running backup, however loaded the machine."""
    state = config.parent / ".verger" / "state.db"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if state.exists():
            with (
                contextlib.closing(sqlite3.connect(state)) as db,
                contextlib.suppress(sqlite3.Error),
            ):
                found = db.execute(
                    "SELECT count(*) FROM backups WHERE status = 'running'"
                ).fetchone()
                if found and found[0]:
                    return
        time.sleep(0.1)
    raise AssertionError("no backup started running")


def test_backup_run_is_verified_by_a_restore(
    workdir: Path, source: Source, recorder: Recorder
) -> None:
    """'backup run' takes a full backup, restores it into a scratch cluster,
    finds its marker row, and lists it as verified; nothing is left running."""
    config = backup_config(workdir, source, recorder)
    _ready(config, source)
    done = verger(config, "--json", "backup", "run", check=True)
    result = json.loads(done.stdout)
    assert result["status"] == "verified", done.stderr
    assert "marker" in result["verify_detail"]
    rows = _listed(config)
    assert [row["status"] for row in rows] == ["verified"]
    assert not list((workdir / "scratch").iterdir())
    assert recorder.received == []


def test_restore_to_a_time_brings_back_only_what_was_committed_before_it(
    workdir: Path, source: Source
) -> None:
    """'restore --to-time' between two inserts brings back the first and not the
    second; the restored folder is left stopped and can be started."""
    config = backup_config(workdir, source)
    _ready(config, source)
    verger(config, "backup", "run", "--no-verify", check=True)
    source.sql("CREATE TABLE events (name text, at timestamptz DEFAULT now())")
    source.sql("INSERT INTO events (name) VALUES ('before')")
    time.sleep(1.5)
    (moment,) = source.sql("SELECT now()::text")[0]
    time.sleep(1.5)
    source.sql("INSERT INTO events (name) VALUES ('after')")
    _switch_wal(source)
    target = workdir / "restored"
    done = verger(
        config, "--json", "restore", "--to-time", str(moment), "--target", str(target)
    )
    assert done.returncode == 0, done.stderr
    assert (target / "PG_VERSION").exists()
    copy = Source(source.runner, workdir / "check", "copy")
    copy.data = target
    copy.start(timeout=60)
    try:
        names = copy.sql("SELECT name FROM events ORDER BY at")
    finally:
        copy.remove()
    assert names == [("before",)]


def test_restore_outside_the_range_names_the_range(
    workdir: Path, source: Source
) -> None:
    """A restore time before the first backup, or after the newest WAL, is refused
    with one line naming the range that can be restored, and writes nothing."""
    config = backup_config(workdir, source)
    _ready(config, source)
    verger(config, "backup", "run", "--no-verify", check=True)
    for moment in ("2001-01-01 00:00:00+00", "2099-01-01 00:00:00+00"):
        done = verger(config, "restore", "--to-time", moment)
        assert done.returncode == 6
        assert "can restore from" in done.stderr
        assert "Traceback" not in done.stderr
    assert not (workdir / "app" / ".verger" / "restores").exists()


def test_a_time_after_the_newest_commit_is_refused_before_any_restore(
    workdir: Path, source: Source
) -> None:
    """A time after the newest commit but before the newest segment was archived
    is refused up front with the range, whose end is that commit: recovery can
    stop only at a commit, so such a time would fail only after the restore."""
    config = backup_config(workdir, source)
    _ready(config, source)
    verger(config, "backup", "run", "--no-verify", check=True)
    source.sql("INSERT INTO churches (name) VALUES ('last commit')")
    (committed,) = source.sql("SELECT extract(epoch FROM clock_timestamp())")[0]
    _switch_wal(source)
    time.sleep(4)
    # A segment with no commit in it, archived seconds after the newest commit.
    _switch_wal(source)
    moment = dt.datetime.fromtimestamp(float(str(committed)) + 2, dt.UTC).isoformat()
    target = workdir / "copy"
    done = verger(config, "restore", "--to-time", str(moment), "--target", str(target))
    assert done.returncode == 6, done.stdout + done.stderr
    assert "can restore from" in done.stderr, done.stderr
    assert "could not reach the recovery target" not in done.stderr
    end = re.search(r"can restore from .* to (\S+ \S+) UTC", done.stderr)
    assert end, done.stderr
    newest = dt.datetime.fromisoformat(end[1] + "+00:00").timestamp()
    assert newest <= float(str(committed)) < newest + 2
    assert not target.exists()


def _newest_stop(config: Path) -> float:
    """The newest backup's stop time (its consistent point), as pgBackRest lists it."""
    conf = config.parent / ".verger" / "backup" / "production" / "pgbackrest.conf"
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    done = subprocess.run(
        [*as_postgres, "pgbackrest", f"--config={conf}", "info", "--output=json"],
        capture_output=True,
        text=True,
        check=True,
    )
    (stanza,) = json.loads(done.stdout)
    return float(stanza["backup"][-1]["timestamp"]["stop"])


def test_without_a_commit_since_the_newest_backup_the_range_reaches_its_end(
    workdir: Path, source: Source
) -> None:
    """When nothing was committed after the newest backup, the restorable range
    still ends no earlier than that backup's stop time, and a restore to that
    end succeeds with everything committed before it."""
    config = backup_config(workdir, source)
    _ready(config, source)
    verger(config, "backup", "run", "--no-verify", check=True)
    source.sql("INSERT INTO churches (name) VALUES ('between the backups')")
    verger(config, "backup", "run", "--no-verify", check=True)
    _switch_wal(source)
    stop = _newest_stop(config)

    refused = verger(config, "restore", "--to-time", "2099-01-01 00:00:00+00")
    assert refused.returncode == 6, refused.stderr
    end = re.search(r"can restore from .* to (\S+ \S+) UTC", refused.stderr)
    assert end, refused.stderr
    newest = dt.datetime.fromisoformat(end[1] + "+00:00").timestamp()
    assert newest >= stop, (newest, stop)

    target = workdir / "copy"
    done = verger(
        config, "restore", "--to-time", f"{end[1]}+00:00", "--target", str(target)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    copy = Source(source.runner, workdir / "check", "copy")
    copy.data = target
    copy.start(timeout=60)
    try:
        names = copy.sql("SELECT name FROM churches WHERE name = 'between the backups'")
    finally:
        copy.remove()
    assert names == [("between the backups",)]


def _backup_then_a_gap(config: Path, source: Source, workdir: Path) -> list[str]:
    """A backup, three archived segments after it, and the middle one deleted."""
    _ready(config, source)
    verger(config, "backup", "run", "--no-verify", check=True)
    names = []
    for _ in range(3):
        source.sql("INSERT INTO churches (name) VALUES ('gap test')")
        names.append(_switch_wal(source))
    archived = sorted((workdir / "repo" / "archive").rglob(f"{names[1]}-*"))
    assert archived, "the segment is in the repository"
    archived[0].unlink()
    return names


def test_a_deleted_wal_segment_is_reported_as_a_gap(
    workdir: Path, source: Source, recorder: Recorder
) -> None:
    """One WAL segment deleted from the middle of the archive is reported by
    'backup verify', 'backup list', 'verger check' and 'backup watch' (with an
    archiving_failed alert) as a gap with the time range it breaks, and
    '--latest' is refused, although the backup itself still restores."""
    config = backup_config(workdir, source, recorder)
    names = _backup_then_a_gap(config, source, workdir)
    done = verger(config, "--json", "backup", "verify")
    assert done.returncode == 6, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["verified"] is True
    assert [gap["first"] for gap in result["gaps"]] == [names[1]]
    assert "no restore can reach" in done.stderr

    listed = verger(config, "--json", "backup", "list", check=True)
    assert [gap["first"] for gap in json.loads(listed.stdout)["gaps"]] == [names[1]]
    assert "no restore can reach" in verger(config, "backup", "list").stderr
    check = verger(config, "--json", "check")
    found = [c for c in json.loads(check.stdout) if c["name"] == "backup.wal-gaps"]
    assert found and found[0]["status"] == "fail", check.stdout
    assert names[1] in found[0]["message"] and check.returncode == 1
    watched = verger(config, "--json", "backup", "watch")
    assert watched.returncode == 6
    assert "archiving_failed" in json.loads(watched.stdout)["sent"]
    assert "archiving_failed" in recorder.events()

    latest = verger(config, "restore", "--latest", "--target", str(workdir / "copy"))
    assert latest.returncode == 6, latest.stdout + latest.stderr
    assert "--latest cannot reach now" in latest.stderr
    assert "--to-time" in latest.stderr and "Traceback" not in latest.stderr
    assert not (workdir / "copy").exists()

    hinted = re.search(r"--to-time '([^']+)'", latest.stderr)
    assert hinted, latest.stderr
    done = verger(
        config, "restore", "--to-time", hinted[1], "--target", str(workdir / "copy")
    )
    assert done.returncode == 0, done.stdout + done.stderr


# A check's name: lowercase words joined by hyphens, its parts by dots.
CHECK_NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*(?:\.[a-z0-9]+(?:-[a-z0-9]+)*)*")


def test_backup_checks_are_named_like_every_other_check(
    workdir: Path, source: Source
) -> None:
    """'verger check' names every check, the backup ones included, with dotted
    lowercase words joined by hyphens (backup.wal-gaps, like health-path):
    no name holds a space."""
    config = backup_config(workdir, source)
    _ready(config, source)
    done = verger(config, "--json", "check")
    names = [check["name"] for check in json.loads(done.stdout)]
    assert [n for n in names if not CHECK_NAME.fullmatch(n)] == [], names
    assert {
        "backup.archiving",
        "backup.wal-waiting",
        "backup.newest-wal",
        "backup.wal-gaps",
        "backup.repository",
        "backup.verified",
    } <= set(names)


def test_an_unset_passphrase_variable_is_refused_not_used(
    workdir: Path, source: Source
) -> None:
    """passphrase: ${VAR} with VAR unset is refused, never used as the literal key."""
    config = backup_config(workdir, source)
    env = {k: v for k, v in os.environ.items() if k != "VERGER_BACKUP_PASSPHRASE"}
    done = subprocess.run(
        [sys.executable, "-m", "verger", "-c", str(config), "backup", "run"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 6, done.stdout + done.stderr
    assert "${VERGER_BACKUP_PASSPHRASE}, which is not set" in done.stderr
    assert "Traceback" not in done.stderr
    assert not list((workdir / "repo").rglob("*.manifest"))


@pytest.mark.parametrize(
    "secret", [f" {PASSPHRASE}", f"{PASSPHRASE}\t", f"{PASSPHRASE} "]
)
def test_a_passphrase_with_surrounding_space_is_refused(
    workdir: Path, source: Source, secret: str
) -> None:
    """A passphrase that begins or ends with whitespace is refused in one line with
    a hint before anything is written, as some readers of it would trim it."""
    config = backup_config(workdir, source)
    done = verger(config, "backup", "setup", VERGER_BACKUP_PASSPHRASE=secret)
    assert done.returncode == 6, done.stdout + done.stderr
    assert "backup.passphrase begins or ends with a space" in done.stderr
    assert "hint: remove it" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 2, done.stderr
    assert not (workdir / "repo").exists()


def test_wrong_passphrase_lists_the_catalog_and_refuses_the_rest(
    workdir: Path, source: Source
) -> None:
    """With a wrong passphrase 'backup list' shows the catalog with one warning
    line saying the passphrase does not open the repository and what to do
    (--json: repository_checked false, and why); 'backup verify' and 'backup
    run' refuse in one line. Neither passphrase appears in any output."""
    config = backup_config(workdir, source)
    _ready(config, source)
    verger(config, "backup", "run", "--no-verify", check=True)
    wrong = "not the right passphrase at all"
    outputs = []

    listed = verger(config, "--json", "backup", "list", VERGER_BACKUP_PASSPHRASE=wrong)
    outputs.append(listed)
    assert listed.returncode == 0, listed.stderr
    data = json.loads(listed.stdout)
    assert [row["status"] for row in data["backups"]] == ["done"]
    assert data["repository_checked"] is False
    assert "passphrase" in data["repository_problem"]
    human = verger(config, "backup", "list", VERGER_BACKUP_PASSPHRASE=wrong)
    outputs.append(human)
    assert human.returncode == 0 and "done" in human.stdout, human.stderr
    (warning,) = human.stderr.strip().splitlines()
    assert "passphrase" in warning and "the repository was not read" in warning
    assert "set backup.passphrase" in warning

    for args in (("backup", "verify"), ("backup", "run", "--no-verify")):
        refused = verger(config, *args, VERGER_BACKUP_PASSPHRASE=wrong)
        outputs.append(refused)
        assert refused.returncode == 6, refused.stderr
        assert "passphrase" in refused.stderr and "hint:" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 2, refused.stderr
    for done in outputs:
        assert "Traceback" not in done.stderr
        assert wrong not in done.stdout + done.stderr
        assert PASSPHRASE not in done.stdout + done.stderr


def test_a_pg_dump_repository_with_a_wrong_passphrase_lists_the_catalog(
    workdir: Path, source: Source
) -> None:
    """With the pg_dump engine too, a wrong passphrase makes 'backup list' show
    the catalog, unchecked, with the reason in --json, and 'backup verify'
    refuse."""
    config = backup_config(workdir, source, engine="pg_dump")
    verger(config, "backup", "setup", check=True)
    verger(config, "backup", "run", "--no-verify", check=True)
    wrong = "not the right passphrase at all"
    listed = verger(config, "--json", "backup", "list", VERGER_BACKUP_PASSPHRASE=wrong)
    assert listed.returncode == 0, listed.stderr
    data = json.loads(listed.stdout)
    assert [row["status"] for row in data["backups"]] == ["done"]
    assert data["repository_checked"] is False
    assert "passphrase is wrong" in data["repository_problem"]
    assert "the repository was not read" in listed.stderr
    refused = verger(config, "backup", "verify", VERGER_BACKUP_PASSPHRASE=wrong)
    assert refused.returncode == 6 and "passphrase" in refused.stderr


def _without_passphrase(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the verger CLI with no passphrase anywhere in its environment."""
    env = {k: v for k, v in os.environ.items() if k != "VERGER_BACKUP_PASSPHRASE"}
    return subprocess.run(
        [sys.executable, "-m", "verger", "-c", str(config), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_list_and_report_read_the_catalog_without_a_passphrase(
    workdir: Path, source: Source
) -> None:
    """With no passphrase set, 'backup list' and 'dr report' show the catalog,
    say the repository was not checked, and never read the repository (moved
    away, it is not reported missing); 'backup verify', which needs it, still
    refuses in one line with a hint."""
    config = backup_config(workdir, source)
    _ready(config, source)
    verger(config, "backup", "run", "--no-verify", check=True)
    (workdir / "repo").rename(workdir / "repo-away")

    listed = _without_passphrase(config, "--json", "backup", "list")
    assert listed.returncode == 0, listed.stderr
    data = json.loads(listed.stdout)
    assert [row["status"] for row in data["backups"]] == ["done"]
    assert data["repository_checked"] is False and data["gaps"] == []
    assert "the repository was not read" in listed.stderr
    assert "missing" not in listed.stderr and "Traceback" not in listed.stderr

    human = _without_passphrase(config, "backup", "list")
    assert human.returncode == 0 and "done" in human.stdout, human.stderr
    report = _without_passphrase(config, "--json", "dr", "report")
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout) == []

    refused = _without_passphrase(config, "backup", "verify")
    assert refused.returncode == 6
    assert "VERGER_BACKUP_PASSPHRASE}, which is not set" in refused.stderr
    assert "hint:" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 2, refused.stderr


_LEAVE_RUNNING = """
import sys
from pathlib import Path
from verger.state import open_store

store = open_store(".verger/state.db", Path(sys.argv[1]))
store.add_backup("production", "pgbackrest", "full", "test")
store.add_drill("production", "test", 600.0, 60.0)
store.close()
"""


def test_runs_whose_process_died_are_listed_as_interrupted(
    workdir: Path, source: Source
) -> None:
    """A backup and a drill left 'running' by a process that is gone are shown
    with the status interrupted (not failed, not running) by 'backup list' and
    'dr report', even without a passphrase."""
    config = backup_config(workdir, source)
    subprocess.run(
        [sys.executable, "-c", _LEAVE_RUNNING, str(config.parent)], check=True
    )

    listed = _without_passphrase(config, "--json", "backup", "list")
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)["backups"]
    assert row["status"] == "interrupted"
    assert "ended before it finished" in str(row["detail"])
    assert row["finished_at"] is None
    assert "Backup #1 is marked interrupted" in listed.stderr
    (drill,) = json.loads(_without_passphrase(config, "--json", "dr", "report").stdout)
    assert drill["status"] == "interrupted"
    human = _without_passphrase(config, "backup", "list")
    assert "interrupted" in human.stdout and "failed" not in human.stdout
    assert "unknown" in human.stdout


def test_a_killed_pg_dump_backup_took_an_unknown_time(
    workdir: Path, source: Source
) -> None:
    """A pg_dump 'backup run' killed with SIGKILL is marked interrupted by the
    next command with no end time, so its "took" is unknown rather than the
    time until someone looked."""
    source.sql(
        "CREATE TABLE bulk AS SELECT g, md5(g::text) AS h FROM generate_series(1, 600000) g"
    )
    config = backup_config(workdir, source, engine="pg_dump")
    verger(config, "backup", "setup", check=True)
    env = {**os.environ, "VERGER_BACKUP_PASSPHRASE": PASSPHRASE}
    process = subprocess.Popen(
        [sys.executable, "-m", "verger", "-c", str(config), "backup", "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    _wait_for_running_backup(config)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    time.sleep(2)
    (row,) = _listed(config)
    assert row["status"] == "interrupted", row
    assert row["finished_at"] is None
    human = verger(config, "backup", "list", check=True)
    (line,) = [line for line in human.stdout.splitlines() if "interrupted" in line]
    assert "unknown" in line, human.stdout


def _holding(folder: Path, secret: bytes) -> dict[str, tuple[int, int]]:
    """Files under ``folder`` whose bytes hold ``secret``: path to (mode, owner)."""
    found = {}
    for path in folder.rglob("*"):
        if path.is_symlink() or not path.is_file():
            continue
        with contextlib.suppress(OSError):
            if secret in path.read_bytes():
                info = path.stat()
                found[str(path.relative_to(folder))] = (
                    info.st_mode & 0o777,
                    info.st_uid,
                )
    return found


def test_the_passphrase_is_written_only_where_archive_command_needs_it(
    workdir: Path, source: Source
) -> None:
    """After setup, a backup, its verification and a restore, run with --debug,
    the passphrase is in no output, log, state or scratch file and in no
    PostgreSQL setting: only in pgbackrest.conf, which archive_command reads,
    mode 0600 and owned by the user that runs PostgreSQL."""
    config = backup_config(workdir, source)
    outputs = [verger(config, "--debug", "backup", "setup", check=True)]
    source.restart()
    outputs.append(verger(config, "--debug", "backup", "setup", check=True))
    outputs.append(verger(config, "--debug", "backup", "run", check=True))
    outputs.append(verger(config, "--debug", "--json", "backup", "verify", check=True))
    target = workdir / "restored"
    outputs.append(
        verger(config, "--debug", "restore", "--latest", "--target", str(target))
    )
    assert outputs[-1].returncode == 0, outputs[-1].stderr
    for done in outputs:
        assert PASSPHRASE not in done.stdout + done.stderr

    found = _holding(workdir, PASSPHRASE.encode())
    conf = "app/.verger/backup/production/pgbackrest.conf"
    owner = pwd.getpwnam("postgres").pw_uid if os.geteuid() == 0 else os.geteuid()
    assert found == {conf: (0o600, owner)}, found
    (setting,) = source.sql("SELECT string_agg(setting, ' ') FROM pg_settings")[0]
    assert PASSPHRASE not in str(setting)


def test_root_without_run_as_gets_a_hint(workdir: Path, source: Source) -> None:
    """Started as root with no backup.run_as, commands that need the repository
    refuse with a hint to set it, since PostgreSQL's programs refuse to run as
    root; 'backup list' and 'dr report' still show the catalog, list warning
    that the repository was not read (--json: repository_checked false)."""
    if os.geteuid() != 0:
        pytest.skip("only meaningful when the tests run as root")
    config = backup_config(workdir, source)
    _ready(config, source)
    verger(config, "backup", "run", "--no-verify", check=True)
    config.write_text(config.read_text().replace("\n  run_as: postgres", ""))

    listed = verger(config, "--json", "backup", "list")
    assert listed.returncode == 0, listed.stderr
    data = json.loads(listed.stdout)
    assert [row["status"] for row in data["backups"]] == ["done"]
    assert data["repository_checked"] is False and data["gaps"] == []
    assert "run_as" in data["repository_problem"]
    (warning,) = listed.stderr.strip().splitlines()
    assert "the repository was not read" in warning and "run_as" in warning
    report = verger(config, "--json", "dr", "report")
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout) == []

    for args in (("backup", "run"), ("backup", "verify")):
        done = verger(config, *args)
        assert done.returncode == 6
        assert "run_as" in done.stderr and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 2, done.stderr


def test_a_run_as_that_does_not_own_the_cluster_is_named_before_pgbackrest(
    workdir: Path, source: Source
) -> None:
    """With backup.run_as set to a user who does not own the cluster's data
    folder, 'backup setup', 'backup run', 'backup verify', 'restore' and
    'dr drill' refuse before pgBackRest runs, in one line naming the owner and
    run_as, with a hint to set run_as to the owner; setup writes nothing and
    no drill is recorded."""
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user")
    config = backup_config(workdir, source)
    good = config.read_text()
    config.write_text(good.replace("run_as: postgres", "run_as: nobody"))
    done = verger(config, "backup", "setup")
    assert done.returncode == 6, done.stderr
    message, hint = done.stderr.strip().splitlines()
    assert "owned by postgres" in message and "backup.run_as is nobody" in message
    assert "set backup.run_as: postgres" in hint
    assert not (workdir / "repo").exists()

    config.write_text(good)
    _ready(config, source)
    # The repository and verger's pgBackRest files now belong to nobody, as
    # if setup had been run with it; the cluster still belongs to postgres.
    state = config.parent / ".verger" / "backup"
    subprocess.run(["chown", "-R", "nobody", str(workdir / "repo"), str(state)])
    config.write_text(good.replace("run_as: postgres", "run_as: nobody"))
    for command in (
        ["backup", "run"],
        ["backup", "verify"],
        ["restore", "--latest", "--target", str(workdir / "copy")],
        ["dr", "drill", "--lead", "1s"],
    ):
        done = verger(config, *command)
        assert done.returncode == 6, (command, done.stderr)
        assert "Permission denied" not in done.stderr
        message, hint = done.stderr.strip().splitlines()[-2:]
        assert "owned by postgres" in message and "backup.run_as is nobody" in message
        assert "set backup.run_as: postgres" in hint
    assert json.loads(verger(config, "--json", "dr", "report").stdout) == []


def test_a_backup_killed_midway_is_never_listed_as_good(
    workdir: Path, source: Source
) -> None:
    """SIGKILL of 'backup run' in the middle leaves a catalog row that the next
    command marks interrupted; nothing from it is listed as done or verified."""
    source.sql(
        "CREATE TABLE bulk AS SELECT g, md5(g::text) AS h FROM generate_series(1, 600000) g"
    )
    config = backup_config(workdir, source)
    _ready(config, source)
    env = {**os.environ, "VERGER_BACKUP_PASSPHRASE": PASSPHRASE}
    process = subprocess.Popen(
        [sys.executable, "-m", "verger", "-c", str(config), "backup", "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    _wait_for_running_backup(config)
    # Past its start: the engine is copying files when the kill lands.
    time.sleep(1.0)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    time.sleep(1)
    rows = _listed(config)
    assert rows, "the interrupted backup is in the catalog"
    statuses = {row["status"] for row in rows}
    assert statuses <= {"interrupted", "done"}, rows
    assert "verified" not in statuses
    stopped = [row for row in rows if row["status"] == "interrupted"]
    assert stopped and "interrupted" in str(stopped[0]["detail"])


def test_drill_measures_rto_and_rpo_and_report_lists_it(
    workdir: Path, source: Source
) -> None:
    """'dr drill' restores the newest backup plus WAL and records RTO and RPO,
    the RTO ending when the copy accepted a write (recorded as writable_at, after
    the incident); 'dr report' lists the drill against the targets."""
    config = backup_config(workdir, source)
    _ready(config, source)
    verger(config, "backup", "run", "--no-verify", check=True)
    done = verger(config, "--json", "dr", "drill")
    result = json.loads(done.stdout)
    assert result["rto_seconds"] is not None and result["rto_seconds"] > 0
    assert result["rpo_seconds"] is not None and result["rpo_seconds"] >= 0
    report = json.loads(verger(config, "--json", "dr", "report", check=True).stdout)
    assert report[0]["id"] == result["id"]
    assert report[0]["status"] in ("passed", "missed")
    row = report[0]
    assert row["writable_at"] == result["writable_at"]
    # The restore starts after the incident and the copy is writable before the end.
    restore_began = row["writable_at"] - row["rto_seconds"]
    assert row["incident_at"] <= restore_began
    assert row["writable_at"] <= row["finished_at"]


def test_a_drill_never_reads_the_archive_for_the_newest_commit(
    workdir: Path, source: Source
) -> None:
    """'dr drill' restores the newest backup plus all WAL without first reading
    archived segments for the newest commit (no archive-get and pg_waldump for
    a range it does not use), and still measures; 'restore --to-time' does read
    it, for its range check."""
    config = backup_config(workdir, source)
    _ready(config, source)
    verger(config, "backup", "run", "--no-verify", check=True)
    _switch_wal(source)
    done = verger(config, "--debug", "--json", "dr", "drill")
    assert done.returncode in (0, 6), done.stderr
    result = json.loads(done.stdout)
    assert result["rto_seconds"] is not None and result["rpo_seconds"] is not None
    assert "Reading the newest commit" not in done.stderr
    refused = verger(config, "--debug", "restore", "--to-time", "2099-01-01 00:00+00")
    assert refused.returncode == 6
    assert "Reading the newest commit" in refused.stderr


def _drills(config: Path) -> list[tuple[str, str | None]]:
    """Every drill's status and detail in the catalog, oldest first."""
    state = config.parent / ".verger" / "state.db"
    if not state.exists():
        return []
    with (
        contextlib.closing(sqlite3.connect(state)) as db,
        contextlib.suppress(sqlite3.Error),
    ):
        return list(db.execute("SELECT status, detail FROM drills ORDER BY id"))
    return []


def test_a_drill_stopped_while_it_writes_markers_is_recorded_interrupted(
    workdir: Path, source: Source
) -> None:
    """SIGTERM during a drill's marker-writing lead, before the incident, ends the
    command with 143 and leaves the drill interrupted with the reason, not running."""
    config = backup_config(workdir, source)
    _ready(config, source)
    verger(config, "backup", "run", "--no-verify", check=True)
    env = {**os.environ, "VERGER_BACKUP_PASSPHRASE": PASSPHRASE}
    process = subprocess.Popen(
        [sys.executable, "-m", "verger", "-c", str(config), "dr", "drill"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _drills(config):
        time.sleep(0.1)
    assert _drills(config), "no drill started"
    # The lead is archive_timeout + 5 s: two seconds in, markers are being written.
    time.sleep(2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert "Traceback" not in err
    ((status, detail),) = _drills(config)
    assert status == "interrupted", (status, detail)
    assert detail and "SIGTERM" in detail


def test_failing_archive_command_fails_the_check_and_alerts_once(
    workdir: Path, source: Source, recorder: Recorder
) -> None:
    """When archive_command fails, 'verger check' fails the archiving check, and
    'backup watch' sends one archiving_failed alert, not one per run."""
    config = backup_config(workdir, source, recorder)
    _ready(config, source)
    source.sql("ALTER SYSTEM SET archive_command = '/bin/false'", database="postgres")
    source.sql("SELECT pg_reload_conf()", database="postgres")
    source.sql("INSERT INTO churches (name) VALUES ('unarchived')")
    source.sql("SELECT pg_switch_wal()")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        (failed,) = source.sql("SELECT failed_count FROM pg_stat_archiver")[0]
        if failed:
            break
        time.sleep(0.2)
    check = verger(config, "--json", "check")
    archiving = [c for c in json.loads(check.stdout) if c["name"] == "backup.archiving"]
    assert archiving and archiving[0]["status"] == "fail", check.stdout
    assert check.returncode == 1
    for _ in range(2):
        verger(config, "backup", "watch")
    assert recorder.events().count("archiving_failed") == 1


def test_a_corrupted_backup_file_is_not_verified_and_alerts(
    workdir: Path, source: Source, recorder: Recorder
) -> None:
    """A byte flipped in a file of the backup in the repository makes its
    verification fail: the backup is listed as unrestorable, never verified,
    and a verify_failed alert is sent."""
    source.sql("CREATE TABLE filler AS SELECT g FROM generate_series(1, 200000) g")
    config = backup_config(workdir, source, recorder)
    _ready(config, source)
    verger(config, "backup", "run", "--no-verify", check=True)
    files = sorted(
        (p for p in (workdir / "repo" / "backup").rglob("*") if p.is_file()),
        key=lambda p: p.stat().st_size,
    )
    biggest = files[-1]
    data = bytearray(biggest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    biggest.write_bytes(bytes(data))
    done = verger(config, "--json", "backup", "verify")
    assert done.returncode == 6
    assert json.loads(done.stdout)["verified"] is False
    assert [row["status"] for row in _listed(config)] == ["unrestorable"]
    assert "verify_failed" in recorder.events()
    assert not list((workdir / "scratch").iterdir())


def test_a_verify_killed_midway_leaves_nothing_verified(
    workdir: Path, source: Source
) -> None:
    """SIGKILL of 'backup verify' while it restores leaves the backup unverified
    (done), and the next command removes the scratch cluster left behind."""
    source.sql("CREATE TABLE filler AS SELECT g FROM generate_series(1, 600000) g")
    config = backup_config(workdir, source)
    _ready(config, source)
    verger(config, "backup", "run", "--no-verify", check=True)
    env = {**os.environ, "VERGER_BACKUP_PASSPHRASE": PASSPHRASE}
    process = subprocess.Popen(
        [sys.executable, "-m", "verger", "-c", str(config), "backup", "verify"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    scratch = workdir / "scratch"
    while time.monotonic() < deadline:
        if scratch.exists() and any(scratch.iterdir()):
            break
        time.sleep(0.05)
    time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert [row["status"] for row in _listed(config)] == ["done"]
    done = verger(config, "--json", "backup", "verify")
    assert json.loads(done.stdout)["verified"] is True, done.stderr
    assert not list(scratch.iterdir())


def _verify_then_signal(config: Path, scratch: Path, number: int) -> int:
    """Start 'backup verify 1', send ``number`` once it restores; its exit code."""
    env = {**os.environ, "VERGER_BACKUP_PASSPHRASE": PASSPHRASE}
    process = subprocess.Popen(
        [sys.executable, "-m", "verger", "-c", str(config), "backup", "verify", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if scratch.exists() and any(scratch.iterdir()):
            break
        time.sleep(0.05)
    time.sleep(0.5)
    process.send_signal(number)
    return process.wait(timeout=120)


def test_an_interrupted_verification_says_why_and_keeps_the_verified_status(
    workdir: Path, source: Source
) -> None:
    """SIGTERM, then SIGINT, during 'backup verify' of a verified backup leave
    it verified with its first verification time, and its verification record
    says it was interrupted, by which signal, and what the earlier one found."""
    source.sql("CREATE TABLE filler AS SELECT g FROM generate_series(1, 600000) g")
    config = backup_config(workdir, source)
    _ready(config, source)
    verger(config, "backup", "run", check=True)
    (before,) = _listed(config)
    assert before["status"] == "verified"
    scratch = workdir / "scratch"
    for number, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        assert _verify_then_signal(config, scratch, number) == code
        (after,) = _listed(config)
        assert after["status"] == "verified"
        assert after["verified_at"] == before["verified_at"]
        detail = str(after["verify_detail"])
        assert detail.startswith(f"Verification interrupted by {number.name}")
        assert detail.count("Verification interrupted") == 1, detail
        assert detail.endswith(str(before["verify_detail"])), detail


def test_retention_keeps_the_oldest_promised_point_restorable(
    workdir: Path, source: Source
) -> None:
    """With retention.full 1 and a 25 s window, retention removes the backups no
    promise needs but keeps the one the window's oldest point builds on, and a
    restore to that oldest promised point brings back what was committed then."""
    config = backup_config(
        workdir, source, extra="  retention: {full: 1, window: 25s}\n"
    )
    text = config.read_text().replace("  retention: {full: 1, window: 25s}\n", "")
    text = text.replace(
        "  archive_timeout: 2s\n",
        "  archive_timeout: 2s\n  retention: {full: 1, window: 25s}\n",
    )
    config.write_text(text)
    _ready(config, source)
    source.sql("CREATE TABLE events (name text)")
    verger(config, "backup", "run", "--no-verify", check=True)
    source.sql("INSERT INTO events VALUES ('first')")
    _switch_wal(source)
    verger(config, "backup", "run", "--no-verify", check=True)
    time.sleep(3)
    source.sql("INSERT INTO events VALUES ('second')")
    _switch_wal(source)
    verger(config, "backup", "run", "--no-verify", check=True)
    time.sleep(26)
    (promised,) = source.sql("SELECT (now() - interval '25 seconds')::text")[0]
    # Each run applies retention after it; this one finds the first two too old.
    verger(config, "backup", "run", "--no-verify", check=True)
    statuses = [row["status"] for row in _listed(config)]
    assert statuses == ["done", "done", "expired", "expired"], statuses
    done = verger(config, "--json", "backup", "expire", check=True)
    assert json.loads(done.stdout)["removed"] == []
    target = workdir / "oldest"
    restored = verger(
        config, "restore", "--to-time", str(promised), "--target", str(target)
    )
    assert restored.returncode == 0, restored.stderr
    copy = Source(source.runner, workdir / "check", "copy")
    copy.data = target
    copy.start(timeout=60)
    try:
        names = copy.sql("SELECT name FROM events ORDER BY name")
    finally:
        copy.remove()
    assert ("first",) in names


def test_markers_count_as_kept_only_once_their_wal_is_archived(
    workdir: Path, source: Source
) -> None:
    """A drill's RPO takes only markers whose WAL was archived at the incident,
    not ones a later archive would bring back."""
    from verger.backup.markers import MarkerWriter, archived_until

    config = backup_config(workdir, source)
    _ready(config, source)
    writer = MarkerWriter(source.url("app"), "drill-test", interval=0.05)
    writer.start()
    time.sleep(0.5)
    _switch_wal(source)
    switched = time.time()
    time.sleep(0.5)
    writer.stop()

    position = archived_until(source.url("app"))
    assert position is not None
    durable = writer.newest_before(position)
    assert durable is not None and writer.newest is not None
    assert durable <= switched < writer.newest


def test_setup_never_takes_over_archiving_that_feeds_another_repository(
    workdir: Path, source: Source
) -> None:
    """A second config's setup on the same database is refused, and the first
    config's check keeps passing; the second's check says its WAL goes elsewhere."""
    first = backup_config(workdir, source)
    _ready(first, source)
    other = workdir / "other"
    other.mkdir()
    other.chmod(0o755)
    second = backup_config(other, source, repository=f"{{path: {other / 'repo'}}}")

    done = verger(second, "backup", "setup")
    assert done.returncode == 6, done.stdout + done.stderr
    assert "already archives WAL with another command" in done.stderr
    assert "ALTER SYSTEM RESET archive_command" in done.stderr

    checks = {
        c["name"]: c for c in json.loads(verger(second, "--json", "check").stdout)
    }
    assert checks["backup.archiving"]["status"] == "fail"
    assert "does not push to this config's repository" in str(
        checks["backup.archiving"]["message"]
    )
    mine = {c["name"]: c for c in json.loads(verger(first, "--json", "check").stdout)}
    assert mine["backup.archiving"]["status"] == "ok", mine["backup.archiving"]


def test_a_missed_drill_alerts(
    workdir: Path, source: Source, recorder: Recorder
) -> None:
    """A drill that misses its RTO target is recorded as missed, exits 6 and
    sends a drill_missed alert."""
    config = backup_config(workdir, source, recorder)
    config.write_text(config.read_text().replace("rto: 10m", "rto: 1ms"))
    _ready(config, source)
    verger(config, "backup", "run", "--no-verify", check=True)
    done = verger(config, "--json", "dr", "drill", "--lead", "1s")
    assert done.returncode == 6
    assert json.loads(done.stdout)["passed"] is False
    assert "drill_missed" in recorder.events()
    report = json.loads(verger(config, "--json", "dr", "report", check=True).stdout)
    assert report[0]["status"] == "missed"


def test_pg_dump_engine_backs_up_and_verifies_through_the_cli(
    workdir: Path, source: Source
) -> None:
    """With engine pg_dump, 'backup run' verifies by restore and table checksums,
    and a point-in-time restore is refused with a sentence saying why."""
    config = backup_config(workdir, source, engine="pg_dump")
    verger(config, "backup", "setup", check=True)
    done = verger(config, "--json", "backup", "run", check=True)
    result = json.loads(done.stdout)
    assert result["status"] == "verified"
    assert "tables match" in result["verify_detail"]
    refused = verger(config, "restore", "--to-time", "2026-01-01 00:00:00+00")
    assert refused.returncode == 6
    assert "point in time" in refused.stderr


def test_a_drill_with_archiving_broken_counts_rpo_from_the_backup_not_the_lead(
    workdir: Path, source: Source
) -> None:
    """When archiving fails, none of the drill's markers come back, and the RPO is
    the incident minus the newest data the copy holds, longer than the lead, and
    the drill says the copy holds none of its markers and misses its target."""
    config = backup_config(workdir, source)
    config.write_text(config.read_text().replace("rpo: 1m", "rpo: 5s"))
    _ready(config, source)
    verger(config, "backup", "run", "--no-verify", check=True)
    finished = float(_listed(config)[0]["finished_at"])  # type: ignore[arg-type]
    source.sql("ALTER SYSTEM SET archive_command = '/bin/false'", database="postgres")
    source.sql("SELECT pg_reload_conf()", database="postgres")
    time.sleep(6)
    done = verger(config, "--json", "dr", "drill", "--lead", "2s")
    assert done.returncode == 6, done.stdout + done.stderr
    result = json.loads(done.stdout)
    report = json.loads(verger(config, "--json", "dr", "report", check=True).stdout)
    assert result["rpo_seconds"] > 8, result
    # pgBackRest records the backup's stop in whole seconds.
    assert report[0]["incident_at"] - result["rpo_seconds"] >= finished - 2
    assert "none of this drill's markers" in result["detail"]
    assert result["passed"] is False and report[0]["status"] == "missed"


def test_a_pg_dump_drill_counts_rpo_from_the_dump_and_says_why(
    workdir: Path, source: Source
) -> None:
    """A pg_dump drill's RPO is the age of the dump it restored, not the lead,
    and both the drill and 'dr report' say pg_dump has no point-in-time recovery."""
    config = backup_config(workdir, source, engine="pg_dump")
    verger(config, "backup", "setup", check=True)
    verger(config, "backup", "run", "--no-verify", check=True)
    time.sleep(5)
    done = verger(config, "--json", "dr", "drill", "--lead", "1s")
    result = json.loads(done.stdout)
    assert result["rpo_seconds"] > 6, result
    assert "no point-in-time recovery" in result["detail"]
    human = verger(config, "dr", "report", check=True)
    assert (
        "no point-in-time" in human.stdout.replace("\n", " ")
        or "no point" in human.stdout
    )
    drill = verger(config, "dr", "drill", "--lead", "1s")
    assert "pg_dump has no point-in-time recovery" in drill.stdout + drill.stderr


def _flip_a_byte(workdir: Path) -> None:
    """Damage the biggest file of the backups in the repository."""
    files = sorted(
        (p for p in (workdir / "repo" / "backup").rglob("*") if p.is_file()),
        key=lambda p: p.stat().st_size,
    )
    data = bytearray(files[-1].read_bytes())
    data[len(data) // 2] ^= 0xFF
    files[-1].write_bytes(bytes(data))


def test_a_verify_that_cannot_read_the_repository_condemns_nothing(
    workdir: Path, source: Source
) -> None:
    """A verification that fails because the repository cannot be read leaves
    the backup as it was, with the whole reason in its detail."""
    config = backup_config(workdir, source)
    _ready(config, source)
    verger(config, "backup", "run", "--no-verify", check=True)
    (manifest,) = (workdir / "repo" / "backup").rglob("pg_data")
    backups = manifest.parent
    backups.chmod(0o000)
    try:
        done = verger(config, "--json", "backup", "verify")
    finally:
        backups.chmod(0o750)
    assert done.returncode == 6, done.stdout + done.stderr
    assert json.loads(done.stdout)["verified"] is False
    row = _listed(config)[0]
    assert row["status"] == "done"
    detail = str(row["verify_detail"])
    assert "could not be verified" in detail and ":." not in detail, detail
    assert "ermission denied" in detail or "unable to" in detail, detail


def test_a_restore_that_finds_a_damaged_backup_marks_it_unrestorable(
    workdir: Path, source: Source
) -> None:
    """When 'restore --latest' fails on the backup's content, the backup is
    marked unrestorable, so the next restore does not choose it again."""
    source.sql("CREATE TABLE filler AS SELECT g FROM generate_series(1, 200000) g")
    config = backup_config(workdir, source)
    _ready(config, source)
    verger(config, "backup", "run", "--no-verify", check=True)
    _flip_a_byte(workdir)
    done = verger(config, "restore", "--latest", "--target", str(workdir / "copy"))
    assert done.returncode == 6, done.stdout + done.stderr
    assert [row["status"] for row in _listed(config)] == ["unrestorable"]
    again = verger(config, "restore", "--latest", "--target", str(workdir / "copy2"))
    assert again.returncode == 6
    assert "proved broken" in again.stderr, again.stderr


def test_restore_latest_starts_from_the_newest_verified_backup_and_says_so(
    workdir: Path, source: Source
) -> None:
    """'restore --latest' starts from the newest verified backup and names it,
    replaying WAL past a newer unverified one; '--backup ID' starts from the one
    named and warns that no restore has proved it."""
    config = backup_config(workdir, source)
    _ready(config, source)
    verger(config, "backup", "run", check=True)
    verger(config, "backup", "run", "--no-verify", check=True)
    newer, older = _listed(config)
    assert (older["status"], newer["status"]) == ("verified", "done")
    source.sql("INSERT INTO churches (name) VALUES ('after both')")
    _switch_wal(source)
    done = verger(
        config, "--json", "restore", "--latest", "--target", str(workdir / "a")
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["backup"] == older["label"]
    assert f"verified backup #{older['id']}" in done.stderr
    named = verger(
        config,
        "--json",
        "restore",
        "--latest",
        "--backup",
        str(newer["id"]),
        "--target",
        str(workdir / "b"),
    )
    assert named.returncode == 0, named.stdout + named.stderr
    assert json.loads(named.stdout)["backup"] == newer["label"]
    assert "no restore has proved" in named.stderr


def test_a_refused_target_is_refused_before_the_backup_is_named(
    workdir: Path, source: Source
) -> None:
    """'restore' into a folder that is not empty, one run_as cannot reach, or
    the database the backups come from, is refused in one line before it says
    which backup it would restore from: nothing else is printed, and the
    folder is untouched."""
    config = backup_config(workdir, source)
    _ready(config, source)
    verger(config, "backup", "run", check=True)
    full = workdir / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    closed = workdir / "closed"
    closed.mkdir(mode=0o700)
    refusals = [
        (str(full), "is not empty"),
        (source.url("app"), "the database the backups come from"),
    ]
    if os.geteuid() == 0:
        refusals.append((str(closed / "copy"), "postgres cannot enter"))
    for target, why in refusals:
        done = verger(config, "restore", "--latest", "--target", target)
        assert done.returncode == 6, done.stderr
        assert done.stdout == ""
        message, hint = done.stderr.strip().splitlines()
        assert why in message and hint.startswith("hint:"), done.stderr
    assert [p.name for p in full.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize(
    "args",
    [
        ("--to-time", "yesterday"),
        ("--latest", "--to-time", "2026-01-01 00:00:00+00"),
        (),
    ],
)
def test_restore_command_line_mistakes_exit_2(
    workdir: Path, source: Source, args: tuple[str, ...]
) -> None:
    """A restore whose command line is wrong exits 2 with one line, touching nothing."""
    config = backup_config(workdir, source)
    done = verger(config, "restore", *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "hint:" in done.stderr


def test_verify_with_nothing_left_to_verify_exits_0(
    workdir: Path, source: Source
) -> None:
    """'backup verify' once every backup is verified says so in one line, exit 0."""
    config = backup_config(workdir, source, engine="pg_dump")
    verger(config, "backup", "setup", check=True)
    verger(config, "backup", "run", check=True)
    done = verger(config, "backup", "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "nothing to verify" in done.stdout


def test_a_missing_repository_is_named_and_never_answered_with_setup(
    workdir: Path, source: Source
) -> None:
    """With the repository folder gone, 'backup list' warns that it is missing or
    not mounted and still shows the catalog, its backup as missing, other
    commands say the same without suggesting setup ('dr drill' records no
    drill), and nothing in the catalog is expired meanwhile."""
    config = backup_config(workdir, source)
    _ready(config, source)
    verger(config, "backup", "run", "--no-verify", check=True)
    repo = workdir / "repo"
    repo.rename(workdir / "elsewhere")
    repo.mkdir()
    try:
        listed = verger(config, "backup", "list")
        assert listed.returncode == 0, listed.stdout + listed.stderr
        assert "missing or not mounted" in listed.stderr
        assert "missing" in listed.stdout and "done" not in listed.stdout
        for command in (["backup", "verify"], ["dr", "drill", "--lead", "1s"]):
            refused = verger(config, *command)
            assert refused.returncode == 6, refused.stderr
            assert "missing or not mounted" in refused.stderr
            assert "setup" not in refused.stderr
        # A drill refused before it began is no drill: the report stays empty.
        assert json.loads(verger(config, "--json", "dr", "report").stdout) == []
    finally:
        repo.rmdir()
        (workdir / "elsewhere").rename(repo)
    assert [row["status"] for row in _listed(config)] == ["done"]


def _interrupt_after(delay: float) -> tuple[int, str, str]:
    """Start 'verger --version', send SIGINT after ``delay`` seconds.

    Returns the exit code, stdout and stderr.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "verger", "--version"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    return process.returncode, out, err


@pytest.mark.parametrize("delay", [0.08, 0.15, 0.2])
def test_ctrl_c_while_the_command_loads_is_one_line_and_130(delay: float) -> None:
    """SIGINT while verger's modules are still loading ends the command with
    exit 130 and one line, never a traceback."""
    for _ in range(5):
        code, out, err = _interrupt_after(delay)
        # On a loaded machine the signal may land in Python's own start-up
        # (site, runpy), before any of verger's code runs: try again.
        if "<frozen site>" not in err and "<frozen runpy>" not in err:
            break
    assert "Traceback" not in err, err
    if code == -signal.SIGINT:
        # The command had finished: the signal landed while Python was shutting
        # down, after it put back the default action, so the process ended by
        # SIGINT (130 in a shell) with its output whole and nothing more said.
        assert out.startswith("verger, version") and err == "", (out, err)
        return
    assert code in (0, 130), (code, err)
    if code == 130:
        assert len(err.strip().splitlines()) == 1, err


def test_a_backup_command_loads_only_the_backup_commands() -> None:
    """``verger backup`` loads its own command module and neither the agent client,
    the other command groups nor croniter (which runs ``file`` when imported), while
    every command the top-level group names still resolves and is listed."""
    script = """
import sys
from verger.cli.main import Commands, cli
cli.main(args=["backup", "--help"], standalone_mode=False)
import verger.backup  # what every backup command imports when it runs
heavy = ["verger.agent.client", "verger.cli.monitor", "verger.cli.alerting",
         "verger.cli.staging", "verger.cli.dashboard", "verger.cli.jobs", "croniter"]
print(",".join(name for name in heavy if name in sys.modules))
missing = [name for name in Commands.lazy if cli.get_command(None, name) is None]
print(",".join(missing))
print(sorted(cli.commands) == cli.list_commands(None))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    loaded, missing, listed = done.stdout.splitlines()[-3:]
    assert loaded == ""
    assert missing == ""
    assert listed == "True"


def test_a_gap_a_later_full_backup_healed_only_narrows_the_window(
    workdir: Path, source: Source
) -> None:
    """Once a full backup is taken after a deleted WAL segment, 'verger check'
    warns of the gap instead of failing, 'backup verify' of the older backup
    passes with the gap as a warning, and '--latest' restores again."""
    config = backup_config(workdir, source)
    names = _backup_then_a_gap(config, source, workdir)
    verger(config, "backup", "run", "--type", "full", "--no-verify", check=True)

    check = verger(config, "--json", "check")
    found = [c for c in json.loads(check.stdout) if c["name"] == "backup.wal-gaps"]
    assert [c["status"] for c in found] == ["warn"], check.stdout
    assert "a backup taken since restores past it" in found[0]["hint"]
    done = verger(config, "--json", "backup", "verify", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["verified"] is True
    assert [gap["first"] for gap in result["gaps"]] == [names[1]]
    assert "no restore can reach" in done.stderr
    latest = verger(config, "restore", "--latest", "--target", str(workdir / "copy"))
    assert latest.returncode == 0, latest.stdout + latest.stderr


@pytest.mark.parametrize("lead", ["0s", "2h"])
def test_a_drill_lead_outside_a_second_to_an_hour_is_refused(
    workdir: Path, source: Source, lead: str
) -> None:
    """'dr drill --lead' of no time or of hours is refused in one line with a
    hint, exit 2, before anything is written or recorded."""
    config = backup_config(workdir, source)
    done = verger(config, "dr", "drill", "--lead", lead)
    assert done.returncode == 2, done.stderr
    message, hint = done.stderr.strip().splitlines()
    assert f"--lead {lead} is outside 1s to 1h" in message
    assert "archive_timeout" in hint
    assert json.loads(verger(config, "--json", "dr", "report").stdout) == []
