"""``verger backup``, ``verger restore`` and ``verger dr``: the backup commands.

Backups, restores and drills run in the command's own process (they are long
and the agent only schedules them); one job per database at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from verger.cli.main import Ctx, UsageError, _store, cli, pass_ctx
from verger.config.types import format_duration
from verger.errors import BackupError, RepositoryMissing, VergerError, WrongPassphrase

# What the progress bar says in each step of a job.
PHASES = {
    "backup": "Backup",
    "restore": "Restore",
    "start": "Start and recover",
    "amcheck": "pg_amcheck",
    "compare": "Compare with the backup",
    "copy": "Copy into the database",
}


class _Bar:
    """The job's progress bar: bytes done of the total, labelled with the step."""

    def __init__(self, bar: Callable[..., None]) -> None:
        self.bar = bar

    def __call__(self, done: int, total: int) -> None:
        self.bar(completed=done, total=total)

    def begin(self, phase: str) -> None:
        self.bar(completed=0, total=0, description=PHASES.get(phase, phase))


def _size(value: int | None) -> str:
    if value is None:
        return ""
    size = float(value)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return str(value)


@contextmanager
def _job(c: Ctx, what: str) -> Iterator[tuple[Any, Any, _Bar]]:
    """The engine, the store and a progress callback, under the database's job lock.

    What a killed job left behind is cleaned up first, and SIGTERM or SIGINT
    stops the engine and fails the job in one line.
    """
    from verger.backup import exclusive, make_context, make_engine
    from verger.backup.interrupt import interruptible

    context = make_context(c.loaded)
    engine = make_engine(context)
    engine.preflight()
    store = _store(c)
    with (
        interruptible(what),
        exclusive(context.state, what),
        c.out.progress(what.capitalize(), in_bytes=True) as bar,
    ):
        _tidy(c, context, store)

        yield engine, store, _Bar(bar)


def _tidy(c: Ctx, context: Any, store: Any) -> None:
    """Stop servers and drop half-written restores a killed verger left behind."""
    from verger.backup import tidy

    for sentence in tidy(context, store):
        c.out.warn(sentence)


def _verified(store: Any, engine: Any) -> set[str]:
    """Labels of the backups a restore proved, which retention must respect."""
    rows = store.backups(engine.context.database, "verified")
    return {str(row.label) for row in rows if row.label}


def _alert(c: Ctx, engine: Any, event: str, reason: str) -> None:
    from verger.backup.alerts import send

    send(c.loaded.config.notify, engine, event, reason)


@cli.group()
def backup() -> None:
    """PostgreSQL backups: set up, take, list and verify them."""


@backup.command("setup")
@click.option(
    "--print",
    "print_only",
    is_flag=True,
    help="Change nothing; print what the database needs (for managed databases).",
)
@click.option(
    "--forget-missing",
    is_flag=True,
    help="Record as lost the catalog's backups the repository does not hold, "
    "then set it up.",
)
@pass_ctx
def backup_setup(c: Ctx, print_only: bool, forget_missing: bool) -> None:
    """Configure archiving and the repository for the database."""
    from verger.backup import make_context, make_engine
    from verger.backup.runs import lost_in_setup

    if print_only and forget_missing:
        raise UsageError(
            "--print changes nothing, and --forget-missing changes the catalog",
            "run 'verger backup setup --forget-missing' on its own",
        )
    engine = make_engine(make_context(c.loaded))
    lines = []
    if not print_only:
        lines = lost_in_setup(engine, _store(c), forget_missing)
    lines += engine.setup(apply=not print_only)
    c.out.result({"engine": engine.name, "lines": lines}, "\n".join(lines))


@backup.command("run")
@click.option(
    "--type",
    "kind",
    type=click.Choice(["full", "diff", "incr", "logical"]),
    help="The kind of backup (default: full, or logical for pg_dump).",
)
@click.option("--no-verify", is_flag=True, help="Skip the restore that verifies it.")
@pass_ctx
def backup_run(c: Ctx, kind: str | None, no_verify: bool) -> None:
    """Take a backup now, verify it by restoring it, then apply retention."""
    from verger.backup import apply_retention, take_backup, verify_backup

    with _job(c, "backup") as (engine, store, progress):
        try:
            row = take_backup(engine, store, kind, progress)
        except VergerError as exc:
            _alert(c, engine, "backup_failed", exc.message)
            raise
        c.out.say(
            f"Backup #{row.id} ({row.kind} {row.label}) is done: "
            f"{_size(row.repo_size or row.size)} in the repository."
        )
        verdict = None
        if not no_verify:
            verdict = verify_backup(engine, store, store.backup(row.id), progress)
            c.out.say(verdict.sentence())
            if not verdict.verified:
                _alert(c, engine, "verify_failed", verdict.sentence())
        decided = apply_retention(
            engine, engine.context.section.retention, _verified(store, engine)
        )
        if decided.remove:
            c.out.say(f"Retention removed {', '.join(decided.remove)}.")
    final = store.backup(row.id)
    # The lines said above already name the backup and its status.
    c.out.result(_backup_data(final), None)
    if verdict is not None and not verdict.verified:
        c.out.exit_code = 6


@backup.command("list")
@pass_ctx
def backup_list(c: Ctx) -> None:
    """Backups in the catalog, newest first, with what proved them, and WAL gaps."""
    from verger.backup import make_context, when
    from verger.backup.context import repository_problem

    context = make_context(c.loaded, catalog_only=True)
    store = _store(c)
    _tidy(c, context, store)
    problem: VergerError | None = repository_problem(context.section)
    gaps: list[Any] = []
    if problem is None:
        gaps, problem = _checked_against_repository(c, context, store)
    else:
        # The catalog needs no key and no run_as; the repository does.
        c.out.warn(_unread(problem))
    rows = store.backups(context.database)
    lost = _lost(context, rows, problem)
    c.out.table(
        f"Backups of {context.database}",
        ["#", "label", "kind", "status", "taken", "took", "size", "detail"],
        [
            [
                r.id,
                r.label or "",
                r.kind,
                "missing" if r.id in lost else r.status,
                time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started_at)),
                _took(r),
                _size(r.repo_size or r.size),
                _detail(r, lost),
            ]
            for r in rows
        ],
        data={
            "backups": [_listed_data(r, lost, problem) for r in rows],
            "gaps": [gap.__dict__ for gap in gaps],
            "repository_checked": problem is None,
            "repository_problem": None if problem is None else problem.message,
        },
    )
    for gap in gaps:
        c.out.warn(gap.sentence(when))


def _lost(context: Any, rows: list[Any], problem: VergerError | None) -> set[int]:
    """Ids of the catalog's backups the repository was found not to hold."""
    from verger.backup import engine_name
    from verger.backup.runs import KEPT

    if not isinstance(problem, RepositoryMissing):
        return set()
    name = engine_name(context.section.engine)
    return {r.id for r in rows if r.engine == name and r.status in KEPT}


def _listed_data(
    row: Any, lost: set[int], problem: VergerError | None
) -> dict[str, Any]:
    """A backup as ``list --json`` gives it: a lost one is "missing", never verified."""
    from verger.backup.runs import KEPT

    data = _backup_data(row)
    data["catalog_status"] = row.status
    data["in_repository"] = None
    if row.id in lost:
        data["status"] = "missing"
        data["in_repository"] = False
    elif problem is None and row.status in KEPT:
        data["in_repository"] = True
    return data


def _detail(row: Any, lost: set[int]) -> str:
    detail = str(row.verify_detail or row.detail or "")
    if row.id in lost:
        return (
            f"not in the repository; before: {detail}"
            if detail
            else ("not in the repository")
        )
    return detail


def _took(row: Any) -> str:
    """How long a backup ran; unknown for one whose process died unseen."""
    if row.finished_at:
        return format_duration(round(row.finished_at - row.started_at))
    return "unknown" if row.status == "interrupted" else ""


def _unread(problem: VergerError) -> str:
    return (
        f"{problem.message}, so the repository was not read: the catalog below "
        f"is not checked against it and WAL gaps are not looked for ({problem.hint})"
    )


def _checked_against_repository(
    c: Ctx, context: Any, store: Any
) -> tuple[list[Any], VergerError | None]:
    """Bring the catalog in line with the repository: the WAL archive's gaps, and
    why the repository could not be read (None when it was)."""
    from verger.backup import make_engine, reconcile

    engine = make_engine(context)
    try:
        reconcile(engine, store)
        return _gaps(engine), None
    except WrongPassphrase as exc:
        # As without a passphrase, the catalog is what is left to go by.
        c.out.warn(_unread(exc))
        return [], exc
    except RepositoryMissing as exc:
        if not store.backups(context.database):
            raise
        # The catalog is what is left to go by: show it, the backups the
        # repository should hold marked missing.
        c.out.warn(
            f"{exc.message}; {exc.hint}. The catalog below is unchecked, and "
            "the backups the repository should hold are shown as missing."
        )
        return [], exc
    except BackupError as exc:
        # During an incident the catalog is still worth seeing, whatever stops
        # the repository from being read (permissions, a damaged stanza).
        c.out.warn(
            f"the repository could not be read: {exc.message}; the catalog below "
            f"is unchecked and WAL gaps are not looked for ({exc.hint})"
        )
        return [], exc


def _gaps(engine: Any) -> list[Any]:
    """The archive's gaps, each broken from the newest commit before it."""
    from verger.backup import find_gaps

    if not engine.pitr:
        return []
    return find_gaps(engine.backups(), engine.wal(), last_commit=engine.last_commit)


def _backup_data(row: Any) -> dict[str, Any]:
    fields = (
        "id",
        "label",
        "kind",
        "status",
        "engine",
        "database",
        "actor",
        "started_at",
        "finished_at",
        "size",
        "repo_size",
        "wal_start",
        "wal_stop",
        "verified_at",
        "verify_seconds",
        "verify_detail",
        "detail",
    )
    return {name: row[name] for name in fields}


@backup.command("verify")
@click.argument("backup_id", type=int, required=False)
@pass_ctx
def backup_verify(c: Ctx, backup_id: int | None) -> None:
    """Restore a backup into a scratch cluster and check it (default: newest unverified)."""
    from verger.backup import reconcile, to_verify, verify_backup, when

    with _job(c, "verification") as (engine, store, progress):
        reconcile(engine, store)
        if backup_id is None and not store.backups(engine.context.database, "done"):
            c.out.result(
                {"id": None, "verified": None},
                "There is nothing to verify: every backup is verified or proved "
                "unrestorable (name one to verify it again: verger backup verify ID).",
            )
            return
        if backup_id is not None:
            _existing(store, engine.context.database, backup_id)
        row = to_verify(store, engine.context.database, backup_id)
        verdict = verify_backup(engine, store, row, progress)
        gaps = _gaps(engine)
        if not verdict.verified:
            _alert(c, engine, "verify_failed", verdict.sentence())
    for gap in gaps:
        c.out.warn(gap.sentence(when))
    c.out.result(
        {
            "id": verdict.backup_id,
            "label": verdict.label,
            "verified": verdict.verified,
            "seconds": round(verdict.seconds, 1),
            "checked": verdict.checked,
            "problems": verdict.problems,
            "gaps": [gap.__dict__ for gap in gaps],
        },
        verdict.sentence(),
    )
    # A gap a later backup healed narrows what --to-time reaches; one that
    # nothing heals means no restore reaches now, and fails the command.
    if not verdict.verified or any(gap.broken_until is None for gap in gaps):
        c.out.exit_code = 6


@backup.command("watch")
@pass_ctx
def backup_watch(c: Ctx) -> None:
    """Check archiving, the repository and freshness once; alert on what is new."""
    import json

    from verger.backup import health, make_context, make_engine
    from verger.backup.alerts import firing

    context = make_context(c.loaded)
    engine = make_engine(context)
    store = _store(c)
    _tidy(c, context, store)
    findings = [
        *health.archiving(engine),
        *health.gaps(engine),
        health.repository(engine),
        health.freshness(engine, store),
    ]
    now = firing(findings)
    memory = context.state / "alerts.json"
    before: dict[str, str] = {}
    if memory.exists():
        before = json.loads(memory.read_text() or "{}")
    for event, reason in now.items():
        if event not in before:
            _alert(c, engine, event, reason)
    for event in before:
        if event not in now:
            c.out.say(f"Resolved: {before[event]}")
    memory.parent.mkdir(parents=True, exist_ok=True)
    memory.write_text(json.dumps(now))
    c.out.table(
        "Backup findings",
        ["finding", "status", "message", "hint"],
        [[f.name, f.level, f.message, f.hint] for f in findings],
        data={
            "findings": [f.__dict__ for f in findings],
            "firing": now,
            "sent": [e for e in now if e not in before],
        },
    )
    if now:
        c.out.exit_code = 6


@backup.command("expire")
@pass_ctx
def backup_expire(c: Ctx) -> None:
    """Apply retention now: remove backups no promise needs."""
    from verger.backup import apply_retention, reconcile, when

    with _job(c, "retention") as (engine, store, _):
        reconcile(engine, store)
        decided = apply_retention(
            engine, engine.context.section.retention, _verified(store, engine)
        )
        reconcile(engine, store)
    c.out.result(
        {
            "kept": decided.keep,
            "removed": decided.remove,
            "oldest_point": decided.oldest_point,
        },
        f"Kept {len(decided.keep)}, removed {len(decided.remove)}; restores reach back "
        f"to {when(decided.oldest_point)}.",
    )


@cli.command()
@click.option("--latest", is_flag=True, help="Restore the newest backup and all WAL.")
@click.option("--to-time", "to_time", metavar="TIME", help="Restore to this moment.")
@click.option(
    "--backup",
    "backup_id",
    type=int,
    metavar="ID",
    help="Start from this backup (see 'backup list'); alone: restore it to its end.",
)
@click.option(
    "--target",
    metavar="DIR|URL",
    help="A new data folder, or an empty database's postgresql:// URL "
    "(default: a folder under .verger/restores/).",
)
@pass_ctx
def restore(
    c: Ctx,
    latest: bool,
    to_time: str | None,
    backup_id: int | None,
    target: str | None,
) -> None:
    """Restore the database as it was at a time, or as late as the archive reaches."""
    from verger.backup import parse_time, plan, unusable, when
    from verger.backup import restore as run_restore
    from verger.backup.restore import check_target_spelling, refuse_target
    from verger.backup.runs import holdings
    from verger.backup.verify import content_error, mark_unrestorable

    _require_one_point(latest, to_time, backup_id)
    try:
        moment = parse_time(to_time) if to_time is not None else None
    except VergerError as exc:
        raise UsageError(f"--to-time: {exc.message}", exc.hint) from None
    try:
        check_target_spelling(target)
    except VergerError as exc:
        raise UsageError(exc.message, exc.hint) from None
    with _job(c, "restore") as (engine, store, progress):
        database = engine.context.database
        label = None if backup_id is None else _label_of(store, database, backup_id)
        listed = holdings(engine, store)
        # Everything refusable is refused before the choice is said.
        refuse_target(engine, target)
        skip = unusable(store, database)
        verified = _verified(store, engine)
        point = plan(engine, latest, moment, skip, verified, label, listed)
        _say_choice(c, store, database, point.label, verified, skip)
        store.audit(
            "cli", "restore", None, backup=point.label, to_time=moment, target=target
        )
        try:
            done = run_restore(engine, point, target, progress)
        except VergerError as exc:
            if point.label and content_error(exc):
                mark_unrestorable(store, database, point.label, str(exc))
            raise
    reached = when(done["recovered_to"]) if done["recovered_to"] else "the backup's end"
    human = f"Restored {done['backup']} into {done['target']}, recovered to {reached}"
    if done.get("access"):
        # "pg_hba.conf allows ...": a file's name keeps its case at a sentence's start.
        human += f". Access: {done['access']}"
    if done.get("start_with"):
        human += f". Start it with: {done['start_with']}"
    c.out.result(done, human)


def _require_one_point(
    latest: bool, to_time: str | None, backup_id: int | None
) -> None:
    if latest and to_time is not None:
        raise UsageError(
            "--latest and --to-time contradict each other: give one of them",
            "for example: verger restore --to-time '2026-12-03 21:30:00+00:00'",
        )
    if not latest and to_time is None and backup_id is None:
        raise UsageError(
            "say where to restore to: --latest, --to-time TIME or --backup ID",
            "for example: verger restore --to-time '2026-12-03 21:30:00+00:00'",
        )


def _existing(store: Any, database: str, backup_id: int) -> Any:
    """The catalog's backup #ID of this database; an unknown ID is a usage error."""
    row = store.backup(backup_id)
    if row is None or row.database != database:
        raise UsageError(
            f"there is no backup #{backup_id}", "see 'verger backup list' for ids"
        )
    return row


# Why a backup in the catalog with this status cannot be restored.
NOT_RESTORABLE = {
    "running": "is still running",
    "failed": "failed before it finished",
    "interrupted": "was interrupted before it finished",
    "expired": "was removed from the repository by retention",
}


def _label_of(store: Any, database: str, backup_id: int) -> str:
    row = _existing(store, database, backup_id)
    why = NOT_RESTORABLE.get(row.status)
    if why is not None or not row.label:
        raise BackupError(
            f"backup #{backup_id} {why or 'never finished'}, so it cannot be restored",
            "pick a done or verified backup from 'verger backup list'",
        )
    return str(row.label)


def _say_choice(
    c: Ctx,
    store: Any,
    database: str,
    label: str | None,
    verified: set[str],
    skip: set[str],
) -> None:
    """Say which backup the restore starts from, and what it passed over."""
    for broken in sorted(skip):
        c.out.say(f"Skipping backup {broken}: a restore proved it unrestorable.")
    row = store.backup_by_label(database, label) if label else None
    name = f"#{row.id} ({label})" if row is not None else str(label)
    if label in verified:
        c.out.say(f"Restoring from verified backup {name}.")
    else:
        c.out.warn(
            f"No verified backup fits; restoring from backup {name}, which no "
            "restore has proved yet."
        )


@cli.group()
def dr() -> None:
    """Disaster-recovery drills: measured RTO and RPO."""


# The shortest and longest lead a drill accepts, in seconds.
LEAD = (1.0, 3600.0)


@dr.command("drill")
@click.option(
    "--lead",
    metavar="DURATION",
    help="How long to write markers before the incident "
    "(default: archive_timeout + 5s).",
)
@pass_ctx
def dr_drill(c: Ctx, lead: str | None) -> None:
    """Restore the newest backup plus WAL as if production were lost; measure."""
    from verger.backup import drill
    from verger.config.types import parse_duration

    try:
        seconds = None if lead is None else parse_duration(lead)
    except ValueError as exc:
        raise UsageError(f"--lead: {exc}", "write it like 90s or 2m") from None
    if seconds is not None and not LEAD[0] <= seconds <= LEAD[1]:
        raise UsageError(
            f"--lead {lead} is outside 1s to 1h: the drill writes markers that "
            "long before its incident",
            "give a lead a little longer than backup.archive_timeout, like 90s",
        )
    with _job(c, "drill") as (engine, store, progress):
        result = drill(engine, store, lead=seconds, progress=progress)
        if not result.passed:
            _alert(c, engine, "drill_missed", result.sentence())
    c.out.result(
        {
            "id": result.drill_id,
            "passed": result.passed,
            "rto_seconds": result.rto,
            "rpo_seconds": result.rpo,
            "writable_at": result.writable_at,
            "rto_target": result.rto_target,
            "rpo_target": result.rpo_target,
            "backup": result.backup,
            "detail": result.detail,
        },
        result.sentence(),
    )
    if not result.passed:
        c.out.exit_code = 6


@dr.command("report")
@pass_ctx
def dr_report(c: Ctx) -> None:
    """Past drills against the RTO and RPO targets."""
    from verger.backup.context import backup_section
    from verger.backup.runs import mark_orphans

    database = backup_section(c.loaded).database
    store = _store(c)
    for sentence in mark_orphans(store, database):
        c.out.warn(sentence)
    rows = store.drills(database)
    c.out.table(
        f"Drills of {database}",
        ["#", "when", "status", "RTO", "target", "RPO", "target", "detail"],
        [
            [
                r.id,
                time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started_at)),
                r.status,
                "" if r.rto_seconds is None else f"{r.rto_seconds:.1f}s",
                format_duration(r.rto_target),
                "" if r.rpo_seconds is None else f"{r.rpo_seconds:.1f}s",
                format_duration(r.rpo_target),
                r.detail or "",
            ]
            for r in rows
        ],
        data=[dict(r.data) for r in rows],
    )
