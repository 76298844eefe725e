"""Verification: a backup counts once verger restored it and found it whole.

The restore goes into a scratch cluster on a free port with archiving off.
Once the copy accepts writes, ``pg_amcheck`` checks every table and index,
and the facts recorded at backup time must be there: the marker row written
just before the backup started, and for a logical backup every table's row
count and checksum.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

from verger.backup.cluster import ScratchCluster, clean_stale
from verger.backup.engines.base import (
    Engine,
    Progress,
    RestorePoint,
    no_progress,
    step,
)
from verger.backup.markers import has_marker
from verger.backup.system import pg_program
from verger.errors import BackupError, Interrupted, VergerError
from verger.state.base import Row, Store

log = logging.getLogger("verger.backup")

# Words in a failed restore's error that speak about the backup's own bytes.
CONTENT = (
    "checksum",
    "corrupt",
    "damaged",
    "truncated",
    "authentication check",
    "not a verger backup",
    "zst error",
    "gz error",
    "lz4 error",
    "bz2 error",
    "invalid page",
    "invalid magic",
    "row count",
)
# Words that put the blame on the surroundings: the same backup may restore
# once the repository is readable, mounted or has room again.
SURROUNDINGS = (
    "permission denied",
    "no such file",
    "no space left",
    "disk full",
    "read-only file system",
    "not mounted",
    "passphrase",
    "interrupted",
    "timed out",
    "connection refused",
)


def content_error(exc: VergerError) -> bool:
    """Whether a failed restore is evidence about the backup, not about the place.

    Only such a failure may mark a backup unrestorable; a repository that
    cannot be read today says nothing about what it holds.
    """
    text = f"{exc.message}\n{exc.detail}".lower()
    if any(word in text for word in SURROUNDINGS):
        return False
    return any(word in text for word in CONTENT)


def mark_unrestorable(store: Store, database: str, label: str, why: str) -> None:
    """Record that restoring ``label`` failed on its content, so it is not chosen."""
    row = store.backup_by_label(database, label)
    if row is None:
        return
    store.update_backup(
        row.id,
        status="unrestorable",
        verified_at=time.time(),
        verify_detail=f"Backup #{row.id} ({label}) did not restore: {why}.",
    )
    log.warning("Backup #%d (%s) is unrestorable: %s", row.id, label, why)


@dataclass
class Verdict:
    backup_id: int
    label: str
    verified: bool
    seconds: float
    problems: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    # The restore failed for a reason outside the backup: nothing was proved.
    unproved: bool = False

    def sentence(self) -> str:
        if self.verified:
            return (
                f"Backup #{self.backup_id} ({self.label}) is verified: restored in "
                f"{self.seconds:.1f}s, {'; '.join(self.checked)}."
            )
        if self.unproved:
            return (
                f"Backup #{self.backup_id} ({self.label}) could not be verified, "
                f"which says nothing about its content: {'; '.join(self.problems)}."
            )
        return (
            f"Backup #{self.backup_id} ({self.label}) did not pass: "
            f"{'; '.join(self.problems)}."
        )


def verify_backup(
    engine: Engine, store: Store, row: Row, progress: Progress = no_progress
) -> Verdict:
    """Restore ``row`` into a scratch cluster, check it, and record the verdict."""
    context = engine.context
    for sentence in clean_stale(context.scratch):
        log.warning(sentence)
    started = time.monotonic()
    verdict = Verdict(row.id, row.label, verified=False, seconds=0.0)
    cluster = ScratchCluster(context.runner, context.scratch, "verify")
    try:
        engine.restore(RestorePoint(label=row.label), cluster, progress)
        verdict.seconds = time.monotonic() - started
        step(progress, "amcheck")
        _amcheck(cluster, verdict)
        step(progress, "compare")
        _marker(cluster, context.dsn, row, verdict)
        _tables(engine, cluster, row, verdict)
    except Interrupted as exc:
        # Stopped, not disproved: the backup's status stays as it was.
        _record_interrupted(store, row, exc)
        raise
    except VergerError as exc:
        verdict.problems.append(f"the restore failed: {exc}")
        verdict.unproved = not content_error(exc)
    finally:
        cluster.remove()
    verdict.verified = not verdict.problems
    verdict.seconds = verdict.seconds or time.monotonic() - started
    if verdict.unproved:
        # Its status stays: only evidence about the backup itself may condemn it.
        store.update_backup(row.id, verify_detail=verdict.sentence())
    else:
        store.update_backup(
            row.id,
            status="verified" if verdict.verified else "unrestorable",
            verified_at=time.time(),
            verify_seconds=verdict.seconds,
            verify_detail=verdict.sentence(),
        )
    log.info(verdict.sentence())
    return verdict


# Where an interrupted verification's record quotes the verdict before it.
EARLIER = ", as the earlier verification found: "


def _record_interrupted(store: Store, row: Row, exc: Interrupted) -> None:
    """Say in the verification record that this one was stopped, and by what."""
    at = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    said = (
        f"Verification interrupted by {exc.signal or 'a signal'} at {at}, so "
        f"nothing new was proved; backup #{row.id} stays {row.status}"
    )
    earlier = row.verify_detail or ""
    if EARLIER in earlier or earlier.startswith("Verification interrupted"):
        # Stopped again: what an earlier verification found is still the news.
        earlier = earlier.partition(EARLIER)[2]
    if earlier:
        said += f"{EARLIER}{earlier}"
    store.update_backup(row.id, verify_detail=said)
    log.warning(said)


def _database(dsn: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    return str(conninfo_to_dict(dsn).get("dbname") or "postgres")


def _amcheck(cluster: ScratchCluster, verdict: Verdict) -> None:
    done = cluster.runner.run(
        [
            pg_program("pg_amcheck"),
            "--host",
            str(cluster.sockets),
            "--port",
            str(cluster.port),
            "--username",
            cluster.superuser,
            "--all",
            "--install-missing",
            "--heapallindexed",
        ],
        check=False,
        timeout=6 * 3600,
        what="pg_amcheck",
    )
    if done.returncode == 0:
        verdict.checked.append("pg_amcheck found no corruption")
        return
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    # pg_amcheck names the place on one line and says what is wrong on the next.
    said = [line.strip() for line in lines if "%" not in line][:2]
    found = " ".join(said) if said else "no output"
    verdict.problems.append(
        f"pg_amcheck found corruption in the restored copy (exit {done.returncode}): "
        f"{found[:300]}; the source database may hold it too: run pg_amcheck there"
    )


def _marker(cluster: ScratchCluster, dsn: str, row: Row, verdict: Verdict) -> None:
    if not row.marker:
        verdict.checked.append("no marker was recorded for it")
        return
    with cluster.connect(_database(dsn)) as conn:
        if has_marker(conn, row.marker):
            verdict.checked.append("the marker written before it is there")
        else:
            verdict.problems.append(
                f"the marker row {row.marker} written before the backup is missing"
            )


def _tables(
    engine: Engine, cluster: ScratchCluster, row: Row, verdict: Verdict
) -> None:
    if not row.tables:
        return
    expected: dict[str, dict[str, object]] = json.loads(row.tables)
    checksums = getattr(engine, "checksums", None)
    if not callable(checksums):
        return
    found: dict[str, dict[str, object]] = checksums(
        cluster.url(_database(engine.context.dsn)), None, expected
    )
    wrong = [
        name
        for name, facts in expected.items()
        if found.get(name) != facts and not name.startswith("verger.")
    ]
    if wrong:
        names = ", ".join(sorted(wrong)[:5])
        verdict.problems.append(
            f"{len(wrong)} {'table differs' if len(wrong) == 1 else 'tables differ'} "
            f"from what was recorded at backup time ({names})"
        )
    else:
        verdict.checked.append(
            f"all {len(expected)} tables match their row counts and checksums"
        )


def to_verify(store: Store, database: str, backup_id: int | None) -> Row:
    """The backup ``verify`` works on: the one named, or the newest unverified one."""
    if backup_id is not None:
        row = store.backup(backup_id)
        if row is None or row.database != database:
            raise BackupError(
                f"there is no backup #{backup_id}", "see 'verger backup list' for ids"
            )
        if row.status not in ("done", "verified", "unrestorable"):
            raise BackupError(
                f"backup #{backup_id} is {row.status} and cannot be verified",
                "verify a backup that finished; see 'verger backup list'",
            )
        return row
    rows = store.backups(database, "done")
    if not rows:
        raise BackupError(
            "there is no unverified backup to verify",
            "take one with 'verger backup run', or name one: verger backup verify ID",
        )
    return rows[0]
