"""The agent's scheduler: starts each job when its cron expression says, one at a time.

A job is due when the first slot of its cron expression (UTC) after its last
start has come; for a job that never ran, the first slot after the agent
started, so that a new agent does not start everything at once. A job whose
slots passed while no agent ran is due once, and runs once, not once per
missed slot.

Jobs run as ``verger`` commands in sessions of their own, so that they
outlive an agent that stops. A small shell wrapper appends the exit code to
the job's log: a later agent adopts a job that still runs, reads how one that
ended without it finished, and marks ``interrupted`` one that died before its
end.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import re
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from croniter import croniter

from verger.config import Loaded
from verger.deploy import process
from verger.errors import VergerError
from verger.scheduler.jobs import Job, jobs_for
from verger.state import Row, Store

log = logging.getLogger("verger.scheduler")

TICK_EVERY = 1.0
# How much of a job's log is read to tell how its last run ended.
LOG_TAIL = 256 * 1024
# Missed slots are counted up to this many, for the log line only.
COUNT_MISSED_UP_TO = 1000

MARK = "---"
_TRAILER = re.compile(rf"^{MARK} (\S+) exited with code (\d+)$", re.MULTILINE)
_LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ [\w.]+: ")


@dataclass
class Run:
    """A job running now: this agent's, or one an earlier agent left running."""

    name: str
    handle: process.Handle
    log_path: Path
    offset: int


def next_run(cron: str, last_started: float | None, since: float) -> float:
    """When a job is next due: the first slot after its last start, or after ``since``."""
    base = since if last_started is None else last_started
    start = dt.datetime.fromtimestamp(base, dt.UTC)
    return float(croniter(cron, start).get_next(float))


def utc(at: float, now: float | None = None) -> str:
    """A time in UTC for a sentence: the clock alone when it is today."""
    moment = dt.datetime.fromtimestamp(at, dt.UTC)
    today = dt.datetime.fromtimestamp(time.time() if now is None else now, dt.UTC)
    if moment.date() == today.date():
        return moment.strftime("%H:%M UTC")
    return moment.strftime("%Y-%m-%d %H:%M UTC")


class Scheduler:
    """Starts due jobs as processes, one at a time, and records how they end.

    The agent calls ``tick(time.time())`` about once a second; tests call it
    with chosen times::

        scheduler = Scheduler(loaded, store, started_at=t0)
        await scheduler.tick(t0 + 6 * 3600)   # starts backup-full, due at t0's next slot
    """

    def __init__(
        self,
        loaded: Loaded,
        store: Store,
        *,
        jobs: Sequence[Job] | None = None,
        started_at: float | None = None,
    ) -> None:
        self.loaded = loaded
        self.store = store
        self.jobs = list(jobs_for(loaded.config) if jobs is None else jobs)
        self.started_at = time.time() if started_at is None else started_at
        self.logs_dir = loaded.state_dir / "logs" / "jobs"
        self.current: Run | None = None
        self._waited: dict[str, float] = {}

    def log_path(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    async def tick(self, now: float) -> None:
        """Finish the running job if it ended, then start the job due first."""
        if self.current is not None:
            if process.alive(self.current.handle):
                self._note_waiting(self.due(now), now)
                return
            self._finish(self.current, now)
            self.current = None
        self.reconcile(now)
        if self.current is not None:
            return
        due = self.due(now)
        if due:
            due_at, job = due[0]
            self._start(job, due_at, now)
            self._note_waiting(due[1:], now)

    def due(self, now: float) -> list[tuple[float, Job]]:
        """The jobs due at ``now`` with the time each became due, earliest first."""
        rows = {row.name: row for row in self.store.jobs()}
        found: list[tuple[float, int, Job]] = []
        for index, job in enumerate(self.jobs):
            row = rows.get(job.name)
            if row is not None and row.last_status == "running":
                continue
            at = next_run(job.cron, row.last_started if row else None, self.started_at)
            if at <= now:
                found.append((at, index, job))
        return [(at, job) for at, _, job in sorted(found)]

    # -- jobs left by an earlier agent --------------------------------------

    def reconcile(self, now: float) -> None:
        """Adopt a job recorded as running that still runs; settle those that ended."""
        for row in self.store.jobs():
            if row.last_status != "running" or (
                self.current is not None and self.current.name == row.name
            ):
                continue
            path = self.log_path(row.name)
            offset = _run_offset(path, row.name)
            handle = _job_process(row)
            if handle is not None:
                if self.current is None:
                    self.current = Run(row.name, handle, path, offset)
                    log.info(
                        "The scheduled %s started by an earlier agent is still "
                        "running (pid %d); no other job starts until it ends.",
                        row.name,
                        handle.pid,
                    )
                continue
            self._settle(row, _read_from(path, offset), now)

    def _settle(self, row: Row, output: str, now: float) -> None:
        status, detail = outcome(output, None)
        if status == "interrupted":
            detail = (
                f"it was running (pid {row.pid}) when the agent stopped, "
                "and ended without finishing"
            )
            log.warning(
                "The scheduled %s (pid %s) was interrupted: it ended without "
                "finishing while no agent was running; it runs again when next due.",
                row.name,
                row.pid,
            )
        else:
            log.info(
                "The scheduled %s ended while no agent was running: %s.",
                row.name,
                _status_words(status, detail),
            )
        self.store.finish_job(row.name, status, detail, at=now)

    # -- starting and finishing ---------------------------------------------

    def _start(self, job: Job, due_at: float, now: float) -> None:
        path = self.log_path(job.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        with path.open("a") as handle:
            handle.write(f"{MARK} {stamp} UTC: {job.name} starts: {job.command()}\n")
            offset = handle.tell()
        log.info(self._start_sentence(job, due_at, now))
        try:
            started = process.spawn(
                ["/bin/sh", "-c", self._script(job)],
                cwd=self.loaded.root,
                env=dict(os.environ),
                log_path=path,
            )
        except VergerError as exc:
            self.store.start_job(job.name, 0, at=now)
            self.store.finish_job(job.name, "failed", exc.message, at=now)
            log.error("The scheduled %s could not start: %s", job.name, exc.message)
            return
        self.store.start_job(job.name, started.pid, at=now)
        self.current = Run(job.name, started, path, offset)

    def _script(self, job: Job) -> str:
        """The job's command, then a last log line with its exit code."""
        # ``python -m verger`` rather than ``-m verger.cli.main``: run as __main__,
        # main.py would be a second copy of itself, without the backup commands.
        command = shlex.join(
            [
                sys.executable,
                "-m",
                "verger",
                "-c",
                str(self.loaded.path),
                "--json",
                *job.argv,
            ]
        )
        return (
            f"{command}\ncode=$?\n"
            f'echo "{MARK} {job.name} exited with code $code"\nexit $code\n'
        )

    def _start_sentence(self, job: Job, due_at: float, now: float) -> str:
        if due_at < self.started_at:
            row = self.store.job(job.name)
            missed = _count_slots(job.cron, row.last_started if row else due_at, now)
            runs = "the run" if missed == 1 else f"the {missed} runs"
            return (
                f"Starting the scheduled {job.name} once now for {runs} missed "
                f"while no agent was running (first due at {utc(due_at, now)})."
            )
        waited = self._waited.pop(job.name, None)
        if waited is not None:
            return (
                f"Starting the scheduled {job.name} (due at {utc(due_at, now)}; "
                f"it waited {_minutes(now - due_at)} for another job to finish)."
            )
        return f"Starting the scheduled {job.name} (due at {utc(due_at, now)})."

    def _note_waiting(self, due: list[tuple[float, Job]], now: float) -> None:
        """Say once per due time that a due job waits for the running one."""
        running = self.current.name if self.current else "another job"
        for due_at, job in due:
            if self._waited.get(job.name) == due_at:
                continue
            self._waited[job.name] = due_at
            log.info(
                "The scheduled %s is due (%s) but %s is running; it starts when "
                "that one finishes.",
                job.name,
                utc(due_at, now),
                running,
            )

    def _finish(self, run: Run, now: float) -> None:
        status, detail = outcome(
            _read_from(run.log_path, run.offset), process.exit_code(run.handle)
        )
        self.store.finish_job(run.name, status, detail, at=now)
        then = self._next_sentence(run.name, now)
        words = _status_words(status, detail)
        if status == "ok":
            log.info("The scheduled %s finished: %s.%s", run.name, words, then)
        elif status == "busy":
            log.warning(
                "The scheduled %s did not run: %s; it is not retried before its "
                "next time.%s",
                run.name,
                detail,
                then,
            )
        else:
            log.warning("The scheduled %s %s.%s", run.name, words, then)

    def _next_sentence(self, name: str, now: float) -> str:
        job = next((job for job in self.jobs if job.name == name), None)
        row = self.store.job(name)
        if job is None or row is None:
            return ""
        at = next_run(job.cron, row.last_started, self.started_at)
        if at <= now:
            return " Another of its slots passed meanwhile, so it is due again now."
        return f" Next run at {utc(at, now)}."


def outcome(output: str, exit_code: int | None) -> tuple[str, str]:
    """How a run ended, from its output and exit code: a status and a one-line detail.

    The status is ``ok``, ``failed``, ``busy`` (another job held the database)
    or ``interrupted`` (it ended without an exit code: killed with its wrapper).
    """
    trailers = list(_TRAILER.finditer(output))
    if trailers:
        exit_code = int(trailers[-1].group(2))
        output = output[: trailers[-1].start()]
    if exit_code is None:
        return "interrupted", "it ended without finishing"
    if exit_code < 0 or exit_code > 128:
        return "failed", _exit_words(exit_code)
    document, rest = _last_json(output)
    if isinstance(document, dict) and "error" in document:
        message = str(document["error"])
        if document.get("kind") == "BusyError":
            return "busy", message
        return "failed", message
    line = _last_line(rest)
    if exit_code == 0:
        return "ok", line
    return "failed", line or _exit_words(exit_code)


def _status_words(status: str, detail: str) -> str:
    if status == "failed":
        return f"failed: {detail}" if detail else "failed"
    return f"{status} ({detail})" if detail else status


def _exit_words(code: int) -> str:
    if code < 0:
        return f"killed by signal {-code}"
    if code > 128:
        return f"killed by signal {code - 128}"
    return f"exited with code {code}"


def _minutes(seconds: float) -> str:
    minutes = max(1, round(seconds / 60))
    return "1 minute" if minutes == 1 else f"{minutes} minutes"


def _last_json(text: str) -> tuple[Any, str]:
    """The last JSON document printed at the start of a line, and the text around it."""
    decoder = json.JSONDecoder()
    starts = [m.start() for m in re.finditer(r"^[\[{]", text, re.MULTILINE)]
    for start in reversed(starts):
        try:
            document, end = decoder.raw_decode(text, start)
        except ValueError:
            continue
        return document, text[:start] + text[end:]
    return None, text


def _last_line(text: str) -> str:
    """The last line a person would read, without a log line's time and level."""
    for raw in reversed(text.splitlines()):
        line = _LOG_PREFIX.sub("", raw.strip())
        if line and not line.startswith(MARK):
            return line[:500]
    return ""


def _count_slots(cron: str, after: float, until: float) -> int:
    slots = croniter(cron, dt.datetime.fromtimestamp(after, dt.UTC))
    count = 0
    while count < COUNT_MISSED_UP_TO and slots.get_next(float) <= until:
        count += 1
    return count


def _tail(path: Path, offset: int = 0) -> tuple[bytes, int]:
    """The log from ``offset`` (at most its last ``LOG_TAIL`` bytes), and where that is."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            start = max(offset, size - LOG_TAIL)
            handle.seek(start)
            return handle.read(), start
    except OSError:
        return b"", offset


def _read_from(path: Path, offset: int) -> str:
    """A run's output: the job's log from ``offset``."""
    return _tail(path, offset)[0].decode(errors="replace")


def _run_offset(path: Path, name: str) -> int:
    """Where the last run of ``name`` starts in its log: just after its header line."""
    data, start = _tail(path)
    header = re.compile(
        rb"^%s .* UTC: %s starts: .*\n"
        % (re.escape(MARK.encode()), re.escape(name.encode())),
        re.MULTILINE,
    )
    found = list(header.finditer(data))
    return start + found[-1].end() if found else start


def _job_process(row: Row) -> process.Handle | None:
    """The job's wrapper process if it still runs, known by its command line."""
    if not row.pid:
        return None
    started = process.start_time(int(row.pid))
    if started is None:
        return None
    try:
        argv = Path(f"/proc/{row.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    # The pid may have been reused: it is the job only if it is our wrapper for it.
    marker = f"{MARK} {row.name} exited with code".encode()
    if len(argv) < 3 or not any(marker in part for part in argv):
        return None
    return process.Handle(int(row.pid), started)


async def run_scheduler(loaded: Loaded, store: Store, stopping: asyncio.Event) -> None:
    """The agent's scheduling loop: a tick a second until ``stopping`` is set.

    It never raises: an error is logged and the next tick tries again, so a
    scheduling problem cannot stop the agent from supervising releases.
    """
    try:
        scheduler = Scheduler(loaded, store)
    except Exception:
        log.exception("The scheduler could not start; no job runs on a schedule.")
        return
    if scheduler.jobs:
        log.info(
            "Scheduled jobs (UTC): %s.",
            ", ".join(f"{job.name} at '{job.cron}'" for job in scheduler.jobs),
        )
    while not stopping.is_set():
        try:
            await scheduler.tick(time.time())
        except VergerError as exc:
            log.error("Scheduling: %s", exc.message)
        except Exception:
            log.exception("Scheduling failed; trying again.")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), TICK_EVERY)
    if scheduler.current is not None:
        log.info(
            "The scheduled %s (pid %d) keeps running; the next agent sees how it ends.",
            scheduler.current.name,
            scheduler.current.handle.pid,
        )
