"""Disaster-recovery drills: RTO and RPO measured, not promised.

A drill writes marker rows to the source continuously, declares an
"incident" at a moment of its choosing, and from then on behaves as if the
source were gone: it restores the newest backup plus every archived WAL
segment into a fresh cluster. RTO is the time from the start of the restore
until the copy accepts a write; RPO is the incident time minus the commit
time of the newest marker the copy holds, that is, the writes a real
incident would have lost. When none of the drill's markers came back, RPO is
counted from the newest data the copy does hold (its newest commit, or the
backup's end), however long before the drill that was.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from verger.backup.cluster import ScratchCluster, clean_stale
from verger.backup.engines.base import (
    Engine,
    EngineBackup,
    Progress,
    RestorePoint,
    no_progress,
)
from verger.backup.markers import (
    SCHEMA,
    MarkerWriter,
    archived_until,
    newest_marker,
    prune,
)
from verger.backup.restore import restorable, unusable
from verger.backup.runs import INTERRUPTED, refuse_missing_repository
from verger.backup.verify import _database, content_error, mark_unrestorable
from verger.errors import Interrupted, VergerError
from verger.state.base import Row, Store, actor

log = logging.getLogger("verger.backup")

KIND = "drill"

Connection = psycopg.Connection[tuple[Any, ...]]


@dataclass(frozen=True)
class DrillResult:
    drill_id: int
    passed: bool
    rto: float | None
    rpo: float | None
    rto_target: float
    rpo_target: float
    backup: str | None
    detail: str
    # When the copy accepted its first write: the end of the RTO.
    writable_at: float | None = None
    # What the RPO figure means, when it is not simply the newest marker's age.
    notes: tuple[str, ...] = ()

    def sentence(self) -> str:
        if self.rto is None or self.rpo is None:
            return f"Drill #{self.drill_id} failed: {self.detail}"
        verdict = "met both targets" if self.passed else "missed a target"
        text = (
            f"Drill #{self.drill_id} {verdict}: RTO {self.rto:.1f}s (target "
            f"{self.rto_target:g}s), RPO {self.rpo:.1f}s (target {self.rpo_target:g}s)"
        )
        # Notes may start with a program's name (pg_dump), so they follow a
        # semicolon rather than begin sentences of their own.
        return "; ".join([text, *self.notes])


def drill(
    engine: Engine,
    store: Store,
    lead: float | None = None,
    progress: Progress = no_progress,
) -> DrillResult:
    """Run one drill against the newest backup and record it.

    Markers are written for ``lead`` seconds before the incident; by default a
    little longer than ``archive_timeout``, so that the RPO measured is what
    archiving really loses rather than an accident of when the drill began.
    """
    context = engine.context
    if lead is None:
        lead = context.section.archive_timeout + 5.0 if engine.pitr else 2.0
    targets = context.section.targets
    for sentence in clean_stale(context.scratch):
        log.warning(sentence)
    _refuse_unready(engine, store)
    drill_id = store.add_drill(context.database, actor(), targets.rto, targets.rpo)
    store.audit(actor(), "drill", None, database=context.database)
    prune(context.dsn, KIND, 7 * 86400)
    writer = MarkerWriter(context.dsn, KIND)
    began = time.time()
    incident: float | None = None
    # The lead is inside the try too: a drill stopped while it writes markers
    # is recorded as interrupted, never left running.
    try:
        writer.start()
        try:
            time.sleep(lead)
        finally:
            # The incident: from here on the source is treated as lost.
            writer.stop()
        incident = time.time()
        durable = _durable(engine, writer)
        skip = unusable(store, context.database)
        result = _recover(
            engine, store, drill_id, (began, incident, durable), progress, skip
        )
    except (VergerError, KeyboardInterrupt) as exc:
        stopped = isinstance(exc, (Interrupted, KeyboardInterrupt))
        store.update_drill(
            drill_id,
            status=INTERRUPTED if stopped else "failed",
            incident_at=incident,
            detail=str(exc) or "interrupted",
            finished_at=time.time(),
        )
        if stopped:
            raise
        return DrillResult(
            drill_id, False, None, None, targets.rto, targets.rpo, None, str(exc)
        )
    _record(store, result, incident)
    log.info(result.sentence())
    return result


def _refuse_unready(engine: Engine, store: Store) -> None:
    """What stops any restore here (setup, not recovery) refused before a drill counts.

    A missing repository, a wrong passphrase or a run_as that cannot read it
    would fail every command alike; recorded as failed drills they would
    fill the report with drills that never ran. The caller's job has already
    run ``engine.preflight``; this lists the repository, which needs the rest.
    """
    refuse_missing_repository(engine, store)


def _durable(engine: Engine, writer: MarkerWriter) -> float | None:
    """The newest marker whose commit was in the archive at the incident."""
    if not engine.pitr:
        return None
    try:
        position = archived_until(engine.context.dsn)
    except VergerError as exc:
        log.warning("Cannot read how far the source's WAL is archived: %s", exc)
        return None
    return None if position is None else writer.newest_before(position)


def _recover(
    engine: Engine,
    store: Store,
    drill_id: int,
    times: tuple[float, float, float | None],
    progress: Progress,
    skip: set[str],
) -> DrillResult:
    """Restore the newest usable backup plus WAL, and measure RTO and RPO.

    ``times`` are when this drill's markers began, the incident, and the
    newest marker whose WAL was archived by the incident. Only this drill's
    markers count, so an earlier drill's never stand in for lost ones; and a
    marker the copy has only because its WAL was archived after the incident
    does not count either, as a real loss would not have had it.
    """
    began, incident, durable = times
    context = engine.context
    targets = context.section.targets
    newest = max(restorable(engine, skip), key=lambda b: b.finished_at)
    point = RestorePoint(label=newest.label, latest=engine.pitr, size=newest.size)
    with ScratchCluster(context.runner, context.scratch, "drill") as cluster:
        started = time.time()
        try:
            engine.restore(point, cluster, progress)
        except VergerError as exc:
            if content_error(exc):
                mark_unrestorable(store, context.database, newest.label, exc.message)
            raise
        database = _database(context.dsn)
        with cluster.connect(database) as conn:
            conn.autocommit = True
            conn.execute(SCHEMA)
            conn.execute(
                "INSERT INTO verger.markers (token, kind) VALUES (%s, 'drill-write')",
                (f"drill-{drill_id}-write",),
            )
            writable = time.time()
            recovered = newest_marker(conn, KIND, since=began)
            held = _newest_held(conn, newest, engine.pitr)
    rto = writable - started
    if recovered is not None and durable is not None:
        recovered = min(recovered, durable)
    notes = _notes(engine.pitr, recovered, held)
    # Without this drill's markers, everything after the copy's newest data is
    # lost, however long before the drill that was.
    rpo = max(0.0, incident - (held if recovered is None else recovered))
    passed = rto <= targets.rto and rpo <= targets.rpo
    detail = "; ".join([_detail(rto, rpo, targets.rto, targets.rpo), *notes])
    return DrillResult(
        drill_id,
        passed,
        rto,
        rpo,
        targets.rto,
        targets.rpo,
        newest.label,
        detail,
        writable_at=writable,
        notes=notes,
    )


def _newest_held(conn: Connection, backup: EngineBackup, pitr: bool) -> float:
    """The commit time of the newest data in the copy, as far as it can be told.

    That is the newest marker of any kind, the last transaction WAL replay
    applied, or the moment the backup's data is from (a dump's snapshot, a
    physical backup's end), whichever is latest.
    """
    times = [backup.finished_at if pitr else backup.started_at]
    row = conn.execute(
        "SELECT extract(epoch FROM max(written_at)) FROM verger.markers"
        " WHERE kind <> 'drill-write'"
    ).fetchone()
    if row is not None and row[0] is not None:
        times.append(float(row[0]))
    if pitr:
        row = conn.execute(
            "SELECT extract(epoch FROM pg_last_xact_replay_timestamp())"
        ).fetchone()
        if row is not None and row[0] is not None:
            times.append(float(row[0]))
    return max(times)


def _notes(pitr: bool, recovered: float | None, held: float) -> tuple[str, ...]:
    notes = []
    if not pitr:
        notes.append(
            "pg_dump has no point-in-time recovery, so RPO is the age of the newest dump"
        )
    elif recovered is None:
        at = time.strftime("%H:%M:%S UTC", time.gmtime(held))
        notes.append(
            "the copy holds none of this drill's markers (their WAL was not"
            " archived by the incident: a lead shorter than archive_timeout, or"
            f" archiving failing); RPO counts from its newest data, at {at}"
        )
    return tuple(notes)


def _detail(rto: float, rpo: float, rto_target: float, rpo_target: float) -> str:
    missed = []
    if rto > rto_target:
        missed.append(f"RTO {rto:.1f}s is over the {rto_target:g}s target")
    if rpo > rpo_target:
        missed.append(f"RPO {rpo:.1f}s is over the {rpo_target:g}s target")
    return "; ".join(missed) or "both targets met"


def _record(store: Store, result: DrillResult, incident: float) -> None:
    assert result.rto is not None and result.rpo is not None
    store.update_drill(
        result.drill_id,
        status="passed" if result.passed else "missed",
        backup_label=result.backup,
        incident_at=incident,
        newest_marker_at=incident - result.rpo,
        writable_at=result.writable_at,
        rto_seconds=result.rto,
        rpo_seconds=result.rpo,
        detail=result.detail,
        finished_at=time.time(),
    )


def report(store: Store, database: str) -> list[Row]:
    return store.drills(database)
