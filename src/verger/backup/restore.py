"""``verger restore``: a backup, plus WAL up to a point, into a new place.

The point is checked against what the repository can reach before anything
is written: a time before the first backup finished, after the newest
commit in the archived WAL (or the newest backup's end, when that is later),
or inside a gap in the archive is refused with the range that can be
restored. A restore never writes over the database it came from.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from verger.backup.cluster import ScratchCluster, clean_stale, free_port
from verger.backup.engines.base import (
    Engine,
    EngineBackup,
    Progress,
    RestorePoint,
    WalSegment,
    no_progress,
    step,
)
from verger.backup.gaps import Gap, find_gaps, newest_commit
from verger.backup.system import Runner, pg_program
from verger.errors import BackupError
from verger.state import Store

log = logging.getLogger("verger.backup")

# A --target starting so is a database to restore into, not a folder.
DATABASE_URL = ("postgresql://", "postgres://")
# A --target written as a URL: only PostgreSQL's schemes name a place to restore.
ANY_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def when(epoch: float | None) -> str:
    if epoch is None:
        return "now"
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def exact(epoch: float | None) -> str:
    """A time as ``when`` says it, with its fraction of a second where it has one.

    Range ends and gap starts are commit times: cut to the second, a time a
    user copies from a message would stop before the commit it names.
    """
    if epoch is None:
        return "now"
    moment = dt.datetime.fromtimestamp(epoch, dt.UTC)
    if not moment.microsecond:
        return when(epoch)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f UTC")


def parse_time(text: str) -> float:
    """Epoch seconds from an ISO 8601 time; without an offset it is local time."""
    try:
        value = dt.datetime.fromisoformat(text.strip().replace(" UTC", "+00:00"))
    except ValueError:
        raise BackupError(
            f"{text!r} is not a time verger can read",
            "write it as ISO 8601, such as '2026-12-03 21:30:00+00:00'",
        ) from None
    if value.tzinfo is None:
        value = value.astimezone()
    return value.timestamp()


@dataclass(frozen=True)
class Reach:
    """What the repository can restore: from ``earliest`` to ``latest``."""

    earliest: float
    latest: float
    backups: list[EngineBackup]
    # The archive as listed once, for the gap checks that follow.
    segments: list[WalSegment] = field(default_factory=list)
    # The newest commit in the archive, where one was found.
    commit: float | None = None

    def ranges(self, gaps: list[Gap]) -> list[tuple[float, float]]:
        """The spans of time a restore can reach: this reach less each gap.

        Each span is closed: its start is a backup's end, its end a commit
        (reached by replaying all the WAL up to it) or a backup's end.
        """
        spans = [(self.earliest, self.latest)]
        for gap in gaps:
            start = -math.inf if gap.broken_from is None else gap.broken_from
            end = math.inf if gap.broken_until is None else gap.broken_until
            cut = [((a, min(b, start)), (max(a, end), b)) for a, b in spans]
            spans = [(a, b) for pair in cut for a, b in pair if a <= b]
        return spans

    def sentence(self, gaps: list[Gap]) -> str:
        """The ranges as a user can type them back, such as "from A to B"."""
        spans = self.ranges(gaps)
        if not spans:
            return "no point in time: WAL is missing right after its backups"
        text = ", and ".join(f"from {exact(a)} to {exact(b)}" for a, b in spans)
        ends_at_gap = any(gap.broken_until is None for gap in gaps)
        return text + (" (a gap follows)" if ends_at_gap else "")


def unusable(store: Store, database: str) -> set[str]:
    """Labels of backups a restore proved unrestorable: never chosen again."""
    return {
        str(row.label)
        for row in store.backups(database, "unrestorable")
        if row.label is not None
    }


def restorable(
    engine: Engine,
    skip: Collection[str] = (),
    listed: list[EngineBackup] | None = None,
) -> list[EngineBackup]:
    """The repository's backups, leaving out failed ones and those named in ``skip``.

    ``listed`` is the repository's listing where the caller has just read it.
    """
    found = [b for b in (engine.backups() if listed is None else listed) if not b.error]
    backups = [b for b in found if b.label not in skip]
    if not backups:
        raise BackupError(
            "the repository holds no backup to restore"
            + (" that a restore has not proved broken" if found else ""),
            "take one with 'verger backup run'",
        )
    return backups


def reach(
    engine: Engine,
    skip: Collection[str] = (),
    commit: bool = True,
    listed: list[EngineBackup] | None = None,
) -> Reach:
    """What the repository can restore, leaving out the backups named in ``skip``.

    Its end is read from the archived WAL (a few archive-get and pg_waldump
    calls); without ``commit`` it is not, for a restore of all the WAL
    (``--latest``), which never names a time, and ends at the newest backup.
    """
    backups = restorable(engine, skip, listed)
    earliest = min(b.finished_at for b in backups)
    latest = max(b.finished_at for b in backups)
    segments = engine.wal() if engine.pitr else []
    # Recovery to a time stops at a commit: a segment archived after the newest
    # commit reaches no later point, and a time past that commit is never reached.
    newest = (
        newest_commit(segments, engine.last_commit) if segments and commit else None
    )
    if newest is not None:
        # Without a commit since the newest backup, its consistent point is
        # still reached: the range never ends before it.
        latest = max(latest, newest)
    return Reach(earliest, latest, backups, segments, newest)


def plan(
    engine: Engine,
    latest: bool,
    to_time: float | None,
    skip: Collection[str] = (),
    verified: Collection[str] = (),
    label: str | None = None,
    listed: list[EngineBackup] | None = None,
) -> RestorePoint:
    """The restore point for ``--latest`` or ``--to-time``, refused if out of reach.

    Backups named in ``skip`` (those proved unrestorable) are never chosen.
    With WAL, ``--latest`` starts from the newest backup in ``verified`` that
    the archive continues without a gap (replay brings it to the same end);
    ``label`` names the backup to start from instead.
    """
    # Only a time is checked against the newest commit: --latest replays it all.
    span = reach(engine, skip, commit=to_time is not None, listed=listed)
    if label is not None:
        span = _only(span, label, skip)
    if to_time is None:
        if engine.pitr and latest:
            _refuse_latest_across_a_gap(engine, span)
        base = _base_for_latest(engine, span, verified)
        return RestorePoint(
            label=base.label, latest=engine.pitr and latest, size=base.size
        )
    if not engine.pitr:
        raise BackupError(
            "the pg_dump engine keeps no WAL, so it cannot restore to a point in time",
            "restore with --latest, or use the pgbackrest engine for point-in-time "
            "recovery",
        )
    gaps = _refuse_unreachable(engine, span, to_time)
    usable = [b for b in span.backups if b.finished_at <= to_time]
    if not usable:
        raise BackupError(
            f"cannot restore to {exact(to_time)}: backup {label} finished after it",
            "pick a later time, or another backup",
        )
    base = max(usable, key=lambda b: b.finished_at)
    end = _replay_end(span, gaps, base)
    if end is not None and to_time >= end:
        # Recovery to a time stops only before a commit later than it (even
        # with recovery_target_inclusive), so at or after the last commit replay
        # can reach it would fail looking for one; replaying all the WAL it can
        # reach, up to the archive's end or a gap, is that very state.
        return RestorePoint(label=base.label, latest=True, size=base.size)
    return RestorePoint(label=base.label, time=to_time, size=base.size)


def _replay_end(span: Reach, gaps: list[Gap], base: EngineBackup) -> float | None:
    """The last commit replay from ``base`` reaches: before its first gap, or the
    archive's newest; None where none was found."""
    ahead = [gap for gap in gaps if _needs(base, gap)]
    if not ahead:
        return span.commit
    return min(ahead, key=lambda gap: gap.first[8:]).broken_from


def _refuse_unreachable(engine: Engine, span: Reach, to_time: float) -> list[Gap]:
    """Refuse a time inside a gap or outside every range the repository reaches;
    the gaps, each broken from the newest commit before it, when it is neither."""
    gaps = find_gaps(span.backups, span.segments, last_commit=engine.last_commit)
    spans = span.ranges(gaps)
    if any(start <= to_time <= end for start, end in spans):
        return gaps
    for gap in gaps:
        start = -math.inf if gap.broken_from is None else gap.broken_from
        end = math.inf if gap.broken_until is None else gap.broken_until
        if start < to_time < end:
            raise BackupError(
                f"cannot restore to {exact(to_time)}: {gap.sentence(exact)}",
                f"pick a time the repository can restore: {span.sentence(gaps)}",
            )
    raise BackupError(
        f"cannot restore to {exact(to_time)}: the repository can restore "
        f"{span.sentence(gaps)}",
        "pick a time in that range, or --latest",
    )


def _only(span: Reach, label: str, skip: Collection[str]) -> Reach:
    """The reach of one named backup: from its end to the end of the archive."""
    chosen = [b for b in span.backups if b.label == label]
    if not chosen:
        why = "a restore proved it broken" if label in skip else "it is not listed"
        raise BackupError(
            f"cannot restore from backup {label}: {why}",
            "see 'verger backup list' for the backups that can be restored",
        )
    return Reach(chosen[0].finished_at, span.latest, chosen, span.segments, span.commit)


def _base_for_latest(
    engine: Engine, span: Reach, verified: Collection[str]
) -> EngineBackup:
    """The newest verified backup whose WAL reaches the archive's end, else the newest.

    Without WAL a backup is its own restore point, so the newest one is taken.
    """
    newest = max(span.backups, key=lambda b: b.finished_at)
    if not engine.pitr:
        return newest
    gaps = find_gaps(span.backups, span.segments)
    proved = [
        b
        for b in span.backups
        if b.label in verified and not any(_needs(b, gap) for gap in gaps)
    ]
    return max(proved, key=lambda b: b.finished_at) if proved else newest


def _needs(backup: EngineBackup, gap: Gap) -> bool:
    """Whether replay from ``backup`` to the archive's end must cross ``gap``."""
    start = backup.wal_stop or backup.wal_start
    return start is None or start[8:] <= gap.last[8:]


def _refuse_latest_across_a_gap(engine: Engine, span: Reach) -> None:
    """--latest would stop at a gap no later backup heals, and look complete."""
    for gap in find_gaps(span.backups, span.segments):
        if gap.broken_until is None:
            raise BackupError(
                f"--latest cannot reach now: {gap.sentence(exact)}",
                _before_the_gap(engine, span, gap),
            )


def _before_the_gap(engine: Engine, span: Reach, gap: Gap) -> str:
    """A hint with a --to-time that recovery can reach: the newest commit before the gap.

    ``plan`` restores that commit's exact time, fraction and all, by replaying
    all the WAL up to the gap: everything the archive holds before it.
    """
    commit = newest_commit(span.segments, engine.last_commit, gap.first)
    if commit is None or commit < span.earliest:
        return (
            "restore with --to-time at a time before the gap (see 'verger backup "
            "list'), and take a new backup"
        )
    return (
        f"restore with --to-time '{exact(commit)}' to get everything up to the gap "
        "(writes after it are not in the archive), and take a new backup"
    )


class TargetCluster(ScratchCluster):
    """A restore's destination folder: kept, and left stopped, when done."""

    def __init__(self, runner: Runner, scratch: Path, data: Path) -> None:
        problem = _target_problem(data)
        if problem:
            raise BackupError(problem, "restore into a new or empty folder")
        super().__init__(runner, scratch, "restore")
        created = not data.exists()
        try:
            runner.check_reachable(data.parent)
            self.data = runner.own(data, 0o700)
        except OSError as exc:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise BackupError(
                f"cannot use {data} as the restore target: {exc.strerror or exc}",
                "restore into a new or empty folder that the database user can write",
            ) from exc
        self.created = created
        self.record(target="folder", created=created)

    def remove(self) -> None:
        self.stop()

    def discard(self) -> None:
        """Stop the server and remove the half-written target: it is no restore."""
        self.stop()
        if self.created:
            shutil.rmtree(self.data, ignore_errors=True)
            return
        for entry in self.data.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def _target_problem(data: Path) -> str | None:
    """Why a folder cannot receive a restore, or None."""
    try:
        if data.exists() and not data.is_dir():
            return f"{data} is a file, not a folder"
        if data.exists() and any(data.iterdir()):
            return f"{data} is not empty"
    except OSError as exc:
        return f"cannot read {data}: {exc.strerror or exc}"
    return None


def check_target_spelling(target: str | None) -> None:
    """Refuse a --target that is neither a folder nor a postgresql:// URL.

    Left alone, ``mysql://x@y/z`` would be a relative folder ``mysql:/x@y/z``
    and an empty string the default folder: neither is what was meant.
    """
    if target is None:
        return
    if not target.strip():
        raise BackupError(
            "--target is empty",
            "name a new folder or an empty database's postgresql:// URL, or leave "
            "--target out to restore under .verger/restores/",
        )
    if ANY_URL.match(target) and not target.startswith(DATABASE_URL):
        scheme = target.split("://", 1)[0]
        raise BackupError(
            f"--target is a {scheme}:// URL, and verger restores only into PostgreSQL",
            "give an empty database's postgresql:// URL, or a new folder",
        )


def refuse_target(engine: Engine, target: str | None) -> None:
    """Refuse a target that cannot receive a restore, before anything is said.

    ``restore`` checks again as it starts; this lets the CLI refuse before it
    names the backup it would restore from.
    """
    check_target_spelling(target)
    if target and target.startswith(DATABASE_URL):
        _refuse_database(engine, target)
    elif target:
        folder = Path(target).resolve()
        _refuse_verger_folder(engine, folder)
        problem = _target_problem(folder)
        if problem:
            raise BackupError(problem, "restore into a new or empty folder")
        engine.context.runner.check_reachable(folder.parent)
        _refuse_uncreatable(folder)


def _refuse_verger_folder(engine: Engine, folder: Path) -> None:
    """Refuse a folder inside the repository, verger's own folder or the scratch.

    Retention, cleanup of stale runs or the next backup would change or remove
    what was restored there, or the restore would change the backups.
    """
    context = engine.context
    places = {
        "the backup repository": context.repository_path(),
        "verger's own folder": (context.root / ".verger").resolve(),
        "the scratch folder": context.scratch,
    }
    for what, place in places.items():
        if place is not None and (folder == place or place in folder.parents):
            raise BackupError(
                f"{folder} is inside {what} ({place})",
                "restore into a new folder outside it, or leave --target out",
            )


def _refuse_uncreatable(folder: Path) -> None:
    """Refuse a folder that cannot be made, by making it and removing it again."""
    if folder.exists():
        return
    missing = [path for path in [folder, *folder.parents] if not path.exists()]
    try:
        folder.mkdir(parents=True)
    except OSError as exc:
        raise BackupError(
            f"cannot create {folder}: {exc.strerror or exc}",
            "restore into a new or empty folder that the database user can write",
        ) from exc
    finally:
        for path in missing:
            with contextlib.suppress(OSError):
                path.rmdir()


def restore(
    engine: Engine,
    point: RestorePoint,
    target: str | None,
    progress: Progress = no_progress,
) -> dict[str, Any]:
    """Restore to ``point`` into a folder (default) or an empty database (a URL)."""
    context = engine.context
    for sentence in clean_stale(context.scratch):
        log.warning(sentence)
    if target and target.startswith(DATABASE_URL):
        return _into_database(engine, point, target, progress)
    folder = Path(target) if target else _default_folder(context.root, context.database)
    started = time.monotonic()
    cluster = TargetCluster(context.runner, context.scratch, folder.resolve())
    try:
        engine.restore(point, cluster, progress)
        reached = _reached(cluster)
        cluster.stop()
        finished = _finish_target(context.runner, cluster.data, not engine.pitr)
        seconds = time.monotonic() - started
        cluster.record(finished=True)
    except BaseException:
        cluster.discard()
        raise
    finally:
        cluster.stop()
        shutil.rmtree(cluster.folder, ignore_errors=True)
    return {
        "backup": point.label,
        "target": str(cluster.data),
        "to_time": point.time,
        "latest": point.latest,
        "recovered_to": reached,
        "seconds": round(seconds, 1),
        **finished,
    }


# Access rules for a restored pg_dump target, whose initdb trusted everyone.
TARGET_HBA = """\
# Written by verger restore: the scratch cluster trusted every connection.
# TYPE  DATABASE     USER  ADDRESS       METHOD
local   all          all                 peer
host    all          all   127.0.0.1/32  scram-sha-256
host    all          all   ::1/128       scram-sha-256
local   replication  all                 peer
host    replication  all   127.0.0.1/32  scram-sha-256
host    replication  all   ::1/128       scram-sha-256
"""
# Settings a restore leaves in postgresql.auto.conf that only the scratch run needs.
SCRATCH_ONLY = ("restore_command", "fsync", "hot_standby", "port")


def _finish_target(runner: Runner, data: Path, logical: bool) -> dict[str, Any]:
    """Make a restored folder safe to start as it is, and say how to start it.

    The copy was recovered with fsync off (or made by initdb --no-sync), so
    it is flushed to disk here; a logical restore's trust-everyone pg_hba.conf
    is replaced; and a free port is written in, so that starting it does not
    collide with the server it came from.
    """
    port = free_port()
    auto = data / "postgresql.auto.conf"
    kept = [
        line
        for line in _lines(auto)
        if line.split("=", 1)[0].strip() not in SCRATCH_ONLY
    ]
    kept.append(f"port = '{port}'")
    _write_as_owner(auto, "\n".join(kept) + "\n")
    if logical:
        _write_as_owner(data / "pg_hba.conf", TARGET_HBA)
    runner.run(
        [pg_program("initdb"), "--sync-only", "-D", str(data)],
        what="initdb --sync-only",
        timeout=3600,
    )
    command = f"{pg_program('pg_ctl')} -D {data} -o '-p {port}' -l {data}/log start"
    if runner.user is not None:
        command = f'su {runner.user.name} -c "{command}"'
    facts: dict[str, Any] = {"port": port, "start_with": command}
    if logical:
        facts["access"] = (
            "pg_hba.conf allows local connections by peer and host connections "
            "by scram-sha-256 password"
        )
    return facts


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def _write_as_owner(path: Path, text: str) -> None:
    """Replace a file of the data folder, owned like the folder, private to it."""
    owner = path.parent.stat()
    path.write_text(text)
    os.chown(path, owner.st_uid, owner.st_gid)
    path.chmod(0o600)


def _default_folder(root: Path, database: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return root / ".verger" / "restores" / f"{database}-{stamp}"


def _reached(cluster: ScratchCluster) -> float | None:
    with cluster.connect() as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM pg_last_xact_replay_timestamp())"
        ).fetchone()
    return None if row is None or row[0] is None else float(row[0])  # type: ignore[arg-type]


def same_database(a: str, b: str) -> bool:
    """Whether two URLs name the same database on the same server.

    The URLs are compared first; where they differ, each server is asked who
    it is, so that another spelling of one server (a port written 05432, a
    host name that resolves to the same address, ``hostaddr=``, a list of
    hosts) is still known for the same one. A server that cannot be reached
    is judged on its URL alone: nothing can be written to it either.
    """
    if _spelled_alike(a, b):
        return True
    one, two = _server_of(a), _server_of(b)
    return one is not None and one == two


def same_server(a: str, b: str) -> bool:
    """Whether two URLs reach the same PostgreSQL server, whatever their databases."""
    one, two = _server_of(a), _server_of(b)
    if one is None or two is None:
        return _spelled_alike(
            make_conninfo(a, dbname="postgres"), make_conninfo(b, dbname="postgres")
        )
    return one[:2] == two[:2]


def _spelled_alike(a: str, b: str) -> bool:
    one, two = conninfo_to_dict(a), conninfo_to_dict(b)
    keys = ("host", "port", "dbname")
    normal = {"localhost": "127.0.0.1", None: "127.0.0.1", "": "127.0.0.1"}
    left = [
        normal.get(str(one.get(k)), one.get(k)) if k == "host" else one.get(k)
        for k in keys
    ]
    right = [
        normal.get(str(two.get(k)), two.get(k)) if k == "host" else two.get(k)
        for k in keys
    ]
    left[1] = left[1] or "5432"
    right[1] = right[1] or "5432"
    return [str(x) for x in left] == [str(x) for x in right]


def _server_of(dsn: str) -> tuple[str, str, str] | None:
    """The server's own identity and the database name, or None if unreachable.

    The identity is the cluster's system identifier where the role may read
    it, else the postmaster's start time and port, which two servers do not
    share. A database that does not exist yet is looked for through the
    server's maintenance database.
    """
    name = str(conninfo_to_dict(dsn).get("dbname") or "postgres")
    for where in (dsn, make_conninfo(dsn, dbname="postgres")):
        try:
            with psycopg.connect(where, connect_timeout=5, autocommit=True) as conn:
                return (*_identity(conn), name)
        except psycopg.Error:
            continue
    return None


def _identity(conn: psycopg.Connection[tuple[Any, ...]]) -> tuple[str, str]:
    try:
        row = conn.execute(
            "select system_identifier::text from pg_control_system()"
        ).fetchone()
        if row is not None:
            return "system", str(row[0])
    except psycopg.Error:
        pass
    row = conn.execute(
        "select pg_postmaster_start_time()::text || ' ' || current_setting('port')"
    ).fetchone()
    return "postmaster", str(row[0] if row else "")


def _into_database(
    engine: Engine, point: RestorePoint, target: str, progress: Progress
) -> dict[str, Any]:
    context = engine.context
    _refuse_database(engine, target)
    started = time.monotonic()
    with ScratchCluster(context.runner, context.scratch, "restore") as cluster:
        engine.restore(point, cluster, progress)
        reached = _reached(cluster)
        name = str(conninfo_to_dict(context.dsn).get("dbname") or "postgres")
        # From here on the target database is being written.
        cluster.record(target="database", database=_where(target))
        step(progress, "copy")
        dump = context.runner.run(
            [
                "sh",
                "-c",
                f'"{pg_program("pg_dump")}" -Fc -d "$SOURCE" | '
                f'"{pg_program("pg_restore")}" --no-owner --no-privileges '
                '--exit-on-error -d "$TARGET"',
            ],
            env={"SOURCE": cluster.url(name), "TARGET": target},
            check=False,
            timeout=24 * 3600,
        )
        if dump.returncode != 0:
            raise context.runner.failure(["pg_restore"], dump.returncode, dump.stderr)
        cluster.record(finished=True)
    return {
        "backup": point.label,
        "target": target,
        "to_time": point.time,
        "latest": point.latest,
        "recovered_to": reached,
        "seconds": round(time.monotonic() - started, 1),
    }


def _refuse_database(engine: Engine, target: str) -> None:
    if same_database(target, engine.context.dsn):
        raise BackupError(
            "the restore target is the database the backups come from",
            "restore into a new, empty database, then switch to it yourself",
        )
    _require_empty(target)


def _where(url: str) -> str:
    """A database URL without its password: which database on which server."""
    params = conninfo_to_dict(url)
    host = params.get("host") or "localhost"
    return f"{params.get('dbname', '?')} on {host}:{params.get('port') or 5432}"


def _require_empty(target: str) -> None:
    from verger.backup.markers import connect

    with connect(target) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
        ).fetchone()
    if row and int(row[0]):  # type: ignore[call-overload]
        raise BackupError(
            "the target database already has tables",
            "restore into a new, empty database (createdb NAME), so nothing is overwritten",
        )
