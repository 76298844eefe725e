"""Taking a backup and keeping the catalog true to the repository.

The catalog row is written before the engine starts and says "running"; it
becomes "done" only from the engine's own listing after the run, and
"verified" only after a restore proved it. A process killed mid-backup leaves
"running" behind with its pid; the next command finds the pid gone and marks
the row interrupted, so a partial backup is never listed as good.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from verger.backup.engines.base import Engine, EngineBackup, Progress, no_progress
from verger.backup.markers import write_marker
from verger.children import running
from verger.errors import BackupError, Interrupted, RepositoryMissing, VergerError
from verger.state.base import Row, Store, actor

log = logging.getLogger("verger.backup")

# The status of a job stopped by a signal or killed: neither good nor disproved.
INTERRUPTED = "interrupted"


def take_backup(
    engine: Engine,
    store: Store,
    kind: str | None = None,
    progress: Progress = no_progress,
) -> Row:
    """Write a marker, run the engine, and record the result in the catalog."""
    context = engine.context
    kind = kind or engine.kinds[0]
    if kind not in engine.kinds:
        raise BackupError(
            f"the {engine.name} engine has no {kind} backups",
            f"use one of: {', '.join(engine.kinds)}",
        )
    reconcile(engine, store)
    backup_id = store.add_backup(context.database, engine.name, kind, actor())
    store.audit(actor(), "backup", None, database=context.database, kind=kind)
    try:
        marker, _ = write_marker(context.dsn, "backup")
        store.update_backup(backup_id, marker=marker)
        taken = engine.backup(kind, progress)
    except (VergerError, KeyboardInterrupt) as exc:
        stopped = isinstance(exc, (Interrupted, KeyboardInterrupt))
        reason = str(exc) or "interrupted"
        store.update_backup(
            backup_id,
            status=INTERRUPTED if stopped else "failed",
            finished_at=time.time(),
            detail=reason,
        )
        outcome = "was interrupted" if stopped else "failed"
        log.error("Backup #%s %s: %s", backup_id, outcome, reason)
        raise
    _record(store, backup_id, taken, engine)
    log.info(
        "Backup #%s (%s %s) is done; it counts once verified",
        backup_id,
        kind,
        taken.label,
    )
    row = store.backup(backup_id)
    assert row is not None
    return row


def _record(store: Store, backup_id: int, taken: EngineBackup, engine: Engine) -> None:
    fields: dict[str, Any] = {
        "status": "done",
        "label": taken.label,
        "kind": taken.kind,
        "finished_at": time.time(),
        "size": taken.size,
        "repo_size": taken.repo_size,
        "wal_start": taken.wal_start,
        "wal_stop": taken.wal_stop,
    }
    tables = getattr(engine, "tables", None)
    if callable(tables):
        fields["tables"] = tables(taken.label)
    store.update_backup(backup_id, **fields)


# The statuses of backups the repository should still hold.
KEPT = ("done", "verified", "unrestorable")


def refuse_missing_repository(engine: Engine, store: Store) -> None:
    """Raise RepositoryMissing when the repository lost the catalog's backups.

    Without this a job would list the catalog's backups as still there, or
    write a new backup into a folder made again where the mount should be.
    """
    holdings(engine, store)


def holdings(engine: Engine, store: Store) -> list[EngineBackup]:
    """The repository's backups; RepositoryMissing when it holds none of the
    catalog's backups of this engine (its folder gone or empty, unmounted, or
    another repository).

    Retention never removes every backup, so a repository holding none of
    them is not the one they were taken into.
    """
    mine = catalogued(engine, store)
    if mine:
        missing = engine.missing_error()
        if missing is not None:
            raise missing
    listed = engine.backups()
    labels = {taken.label for taken in listed}
    if mine and not any(row.label in labels for row in mine):
        raise lost_error(engine, mine)
    return listed


def catalogued(engine: Engine, store: Store) -> list[Row]:
    """The catalog's backups of this engine that its repository should hold."""
    rows = store.backups(engine.context.database, *KEPT)
    return [row for row in rows if row.engine == engine.name]


def lost_error(engine: Engine, rows: list[Row]) -> RepositoryMissing:
    return RepositoryMissing(
        f"the repository at {engine.location()} holds none of the catalog's "
        f"{count(rows)} of {engine.context.database} ({ids(rows)}): it is not "
        "mounted, was emptied, or is another repository",
        "mount the repository they are in, or restore it from a copy; if they "
        "are truly gone, 'verger backup setup --forget-missing' records them "
        "as lost",
    )


def lost_in_setup(engine: Engine, store: Store, forget: bool) -> list[str]:
    """Refuse setup, or with ``forget`` record the backups as lost, when the
    repository setup would start holds none of the catalog's backups.

    Setup would otherwise start an empty stanza there: the catalog would
    still count the old backups, and WAL would be archived where a restore
    from them never looks.
    """
    mine = catalogued(engine, store)
    if not mine:
        return []
    held = engine.setup_holdings()
    if any(row.label in held for row in mine):
        return []
    where = engine.location()
    if not forget:
        raise RepositoryMissing(
            f"the repository at {where} lacks the catalog's {count(mine)} of "
            f"{engine.context.database} ({ids(mine)}): it is missing, not "
            "mounted, emptied, or another repository",
            "mount it or restore it from a copy, then run setup again; if those "
            "backups are truly gone, 'verger backup setup --forget-missing' "
            "records them as lost and sets this repository up",
        )
    return [forget_lost(store, mine, where)]


def forget_lost(store: Store, rows: list[Row], where: str) -> str:
    """Mark ``rows`` lost: never listed, verified, restored or counted again."""
    for row in rows:
        store.update_backup(
            row.id,
            status="lost",
            detail=f"not in the repository at {where}; recorded as lost by "
            "'backup setup --forget-missing'",
        )
    store.audit(actor(), "backup-lost", None, backups=[row.id for row in rows])
    log.warning("Backups %s are recorded as lost: %s lacks them", ids(rows), where)
    return f"recorded {count(rows)} ({ids(rows)}) as lost: {where} does not hold them"


def count(rows: list[Row]) -> str:
    return f"{len(rows)} backup" + ("" if len(rows) == 1 else "s")


def ids(rows: list[Row]) -> str:
    """Backup ids as '#1, #2, #3', the first five and a count of the rest."""
    shown = ", ".join(f"#{row.id}" for row in sorted(rows, key=lambda r: r.id)[:5])
    return shown if len(rows) <= 5 else f"{shown} and {len(rows) - 5} more"


def reconcile(engine: Engine, store: Store) -> list[str]:
    """Bring the catalog in line with the repository; return what changed, as sentences."""
    database = engine.context.database
    changes = mark_orphans(store, database)
    held = {b.label: b for b in holdings(engine, store)}
    kept = store.backups(database, *KEPT)
    if not held and kept:
        # A repository that lists nothing while the catalog holds backups is
        # more likely unmounted or replaced than emptied by retention.
        log.warning(
            "The repository lists no backup while the catalog holds %d; "
            "they are left as they are",
            len(kept),
        )
        return changes
    for row in kept:
        if row.label not in held:
            store.update_backup(row.id, status="expired")
            changes.append(
                f"Backup #{row.id} ({row.label}) is gone from the repository."
            )
    known = {row.label for row in store.backups(database) if row.label}
    for label, taken in held.items():
        if label in known or taken.error:
            continue
        backup_id = store.add_backup(database, engine.name, taken.kind, "repository")
        store.update_backup(
            backup_id,
            status="done",
            label=label,
            started_at=taken.started_at,
            finished_at=taken.finished_at,
            size=taken.size,
            repo_size=taken.repo_size,
            wal_start=taken.wal_start,
            wal_stop=taken.wal_stop,
            detail="found in the repository, not taken by verger",
        )
        changes.append(f"Backup {label} was found in the repository and added.")
    for change in changes:
        log.info(change)
    return changes


def mark_orphans(store: Store, database: str) -> list[str]:
    """Mark interrupted the running backups and drills whose process is gone.

    This needs only the catalog, so commands that never read the repository
    (``backup list`` without a passphrase, ``dr report``) still never show a
    dead run as running. Every command marks before it makes rows of its
    own, so a running row naming this very process names a dead verger's
    number, used again.
    """
    changes: list[str] = []
    for row in store.backups(database, "running"):
        if _alive(row.pid):
            continue
        # No finished_at: when it was noticed is not when it stopped, and
        # "took" would count the time nobody looked.
        store.update_backup(
            row.id,
            status=INTERRUPTED,
            detail="interrupted: the process taking it ended before it finished",
        )
        changes.append(f"Backup #{row.id} is marked interrupted: its process is gone.")
    for drill in store.drills(database):
        if drill.status != "running" or _alive(drill.pid):
            continue
        store.update_drill(
            drill.id,
            status=INTERRUPTED,
            finished_at=time.time(),
            detail="interrupted: the process running it ended before it finished",
        )
        changes.append(f"Drill #{drill.id} is marked interrupted: its process is gone.")
    return changes


def _alive(pid: int | None) -> bool:
    """Whether a run's process is another verger still running."""
    return pid is not None and int(pid) != os.getpid() and running(int(pid))
