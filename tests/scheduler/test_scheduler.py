"""The scheduler: when jobs are due, how they run, and what is recorded about them.

Ticks are driven with chosen times, so that six-hourly cadences are tested
in seconds; the jobs themselves are real ``verger`` commands run as
processes (``check`` where any cheap command will do).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from verger.backup import exclusive, make_context
from verger.config import Loaded, load_config
from verger.deploy import process
from verger.scheduler import Job, Scheduler, jobs_for
from verger.state import Store, open_store

VERGER = [sys.executable, "-m", "verger"]
SIX_HOURLY = "0 */6 * * *"
# The agent of these tests starts on a Monday at 10:17 UTC.
T0 = dt.datetime(2026, 5, 4, 10, 17, tzinfo=dt.UTC).timestamp()
NOON = dt.datetime(2026, 5, 4, 12, 0, tzinfo=dt.UTC).timestamp()
CHECK = Job("probe", SIX_HOURLY, ("check",))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config_text(port: int, backup: str = "") -> str:
    """A small verger.yml: one environment, and a backup section when given."""
    return (
        textwrap.dedent(
            f"""\
            app: testapp
            start: {sys.executable} app.py
            environments:
              staging:
                listen: 127.0.0.1:{port}
                router: builtin
            """
        )
        + backup
    )


def backup_section(schedule: str) -> str:
    """A backup section for a database that does not exist: its backups fail fast."""
    run_as = "  run_as: postgres\n" if os.geteuid() == 0 else ""
    return (
        "databases:\n"
        "  production: postgresql://postgres@127.0.0.1:5432/verger_no_such_db\n"
        "backup:\n"
        "  passphrase: a-long-enough-test-passphrase\n"
        f"{run_as}"
        f"  schedule: {schedule}\n"
    )


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """A folder with a verger.yml; processes left running in it are killed after."""
    (tmp_path / "verger.yml").write_text(config_text(free_port()))
    yield tmp_path
    _kill_leftovers(tmp_path)


@pytest.fixture
def store(project: Path) -> Iterator[Store]:
    opened = open_store(".verger/state.db", project)
    yield opened
    opened.close()


@pytest.fixture
def scheduler_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="verger.scheduler")
    return caplog


def _kill_leftovers(root: Path) -> None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd.startswith(str(root)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


def loaded(project: Path) -> Loaded:
    return load_config(project / "verger.yml")


def tick(scheduler: Scheduler, now: float) -> None:
    asyncio.run(scheduler.tick(now))


def wait_until_ended(scheduler: Scheduler, timeout: float = 30.0) -> None:
    """Wait for the running job's process to end (without ticking)."""
    assert scheduler.current is not None
    deadline = time.monotonic() + timeout
    while process.alive(scheduler.current.handle):
        assert time.monotonic() < deadline, "the job did not end in time"
        time.sleep(0.05)


def run_to_end(scheduler: Scheduler, now: float) -> None:
    """Let the running job end, and tick once at ``now`` to record it."""
    wait_until_ended(scheduler)
    tick(scheduler, now)


def headers(project: Path, name: str) -> list[str]:
    text = (project / ".verger" / "logs" / "jobs" / f"{name}.log").read_text()
    return [line for line in text.splitlines() if f"{name} starts:" in line]


# -- which jobs, and when ---------------------------------------------------


def test_jobs_come_from_the_backup_schedule(project: Path) -> None:
    """backup.schedule gives one job per cadence set; verify: false adds --no-verify."""
    assert jobs_for(loaded(project).config) == []

    (project / "verger.yml").write_text(
        config_text(
            free_port(),
            backup_section(
                '{incr: "15 * * * *", verify: false, drill: null, watch: null}'
            ),
        )
    )
    jobs = jobs_for(loaded(project).config)
    assert [(job.name, job.cron, job.argv) for job in jobs] == [
        ("backup-full", SIX_HOURLY, ("backup", "run", "--type", "full", "--no-verify")),
        (
            "backup-incr",
            "15 * * * *",
            ("backup", "run", "--type", "incr", "--no-verify"),
        ),
    ]

    (project / "verger.yml").write_text(
        config_text(free_port(), backup_section('{diff: "30 1 * * *"}'))
    )
    assert [job.command() for job in jobs_for(loaded(project).config)] == [
        "verger backup run --type full",
        "verger backup run --type diff",
        "verger dr drill",
        "verger backup watch",
    ]


def test_a_new_agent_does_not_start_jobs_at_once(project: Path, store: Store) -> None:
    """A job that never ran is first due at its first slot after the agent started."""
    scheduler = Scheduler(loaded(project), store, jobs=[CHECK], started_at=T0)

    assert scheduler.due(T0) == []
    assert scheduler.due(NOON - 1) == []
    assert scheduler.due(NOON) == [(NOON, CHECK)]
    assert scheduler.due(NOON + 3 * 3600) == [(NOON, CHECK)]


def test_missed_runs_are_made_up_once(
    project: Path, store: Store, scheduler_log: pytest.LogCaptureFixture
) -> None:
    """Slots missed while no agent ran make the job run once on start, not once per slot."""
    # The last run was 26 hours before this agent started: four slots passed since.
    store.start_job("probe", 0, at=T0 - 26 * 3600)
    store.finish_job("probe", "ok", "", at=T0 - 26 * 3600 + 60)
    scheduler = Scheduler(loaded(project), store, jobs=[CHECK], started_at=T0)

    tick(scheduler, T0)
    assert scheduler.current is not None
    assert "once now for the 4 runs missed while no agent was running" in (
        scheduler_log.text
    )
    run_to_end(scheduler, T0 + 2)
    for later in (T0 + 3, T0 + 60, NOON - 1):
        tick(scheduler, later)
        assert scheduler.current is None

    assert len(headers(project, "probe")) == 1
    row = store.job("probe")
    assert row is not None and row.last_started == T0 and row.last_status == "ok"
    assert scheduler.due(NOON) == [(NOON, CHECK)]


# -- running jobs -------------------------------------------------------------


def test_a_job_runs_as_a_process_and_its_end_is_recorded(
    project: Path, store: Store, scheduler_log: pytest.LogCaptureFixture
) -> None:
    """A due job runs as a real verger process; its status, pid and output are recorded."""
    scheduler = Scheduler(loaded(project), store, jobs=[CHECK], started_at=T0)

    tick(scheduler, NOON)
    assert scheduler.current is not None
    running = store.job("probe")
    assert running is not None and running.last_status == "running"
    assert running.pid == scheduler.current.handle.pid and running.last_started == NOON
    assert "Starting the scheduled probe (due at 12:00 UTC)." in scheduler_log.text

    run_to_end(scheduler, NOON + 5)
    row = store.job("probe")
    assert row is not None
    assert (row.last_status, row.pid, row.last_finished) == ("ok", None, NOON + 5)
    log_text = (project / ".verger" / "logs" / "jobs" / "probe.log").read_text()
    assert "UTC: probe starts: verger check" in log_text
    assert '"name": "config"' in log_text
    assert log_text.rstrip().endswith("--- probe exited with code 0")
    assert "The scheduled probe finished: ok. Next run at 18:00 UTC." in (
        scheduler_log.text
    )


def test_a_failing_job_records_the_commands_error(
    project: Path, store: Store, scheduler_log: pytest.LogCaptureFixture
) -> None:
    """A job whose command fails is recorded as failed, with the command's error line."""
    job = Job("backup-full", SIX_HOURLY, ("backup", "run", "--type", "full"))
    scheduler = Scheduler(loaded(project), store, jobs=[job], started_at=T0)

    tick(scheduler, NOON)
    run_to_end(scheduler, NOON + 5)

    row = store.job("backup-full")
    assert row is not None and row.last_status == "failed"
    assert row.last_detail == "verger.yml has no backup: section"
    assert (
        "The scheduled backup-full failed: verger.yml has no backup: section."
        in scheduler_log.text
    )


def test_a_backup_finding_the_database_busy_is_recorded_busy(
    project: Path, store: Store
) -> None:
    """A scheduled backup that finds another backup job holding the database ends busy."""
    (project / "verger.yml").write_text(
        config_text(free_port(), backup_section("{drill: null, watch: null}"))
    )
    config = loaded(project)
    scheduler = Scheduler(config, store, started_at=T0)
    assert [job.name for job in scheduler.jobs] == ["backup-full"]

    with exclusive(make_context(config).state, "backup"):
        tick(scheduler, NOON)
        wait_until_ended(scheduler)
    tick(scheduler, NOON + 5)

    row = store.job("backup-full")
    assert row is not None and row.last_status == "busy"
    assert row.last_detail.startswith("another backup is running for this database")


def test_two_due_jobs_run_one_after_the_other(
    project: Path, store: Store, scheduler_log: pytest.LogCaptureFixture
) -> None:
    """Two jobs due at once never run side by side: the second waits, says so, then runs."""
    first, second = CHECK, Job("probe-2", SIX_HOURLY, ("check",))
    scheduler = Scheduler(loaded(project), store, jobs=[first, second], started_at=T0)

    tick(scheduler, NOON)
    assert scheduler.current is not None and scheduler.current.name == "probe"
    first_process = scheduler.current.handle
    tick(scheduler, NOON + 1)
    assert process.alive(first_process), "the first job ended before the second tick"
    assert store.job("probe-2") is None
    assert (
        "The scheduled probe-2 is due (12:00 UTC) but probe is running; it starts "
        "when that one finishes." in scheduler_log.text
    )

    run_to_end(scheduler, NOON + 30)
    assert not process.alive(first_process)
    assert scheduler.current is not None and scheduler.current.name == "probe-2"
    done, started = store.job("probe"), store.job("probe-2")
    assert done is not None and done.last_status == "ok"
    assert started is not None and started.last_started == NOON + 30
    assert "it waited 1 minute for another job to finish" in scheduler_log.text

    run_to_end(scheduler, NOON + 60)
    finished = store.job("probe-2")
    assert finished is not None and finished.last_status == "ok"


# -- after an agent stops -----------------------------------------------------


def _dead_pid() -> int:
    child = subprocess.Popen(["/bin/sh", "-c", "exit 0"])
    child.wait()
    return child.pid


def test_a_job_whose_process_died_is_marked_interrupted(
    project: Path, store: Store, scheduler_log: pytest.LogCaptureFixture
) -> None:
    """On start, a job recorded as running whose process died unfinished is interrupted."""
    logs = project / ".verger" / "logs" / "jobs"
    logs.mkdir(parents=True)
    (logs / "probe.log").write_text(
        "--- 2026-05-04 09:00:00 UTC: probe starts: verger check\nhalf a line"
    )
    # The other one finished while no agent ran: its log says how.
    (logs / "probe-2.log").write_text(
        "--- 2026-05-04 09:00:00 UTC: probe-2 starts: verger check\n"
        '{"error": "the disk is full", "hint": "", "kind": "VergerError"}\n'
        "--- probe-2 exited with code 1\n"
    )
    store.start_job("probe", _dead_pid(), at=T0 - 3600)
    store.start_job("probe-2", _dead_pid(), at=T0 - 3600)
    jobs = [CHECK, Job("probe-2", SIX_HOURLY, ("check",))]
    scheduler = Scheduler(loaded(project), store, jobs=jobs, started_at=T0)

    tick(scheduler, T0)

    interrupted, ended = store.job("probe"), store.job("probe-2")
    assert interrupted is not None and interrupted.last_status == "interrupted"
    assert (
        interrupted.pid is None and "when the agent stopped" in interrupted.last_detail
    )
    assert ended is not None
    assert (ended.last_status, ended.last_detail) == ("failed", "the disk is full")
    assert "The scheduled probe (pid" in scheduler_log.text
    assert "was interrupted" in scheduler_log.text
    assert scheduler.current is None


EARLIER_AGENT = """
import asyncio, sys
from verger.config import load_config
from verger.scheduler import Job, Scheduler
from verger.state import open_store

loaded = load_config(sys.argv[1])
store = open_store(".verger/state.db", loaded.root)
job = Job("probe", "0 */6 * * *", ("check",))
scheduler = Scheduler(loaded, store, jobs=[job], started_at=float(sys.argv[2]))
asyncio.run(scheduler.tick(float(sys.argv[3])))
"""
EARLIER = [sys.executable, "-c", EARLIER_AGENT]


def test_a_job_left_running_is_adopted_not_started_again(
    project: Path, store: Store, scheduler_log: pytest.LogCaptureFixture
) -> None:
    """A job an earlier agent left running is adopted, and its end read from its log."""
    subprocess.run(
        [*EARLIER, str(project / "verger.yml"), str(T0), str(NOON)],
        check=True,
        cwd=project,
    )
    left = store.job("probe")
    assert left is not None and left.last_status == "running"

    scheduler = Scheduler(loaded(project), store, jobs=[CHECK], started_at=NOON + 1)
    tick(scheduler, NOON + 1)
    assert scheduler.current is not None and scheduler.current.handle.pid == left.pid
    assert "started by an earlier agent is still running" in scheduler_log.text

    run_to_end(scheduler, NOON + 5)
    row = store.job("probe")
    assert row is not None and row.last_status == "ok" and row.last_started == NOON
    assert len(headers(project, "probe")) == 1


# -- in the agent -------------------------------------------------------------


def verger(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VERGER, "-c", str(project / "verger.yml"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=project,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def jobs_listing(project: Path) -> dict[str, dict[str, Any]]:
    done = verger(project, "--json", "jobs")
    assert done.returncode == 0, done.stderr
    return {item["name"]: item for item in json.loads(done.stdout)}


def test_the_agent_schedules_the_backup_jobs(project: Path) -> None:
    """An agent with a backup section schedules its jobs and makes up a missed backup once."""
    (project / "verger.yml").write_text(config_text(free_port(), backup_section("{}")))
    # The last full backup was seven hours ago: at least one slot was missed.
    seven_hours_ago = time.time() - 7 * 3600
    earlier = open_store(".verger/state.db", project)
    earlier.start_job("backup-full", 0, at=seven_hours_ago)
    earlier.finish_job("backup-full", "ok", "", at=seven_hours_ago + 60)
    earlier.close()

    try:
        up = verger(project, "up")
        assert up.returncode == 0, up.stderr
        deadline = time.monotonic() + 30
        while True:
            listing = jobs_listing(project)
            if listing["backup-full"]["status"] not in ("ok", "running"):
                break
            assert time.monotonic() < deadline, listing
            time.sleep(0.2)
    finally:
        verger(project, "down")

    full, drill = listing["backup-full"], listing["drill"]
    assert full["status"] == "failed" and full["detail"]
    assert full["last_started"] > seven_hours_ago + 3600
    assert full["next_run"] > time.time() and not full["overdue"]
    assert drill["status"] is None and drill["next_run"] > time.time()
    agent_log = (project / ".verger" / "agent.log").read_text()
    assert "Scheduled jobs (UTC): backup-full at '0 */6 * * *', drill at" in agent_log
    assert "Starting the scheduled backup-full once now for" in agent_log
    assert "Starting the scheduled drill" not in agent_log
    assert headers(project, "backup-full")
