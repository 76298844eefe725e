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
from verger.errors import BackupError, Interrupted, VergerError
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


def refuse_missing_repository(engine: Engine, store: Store) -> None:
    """Raise RepositoryMissing when the catalog holds backups of this repository
    and its folder is gone or empty (unmounted, or deleted).

    Without this a job would list the catalog's backups as still there, or
    write a new backup into a folder made again where the mount should be.
    """
    database = engine.context.database
    kept = store.backups(database, "done", "verified", "unrestorable")
    if any(row.engine == engine.name for row in kept):
        missing = engine.missing_error()
        if missing is not None:
            raise missing


def reconcile(engine: Engine, store: Store) -> list[str]:
    """Bring the catalog in line with the repository; return what changed, as sentences."""
    database = engine.context.database
    changes = mark_orphans(store, database)
    refuse_missing_repository(engine, store)
    held = {b.label: b for b in engine.backups()}
    kept = store.backups(database, "done", "verified", "unrestorable")
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
