"""The state of a database's backups, as findings that checks and alerts share.

``verger check`` shows every finding; the agent turns the bad ones into
webhook alerts. Each finding is a sentence with a hint, computed from the
live server (``pg_stat_archiver`` and the WAL waiting in
``pg_wal/archive_status``), the repository and the catalog.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import psycopg

from verger.backup.engines.base import Engine
from verger.backup.runs import holdings
from verger.config.types import format_duration
from verger.errors import RepositoryMissing, VergerError
from verger.state.base import Store

if TYPE_CHECKING:
    from verger.backup.gaps import Gap

Level = Literal["ok", "warn", "fail"]
LOW_SPACE = 1_000_000_000


@dataclass(frozen=True)
class Finding:
    name: str
    level: Level
    message: str
    hint: str = ""
    # The alert this finding raises when it is not ok, if any.
    event: str | None = None


def _ago(seconds: float) -> str:
    return format_duration(max(1, round(seconds))) + " ago"


def archiving(engine: Engine, now: float | None = None) -> list[Finding]:
    """Whether WAL archiving is on and keeping up."""
    if not engine.pitr:
        return [
            Finding(
                "backup.archiving",
                "ok",
                f"the {engine.name} engine keeps no WAL: no point-in-time recovery, "
                "and the RPO is the time between backups",
            )
        ]
    now = now or time.time()
    try:
        with psycopg.connect(
            engine.context.dsn, connect_timeout=5, autocommit=True
        ) as conn:
            mode = _one(conn, "SHOW archive_mode")
            command = _one(conn, "SHOW archive_command")
            stats = conn.execute(
                "SELECT extract(epoch FROM last_archived_time), last_archived_wal,"
                " extract(epoch FROM last_failed_time), last_failed_wal, failed_count"
                " FROM pg_stat_archiver"
            ).fetchone()
            waiting = conn.execute(
                "SELECT count(*), extract(epoch FROM min(modification))"
                " FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'"
            ).fetchone()
    except psycopg.Error as exc:
        return [
            Finding(
                "backup.archiving",
                "fail",
                f"cannot read the archiver's state: {str(exc).strip().splitlines()[0]}",
                "check databases: in verger.yml; the user needs pg_monitor or superuser",
            )
        ]
    if mode == "off":
        return [
            Finding(
                "backup.archiving",
                "fail",
                "archive_mode is off, so no WAL reaches the repository",
                "run 'verger backup setup', then restart PostgreSQL",
                "archiving_failed",
            )
        ]
    ours = engine.archive_command()
    if ours is not None and command != ours:
        return [
            Finding(
                "backup.archiving",
                "fail",
                "archive_command does not push to this config's repository, so its "
                "WAL goes elsewhere or nowhere",
                "run 'verger backup setup' (it refuses to replace a command that "
                "another repository needs)",
                "archiving_failed",
            )
        ]
    assert stats is not None and waiting is not None
    archived_at, failed_at = _float(stats[0]), _float(stats[2])
    findings = [_failures(archived_at, failed_at, stats[3], stats[4], now)]
    findings.append(
        _waiting(int(str(waiting[0] or 0)), _float(waiting[1]), engine, now)
    )
    findings.append(_newest(archived_at, stats[1], now))
    return findings


def _float(value: object) -> float | None:
    return None if value is None else float(str(value))


def _one(conn: psycopg.Connection[tuple[object, ...]], sql: str) -> str:
    row = conn.execute(sql).fetchone()
    return str(row[0]) if row else ""


def _failures(
    archived_at: float | None,
    failed_at: float | None,
    failed_wal: object,
    failures: object,
    now: float,
) -> Finding:
    if failed_at is not None and (archived_at is None or failed_at > archived_at):
        return Finding(
            "backup.archiving",
            "fail",
            f"archive_command is failing: {failed_wal} failed {_ago(now - failed_at)}"
            f" ({failures} failures in all), and nothing was archived since",
            "read the PostgreSQL log for archive_command's error; WAL piles up in "
            "pg_wal until it works again",
            "archiving_failed",
        )
    return Finding("backup.archiving", "ok", "archive_command works")


def _waiting(count: int, oldest: float | None, engine: Engine, now: float) -> Finding:
    limit = max(2 * engine.context.section.archive_timeout, 300.0)
    if count and oldest is not None and now - oldest > limit:
        return Finding(
            "backup.wal-waiting",
            "fail",
            f"{count} WAL segments wait to be archived, the oldest since "
            f"{_ago(now - oldest)}",
            "archiving is stuck or slow: see the PostgreSQL log and the repository",
            "archiving_failed",
        )
    return Finding(
        "backup.wal-waiting", "ok", f"{count} WAL segments wait to be archived"
    )


def _newest(archived_at: float | None, archived_wal: object, now: float) -> Finding:
    if archived_at is None:
        return Finding(
            "backup.newest-wal",
            "warn",
            "no WAL segment has been archived yet",
            "run 'verger backup setup' and check that PostgreSQL was restarted",
        )
    age = now - archived_at
    return Finding(
        "backup.newest-wal", "ok", f"{archived_wal} was archived {_ago(age)}"
    )


def repository(engine: Engine) -> Finding:
    try:
        status = engine.repository()
    except VergerError as exc:
        return Finding(
            "backup.repository", "fail", exc.message, exc.hint, "backup_failed"
        )
    if not status.reachable:
        return Finding(
            "backup.repository",
            "fail",
            f"the repository does not answer: {status.problem}",
            "check the repository settings under backup.repository and the network",
            "backup_failed",
        )
    if status.free_bytes is not None and status.free_bytes < LOW_SPACE:
        return Finding(
            "backup.repository",
            "warn",
            f"the repository has only {status.free_bytes // 1_000_000} MB free",
            "free space or move the repository before backups start failing",
        )
    free = (
        f", {status.free_bytes // 1_000_000_000} GB free"
        if status.free_bytes is not None
        else ""
    )
    return Finding("backup.repository", "ok", f"the repository answers{free}")


def freshness(engine: Engine, store: Store, now: float | None = None) -> Finding:
    """Whether the newest verified backup is recent enough for the RPO target."""
    now = now or time.time()
    context = engine.context
    verified = store.backups(context.database, "verified")
    try:
        present: set[str] | None = {b.label for b in holdings(engine, store)}
    except RepositoryMissing as exc:
        if verified:
            return Finding(
                "backup.verified",
                "fail",
                f"no verified backup is in the repository: {exc.message}",
                exc.hint,
                "backup_stale",
            )
        present = set()
    except VergerError:
        # backup.repository fails and alerts for the same cause.
        present = None
    verified = [r for r in verified if present is None or r.label in present]
    if not verified:
        return Finding(
            "backup.verified",
            "fail",
            "no backup of this database has been verified by a restore yet",
            "run 'verger backup run' (it verifies what it takes)",
            "backup_stale",
        )
    newest = verified[0]
    age = now - float(newest.finished_at or newest.started_at)
    message = f"the newest verified backup, #{newest.id}, was taken {_ago(age)}"
    allowed, promise = _allowed_age(engine)
    if age > allowed:
        return Finding(
            "backup.verified",
            "fail",
            f"{message}, longer than {promise}",
            "check that scheduled backups run ('verger jobs') and pass verification",
            "backup_stale",
        )
    return Finding("backup.verified", "ok", message)


def _allowed_age(engine: Engine) -> tuple[float, str]:
    """How old the newest verified backup may be, and the promise that says so.

    Without WAL the backup is the restore point, so the RPO target bounds it.
    With WAL archiving the RPO is kept by WAL on top of a verified backup, and
    a backup older than the RPO is normal; two missed full backups are not.
    """
    section = engine.context.section
    rpo = section.targets.rpo
    if not engine.pitr:
        return rpo, f"the {format_duration(rpo)} RPO target"
    cron = section.schedule.full
    if cron is None:
        return max(rpo, 7 * 86400.0), "a week with no full backup scheduled"
    # Imported here: croniter runs a program at import (platform.architecture
    # calls ``file``), a cost every backup command would pay for nothing.
    from croniter import croniter

    slots = croniter(cron, time.time())
    first = slots.get_next(float)
    cadence = slots.get_next(float) - first
    allowed = max(rpo, 2 * cadence)
    return allowed, f"two full backups' cadence ({format_duration(allowed)})"


def gaps(engine: Engine) -> list[Finding]:
    """Whether the WAL archive is whole from the oldest backup to the newest segment.

    Listing the archive costs one engine call, cheap enough once a minute.
    """
    if not engine.pitr:
        return []
    from verger.backup.gaps import find_gaps
    from verger.backup.restore import when

    try:
        found = find_gaps(engine.backups(), engine.wal())
    except VergerError as exc:
        # backup.repository fails and alerts for the same cause.
        return [
            Finding(
                "backup.wal-gaps",
                "warn",
                f"cannot list the WAL archive: {exc.message}",
                exc.hint,
            )
        ]
    if not found:
        return [Finding("backup.wal-gaps", "ok", "the WAL archive has no gap")]
    return [_gap_finding(gap, when) for gap in found]


def _gap_finding(gap: Gap, when: Callable[[float | None], str]) -> Finding:
    """A gap no backup after it heals fails; a healed one only narrows the window."""
    if gap.broken_until is None:
        return Finding(
            "backup.wal-gaps",
            "fail",
            gap.sentence(when),
            "take a full backup now ('verger backup run --type full') so that "
            "restores after the gap work again, and find out what deleted the WAL",
            "archiving_failed",
        )
    return Finding(
        "backup.wal-gaps",
        "warn",
        gap.sentence(when),
        "a backup taken since restores past it; times inside it stay out of "
        "reach until retention drops the backups before it; find out what "
        "deleted the WAL",
    )
