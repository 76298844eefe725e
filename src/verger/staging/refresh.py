"""``verger staging refresh``: production's shape and size, none of its people.

The steps, each logged as a sentence: clean up what an interrupted refresh
left; load the newest verified backup of production (or a fresh pg_dump
snapshot) into a new database beside staging; check that every column is
classified; mask; scan for leaks; swap the new copy in; restart staging's
live release. Until the swap, staging serves its old copy, and a failure at
any step drops the new database.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import string
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg

from verger.backup.lock import exclusive
from verger.children import running
from verger.config import Loaded
from verger.config.loader import unexpanded, unset_reference
from verger.config.staging import Staging
from verger.errors import BusyError, VergerError
from verger.notify import StagingEvent, make_notifier
from verger.staging.catalog import read_tables
from verger.staging.children import end_orphans
from verger.staging.databases import RefreshError, Server, refuse_production
from verger.staging.fakes import Faker
from verger.staging.mask import Masked, build_masked
from verger.staging.plan import Plan, make_plan
from verger.staging.scan import Scan, scan_database
from verger.state import actor
from verger.state.base import Store

log = logging.getLogger("verger.staging")

SALT_VARIABLE = "VERGER_STAGING_SALT"
# Different characters a salt needs at the least: fewer is a salt anyone guesses.
DISTINCT = 8
RANDOM = "the output of 'openssl rand -base64 32'"
# (step name, done, total): the CLI turns these into progress bars.
Progress = Callable[[str, int, int], None]
Restart = Callable[[], str]


def _quiet(step: str, done: int, total: int) -> None:
    return None


@dataclass
class Outcome:
    refresh_id: int
    database: str
    source: str
    rows_masked: int = 0
    values_scanned: int = 0
    seconds: float = 0.0
    restart: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "refresh_id": self.refresh_id,
            "database": self.database,
            "source": self.source,
            "rows_masked": self.rows_masked,
            "values_scanned": self.values_scanned,
            "seconds": round(self.seconds, 1),
            "restart": self.restart,
            "notes": self.notes,
        }


def section_of(loaded: Loaded) -> Staging:
    section = loaded.config.staging
    if section is None:
        raise RefreshError(
            f"{loaded.path.name} has no staging: section",
            "add one naming the columns to mask (see the README's staging section)",
        )
    return section


def salt_of(section: Staging) -> str:
    value = section.salt or os.environ.get(SALT_VARIABLE, "")
    unset = unset_reference(value)
    if unset:
        # Masking with the literal text would make every fake guessable by
        # anyone who can read verger.yml.
        raise RefreshError(
            f"staging.salt names ${{{unset}}}, which is not set",
            f"export {unset} with the salt used every night (keep it the same), "
            "then run the refresh again",
        )
    literal = unexpanded(value)
    if literal:
        raise RefreshError(
            f"staging.salt is written {literal}, which verger reads as literal "
            "text: only ${NAME} is taken from the environment",
            "write staging.salt: ${NAME} and export NAME with the salt",
        )
    if len(value) < 16:
        raise RefreshError(
            "no salt of 16 characters or more is set for masking",
            f"export {SALT_VARIABLE} (or set staging.salt: ${{{SALT_VARIABLE}}}) to a "
            f"long random secret, such as {RANDOM}, and keep it the same every night",
        )
    if len(set(value) - set(string.whitespace)) < DISTINCT:
        # Twenty spaces or "aaaa..." would make every fake guessable.
        raise RefreshError(
            f"the salt for masking has fewer than {DISTINCT} different characters",
            f"use a long random secret, such as {RANDOM}, and keep it the same "
            "every night",
        )
    return value


def cleanup(store: Store, server: Server) -> list[str]:
    """End what interrupted refreshes left: their rows, their databases, a half swap."""
    notes = server.recover()
    for row in store.refreshes(server.live):
        if row.status == "running":
            store.update_refresh(
                row.id,
                status="interrupted",
                finished_at=time.time(),
                detail="the refresh stopped before it finished",
            )
    for name in server.half_built():
        server.drop(name)
        notes.append(f"dropped {name}, left by an interrupted refresh")
    for note in notes:
        log.info("Cleanup: %s.", note)
    return notes


def refresh(
    loaded: Loaded,
    store: Store,
    *,
    use_snapshot: bool = False,
    progress: Progress = _quiet,
    restart: Restart | None = None,
) -> Outcome:
    """Refresh the staging database from production; see the module docstring.

    Example: ``refresh(load_config("verger.yml"), store, use_snapshot=True)``.
    """
    section = section_of(loaded)
    databases = loaded.config.databases
    source_url, target_url = databases[section.source], databases[section.target]
    others = {
        name: url
        for name, url in databases.items()
        if name not in (section.source, section.target)
    }
    refuse_production(target_url, source_url, others)
    faker = Faker(salt_of(section), section.region)
    server = Server(target_url)
    with _lock(loaded, server):
        return _refresh(
            loaded, store, section, server, faker, use_snapshot, progress, restart
        )


@contextmanager
def _lock(loaded: Loaded, server: Server) -> Iterator[None]:
    """One refresh of a staging database at a time, across processes.

    A lock still held after the refresh that took it died is held by what
    that refresh forked: those are ended, and the lock taken.
    """
    folder = loaded.root / ".verger" / "staging" / server.live
    with ExitStack() as held:
        _take(held, folder, server)
        yield


def _take(held: ExitStack, folder: Path, server: Server) -> None:
    for attempt in range(2):
        try:
            held.enter_context(exclusive(folder, "staging refresh"))
            return
        except BusyError as exc:
            dead = _dead_holder(folder / "job.lock")
            if attempt or dead is None:
                raise BusyError(
                    exc.message.replace("for this database", f"for {server.live}"),
                    "wait for it to finish; 'verger staging status' shows it",
                ) from None
            for note in end_orphans(folder / "job.lock", dead):
                log.info("Cleanup: %s.", note)
            time.sleep(0.2)


def _dead_holder(path: Path) -> int | None:
    """The pid the lock names, when that process is gone."""
    try:
        pid = int(json.loads(path.read_text() or "{}").get("pid", 0))
    except (OSError, ValueError):
        return None
    return pid if pid and not running(pid) else None


def _refresh(
    loaded: Loaded,
    store: Store,
    section: Staging,
    server: Server,
    faker: Faker,
    use_snapshot: bool,
    progress: Progress,
    restart: Restart | None,
) -> Outcome:
    notes = cleanup(store, server)
    new = server.new_name()
    started = time.monotonic()
    refresh_id = store.add_refresh(server.live, new, actor())
    outcome = Outcome(refresh_id, new, "", notes=notes)
    try:
        with _stoppable():
            _build(
                loaded, store, section, server, outcome, faker, use_snapshot, progress
            )
            server.swap(new)
    except KeyboardInterrupt as exc:
        # A second signal must not stop the cleanup that makes the line true.
        with _uninterrupted():
            dropped = _fail(loaded, store, server, outcome, exc)
        raise _interrupted(new, dropped, exc) from None
    except BaseException as exc:
        _fail(loaded, store, server, outcome, exc)
        raise
    log.info(
        "Swapped %s in as %s; the old copy is %s.", new, server.live, server.previous
    )
    outcome.database = server.live
    outcome.seconds = time.monotonic() - started
    try:
        outcome.restart = restart() if restart is not None else ""
    except VergerError as exc:
        raise _restart_failed(loaded, store, server, outcome, exc) from exc
    store.update_refresh(
        refresh_id,
        status="succeeded",
        finished_at=time.time(),
        leaks=0,
        database=server.live,
        detail=outcome.restart or None,
    )
    _notify(loaded, outcome, "refresh_succeeded", _summary(outcome))
    return outcome


class RestartError(RefreshError):
    """The masked copy is in place, but staging's release did not restart on it."""


def _restart_failed(
    loaded: Loaded, store: Store, server: Server, outcome: Outcome, exc: VergerError
) -> RestartError:
    """Recorded and reported as a failure: staging's app may not serve the new copy."""
    reason = (
        f"the masked copy is in place as {server.live}, but restarting staging "
        f"failed: {exc.message}"
    )
    store.update_refresh(
        outcome.refresh_id,
        status="restart_failed",
        finished_at=time.time(),
        leaks=0,
        database=server.live,
        detail=reason,
    )
    log.error("Refresh #%s: %s", outcome.refresh_id, reason)
    _notify(loaded, outcome, "refresh_failed", reason)
    environment = section_of(loaded).environment or "staging"
    return RestartError(
        reason,
        f"{exc.hint}; once it is fixed, run 'verger deploy {environment}' to start "
        "staging on the new copy (the refresh need not run again)",
    )


def _build(
    loaded: Loaded,
    store: Store,
    section: Staging,
    server: Server,
    outcome: Outcome,
    faker: Faker,
    use_snapshot: bool,
    progress: Progress,
) -> None:
    server.create(outcome.database)
    url = server.url(outcome.database)
    with _source(
        loaded, store, section, server, outcome, use_snapshot, progress
    ) as got:
        outcome.source = got.label
        tables = read_tables(got.conn)
        if not tables:
            raise RefreshError(
                f"{outcome.source} holds no tables",
                "check that the source names production's database; staging keeps "
                "its old copy",
            )
        plan = make_plan(tables, section)
        for key in plan.unknown:
            log.warning("staging rule for %s names no column in the copy.", key)
            outcome.notes.append(f"{key} is in the config but not in the database")
        store.update_refresh(outcome.refresh_id, source=outcome.source)
        log.info("Copying %s into %s, masked.", outcome.source, outcome.database)
        masked = _mask(got, url, plan, faker, progress)
    outcome.rows_masked = masked.rows
    store.update_refresh(outcome.refresh_id, rows_masked=masked.rows)

    scan = scan_database(
        url,
        tables,
        faker,
        masked.fingerprints,
        section.canaries,
        lambda d, t: progress("Scanning for leaks", d, t),
        _fixed(plan),
    )
    outcome.values_scanned = scan.values
    if scan.count:
        store.update_refresh(outcome.refresh_id, leaks=scan.count)
        raise LeakError(
            f"the leak scan found {scan.count} production "
            f"{'value' if scan.count == 1 else 'values'} in the masked copy "
            f"({_listed(scan)}); staging keeps its old copy",
            "mask the columns named (or add the text rule to them), then refresh again",
        )
    log.info(
        "The leak scan checked %s values and found no production value.", scan.values
    )


def _fixed(plan: Plan) -> dict[str, str]:
    """Each column under the fixed rule, with the value the config chose for it."""
    return {
        column.key_name: rule.value
        for tp in plan.tables
        for column, rule in tp.masked
        if rule.rule == "fixed" and rule.value
    }


def _listed(scan: Scan) -> str:
    """The first five kinds of finding with their counts, and how many more."""
    shown = scan.leaks[:5]
    parts = [
        leak.sentence()
        + (f" ({scan.times[leak]} values)" if scan.times[leak] > 1 else "")
        for leak in shown
    ]
    more = scan.count - sum(scan.times[leak] for leak in shown)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _mask(got: Got, url: str, plan: Plan, faker: Faker, progress: Progress) -> Masked:
    try:
        return build_masked(
            got.conn,
            got.dsn,
            got.snapshot,
            url,
            plan,
            faker,
            lambda d, t: progress("Masking", d, t),
        )
    except psycopg.Error as exc:
        raise RefreshError(
            f"masking failed: {str(exc).strip().splitlines()[0]}",
            "check the staging server's log, then refresh again",
        ) from exc


@dataclass
class Got:
    """Where the rows come from: an open transaction, and the schema's source."""

    conn: psycopg.Connection[tuple[object, ...]]
    dsn: str
    label: str
    snapshot: str | None = None


class LeakError(RefreshError):
    """Production values were found in the masked copy."""


@contextmanager
def _source(
    loaded: Loaded,
    store: Store,
    section: Staging,
    server: Server,
    outcome: Outcome,
    use_snapshot: bool,
    progress: Progress,
) -> Iterator[Got]:
    """The newest verified backup restored beside staging, else production's snapshot."""
    backup = loaded.config.backup
    if not use_snapshot and backup is not None and backup.database == section.source:
        verified = store.backups(section.source, "verified")
        if verified:
            with _restored(loaded, verified[0], server, outcome, progress) as got:
                yield got
            return
        log.info("No verified backup of %s; taking a snapshot.", section.source)
    with _snapshot(loaded.config.databases[section.source], section.source) as got:
        progress("Snapshot of production", 0, 0)
        yield got


@contextmanager
def _snapshot(dsn: str, name: str) -> Iterator[Got]:
    """One read-only transaction on production, its snapshot exported for pg_dump."""
    try:
        conn = psycopg.connect(dsn, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise RefreshError(
            f"cannot reach production for a snapshot: {str(exc).strip()}",
            "check the production URL under databases:",
        ) from exc
    with conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        row = conn.execute("SELECT pg_export_snapshot()").fetchone()
        at = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        yield Got(
            conn, dsn, f"snapshot of {name} at {at}", str(row[0]) if row else None
        )
        conn.rollback()


@contextmanager
def _restored(
    loaded: Loaded, row: Any, server: Server, outcome: Outcome, progress: Progress
) -> Iterator[Got]:
    """The backup restored into a database beside the copy, dropped once copied."""
    from verger.backup import make_context, make_engine, restore
    from verger.backup.engines import RestorePoint

    scratch = f"{outcome.database}_source"
    server.create(scratch)
    try:
        engine = make_engine(make_context(loaded))
        restore(
            engine,
            RestorePoint(label=row.label),
            server.url(scratch),
            lambda d, t: progress("Restoring the backup", d, t),
        )
        with psycopg.connect(server.url(scratch)) as conn:
            yield Got(
                conn, server.url(scratch), f"verified backup #{row.id} ({row.label})"
            )
            conn.rollback()
    finally:
        server.drop(scratch)


class Interrupted(RefreshError):
    """Ctrl-C or SIGTERM stopped a refresh before its swap; staging keeps its old copy."""

    exit_code = 130


class Terminated(KeyboardInterrupt):
    """SIGTERM (a service manager stopping verger) asked a refresh to stop."""


def _interrupted(new: str, dropped: bool, exc: KeyboardInterrupt) -> Interrupted:
    removed = (
        f"the half-built copy {new} was removed"
        if dropped
        else f"the half-built copy {new} is removed by the next refresh"
    )
    how = "by SIGTERM" if isinstance(exc, Terminated) else "with Ctrl-C"
    error = Interrupted(
        f"the refresh was interrupted {how}: staging still serves the old copy, "
        f"and {removed}",
        "run 'verger staging refresh' again when ready",
    )
    error.exit_code = 143 if isinstance(exc, Terminated) else 130
    return error


@contextmanager
def _stoppable() -> Iterator[None]:
    """SIGTERM stops the refresh as Ctrl-C does, where this is the main thread.

    Python's own default would end the process at once, leaving the refresh
    marked running and its half-built copy behind until the next one.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(number: int, frame: FrameType | None) -> None:
        raise Terminated()

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


@contextmanager
def _uninterrupted() -> Iterator[None]:
    """SIGINT and SIGTERM ignored inside, where this is the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {
        number: signal.signal(number, signal.SIG_IGN)
        for number in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for number, action in before.items():
            signal.signal(number, action)


def _fail(
    loaded: Loaded, store: Store, server: Server, outcome: Outcome, exc: BaseException
) -> bool:
    """The refresh marked failed and its copy dropped; whether the drop worked."""
    dropped = True
    try:
        server.drop(outcome.database)
    except (VergerError, psycopg.Error) as problem:
        dropped = False
        log.warning("Could not drop %s: %s", outcome.database, problem)
    reason = (
        exc.message if isinstance(exc, VergerError) else f"{type(exc).__name__}: {exc}"
    )
    status = "failed"
    if isinstance(exc, KeyboardInterrupt):
        how = "by SIGTERM" if isinstance(exc, Terminated) else "with Ctrl-C"
        status, reason = "interrupted", f"interrupted {how}"
    store.update_refresh(
        outcome.refresh_id, status=status, finished_at=time.time(), detail=reason
    )
    log.error("Refresh #%s failed: %s", outcome.refresh_id, reason)
    if isinstance(exc, Exception):
        _notify(loaded, outcome, "refresh_failed", reason)
    return dropped


def _summary(outcome: Outcome) -> str:
    done = (
        f"{outcome.rows_masked} rows masked from {outcome.source}, "
        f"{outcome.values_scanned} values scanned, no leak, in {outcome.seconds:.1f}s"
    )
    return f"{done}. {outcome.restart}" if outcome.restart else done


def _notify(loaded: Loaded, outcome: Outcome, event: str, reason: str) -> None:
    hooks = loaded.config.notify.webhooks
    if not hooks:
        return
    notifier = make_notifier(loaded.config.notify)
    notifier.send(
        StagingEvent(
            "refresh_succeeded" if event == "refresh_succeeded" else "refresh_failed",
            loaded.config.app,
            Server(loaded.config.databases[section_of(loaded).target]).live,
            outcome.refresh_id,
            reason,
        )
    )
    asyncio.run(notifier.drain(20.0))
