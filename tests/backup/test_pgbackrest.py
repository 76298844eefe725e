"""The pgBackRest engine against a real PostgreSQL 15 cluster and real pgBackRest.

A pgBackRest backup costs seconds even for a small cluster (it waits for WAL to
be archived, and pgBackRest 2.45 polls each of its queries every 100 ms), so
the tests that only read the repository share one history, built once: setup,
a restart, a full backup, two inserts with a time between them, an incr backup,
a third insert, a WAL switch and a second full backup. The expire test works on
a copy of that repository.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import SCHEMA, Source, postgres_runner

from verger.backup.cluster import ScratchCluster
from verger.backup.engines.base import Context, EngineBackup, RestorePoint
from verger.backup.engines.pgbackrest import PgBackRest, render_config
from verger.config.model import S3, Backup, Repository
from verger.errors import BackupError

pytestmark = pytest.mark.skipif(
    shutil.which("pgbackrest") is None, reason="pgBackRest is not installed"
)

PASSPHRASE = "b3fore-the-flood-7q2xk9"
WRONG = "not-the-passphrase-4mz81"


def engine_for(
    source: Source,
    workdir: Path,
    passphrase: str = PASSPHRASE,
    root: Path | None = None,
) -> PgBackRest:
    runner = postgres_runner()
    runner.secrets = [passphrase]
    section = Backup(
        repository=Repository(path=str(workdir / "repo")),
        passphrase=passphrase,
        run_as=runner.user.name if runner.user else None,
        scratch=str(workdir / "scratch"),
    )
    context = Context(
        app="t",
        database="production",
        dsn=source.url("app"),
        section=section,
        root=root or workdir,
        runner=runner,
        passphrase=passphrase,
    )
    return PgBackRest(context)


def archiving(source: Source, workdir: Path) -> tuple[PgBackRest, list[str]]:
    """An engine whose source archives into its stanza: setup, restart, setup."""
    engine = engine_for(source, workdir)
    first = engine.setup(apply=True)
    source.restart()
    return engine, [*first, "--", *engine.setup(apply=True)]


def switch_and_wait(source: Source, engine: PgBackRest) -> str:
    """Close the current WAL segment and wait until the archive has it."""
    # A switch with nothing written since the last one closes no segment.
    source.sql("SELECT pg_logical_emit_message(false, 'test', 'switch')")
    ((name,),) = source.sql("SELECT pg_walfile_name(pg_switch_wal())")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        last = engine.archive_status().last_archived_wal
        if last is not None and last >= str(name):
            return str(name)
        time.sleep(0.05)
    raise AssertionError(f"segment {name} was not archived within 30 s")


def restored_names(engine: PgBackRest, point: RestorePoint) -> set[str]:
    """Restore into a scratch cluster and read the church names it holds."""
    with ScratchCluster(engine.runner, engine.context.scratch, "restore") as cluster:
        engine.restore(point, cluster)
        with cluster.connect("app") as conn:
            rows = conn.execute("SELECT name FROM churches").fetchall()
    return {str(name) for (name,) in rows}


@dataclass
class History:
    source: Source
    workdir: Path
    engine: PgBackRest
    setup_lines: list[str]
    full: EngineBackup
    incr: EngineBackup
    second: EngineBackup
    between: float
    progress: list[tuple[int, int]]
    switched: str


@pytest.fixture(scope="module")
def history() -> Iterator[History]:
    """One source with setup done, a full and an incr backup, and WAL after both."""
    workdir = Path(tempfile.mkdtemp(prefix="verger-backup-", dir="/tmp"))
    workdir.chmod(0o755)
    source = Source(postgres_runner(), workdir / "pg", "source")
    try:
        source.init()
        source.start(timeout=60, isolated=False)
        source.sql("CREATE DATABASE app", database="postgres")
        source.sql(SCHEMA)
        engine, lines = archiving(source, workdir)

        seen: list[tuple[int, int]] = []
        full = engine.backup("full", lambda done, total: seen.append((done, total)))
        source.sql("INSERT INTO churches (name) VALUES ('first')")
        ((between,),) = source.sql("SELECT extract(epoch FROM clock_timestamp())")
        time.sleep(0.1)
        source.sql("INSERT INTO churches (name) VALUES ('second')")
        incr = engine.backup("incr")
        source.sql("INSERT INTO churches (name) VALUES ('third')")
        switched = switch_and_wait(source, engine)
        second = engine.backup("full")
        yield History(
            source,
            workdir,
            engine,
            lines,
            full,
            incr,
            second,
            float(str(between)),
            seen,
            switched,
        )
    finally:
        source.remove()
        shutil.rmtree(workdir, ignore_errors=True)


def test_setup_turns_archiving_on_after_a_restart(history: History) -> None:
    """Setup asks for a restart while archive_mode is off, then creates and checks."""
    first, _, second = "\n".join(history.setup_lines).partition("\n--\n")
    assert "restart PostgreSQL" in first
    assert "stanza t-production is ready" in first
    assert "check passed" not in first
    assert "check passed" in second
    assert history.source.sql("SHOW archive_mode") == [("on",)]
    assert history.engine.archive_status().archived_count >= 1


def test_setup_without_apply_prints_the_settings(history: History) -> None:
    """Without apply, setup returns the exact SQL and command and changes nothing."""
    engine = history.engine
    before = engine.config_path.stat().st_mtime_ns
    lines = engine.setup(apply=False)
    command = f"--config={engine.config_path} --stanza=t-production archive-push %p"
    assert "ALTER SYSTEM SET archive_mode = 'on';" in lines
    assert any(command in line for line in lines)
    assert "ALTER SYSTEM SET archive_timeout = '60s';" in lines
    assert lines[-1].endswith("stanza-create")
    assert engine.config_path.stat().st_mtime_ns == before


def test_config_file_is_private_to_run_as(history: History) -> None:
    """The config file holds the passphrase, so it is 0600 in a 0700 folder of run_as."""
    path = history.engine.config_path
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.stat().st_uid == history.engine.runner.uid
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert f"repo1-cipher-pass={PASSPHRASE}" in path.read_text().splitlines()


def test_full_then_incr_are_listed_with_prior(history: History) -> None:
    """A full then an incr backup are listed oldest first, the incr naming the full."""
    full, incr, second = history.full, history.incr, history.second
    listed = history.engine.backups()
    assert [(b.label, b.kind, b.prior, b.error) for b in listed] == [
        (full.label, "full", None, None),
        (incr.label, "incr", full.label, None),
        (second.label, "full", None, None),
    ]
    assert listed == [full, incr, second]
    assert full.size and full.repo_size and full.wal_start and full.wal_stop
    assert full.started_at <= full.finished_at <= incr.started_at


def test_backup_reports_progress(history: History) -> None:
    """Progress climbs from pgBackRest's per-file percentages and ends at the size."""
    seen = history.progress
    assert len(seen) > 10
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert seen[-1][0] == seen[-1][1] > 0


def test_unknown_backup_kind_is_refused(history: History) -> None:
    """A kind pgBackRest does not have is refused before anything runs."""
    with pytest.raises(BackupError, match="no backup kind 'weekly'"):
        history.engine.backup("weekly")


def test_backup_refused_by_pgbackrest_fails_in_one_line(
    source: Source, workdir: Path
) -> None:
    """A backup pgBackRest refuses raises its one-line reason and a remedy."""
    engine = engine_for(source, workdir)
    engine.setup(apply=True)
    with pytest.raises(BackupError) as failed:
        engine.backup("full")
    assert failed.value.message == (
        "pgBackRest backup failed: archive_mode must be enabled"
    )
    assert "restart PostgreSQL" in failed.value.hint
    assert engine.backups() == []


def test_restore_latest_replays_wal_after_the_backup(history: History) -> None:
    """A restore of the full to the end of the archive brings back every later row."""
    point = RestorePoint(label=history.full.label, latest=True)
    names = restored_names(history.engine, point)
    assert {"first", "second", "third"} <= names


def test_restore_of_a_backup_alone_stops_at_its_end(history: History) -> None:
    """With neither time nor latest, recovery stops once the backup is consistent."""
    names = restored_names(history.engine, RestorePoint(label=history.full.label))
    assert "church 1" in names
    assert not {"first", "second", "third"} & names


def test_restore_to_a_time_stops_between_two_inserts(history: History) -> None:
    """A point-in-time restore keeps the insert before the time and not the one after."""
    point = RestorePoint(label=history.full.label, time=history.between)
    names = restored_names(history.engine, point)
    assert "first" in names
    assert not {"second", "third"} & names


def test_restore_past_the_archive_says_the_target_was_missed(
    history: History,
) -> None:
    """A time after the newest archived WAL fails with a sentence, not a dead server."""
    point = RestorePoint(label=history.incr.label, time=time.time() + 3600)
    with pytest.raises(BackupError, match="could not reach the recovery target"):
        restored_names(history.engine, point)


def test_wal_lists_segments_and_misses_a_deleted_one(history: History) -> None:
    """wal() lists archived segment names in order and stops listing a deleted one."""
    engine, switched = history.engine, history.switched
    names = [s.name for s in engine.wal()]
    assert switched in names
    assert history.full.wal_start in names
    assert names == sorted(names)
    assert all(len(name) == 24 and int(name, 16) >= 0 for name in names)

    archive = history.workdir / "repo" / "archive" / engine.context.stanza
    (victim,) = archive.glob(f"*/*/{switched}-*")
    aside = victim.with_name("aside")
    victim.rename(aside)
    try:
        assert switched not in [s.name for s in engine.wal()]
    finally:
        aside.rename(victim)


def test_repository_is_reachable_with_free_space(history: History) -> None:
    """A local repository answers and reports the free space of its disk."""
    status = history.engine.repository()
    assert status.reachable, status.problem
    assert status.free_bytes and status.free_bytes > 0
    assert status.details["type"] == "posix"


def test_passphrase_is_never_shown_and_a_wrong_one_is_named(
    history: History,
) -> None:
    """No output shows the passphrase; a wrong one fails in one line saying so."""
    engine, source, workdir = history.engine, history.source, history.workdir
    assert PASSPHRASE not in "\n".join(history.setup_lines)
    for log in (engine.context.state / "log").iterdir():
        assert PASSPHRASE not in log.read_text(errors="replace")

    same_host = engine_for(source, workdir, WRONG)
    with pytest.raises(BackupError) as mismatch:
        same_host.backups()
    new_host = engine_for(source, workdir, WRONG, root=workdir / "elsewhere")
    with pytest.raises(BackupError) as undecryptable:
        new_host.backup("full")
    unreachable = new_host.repository()

    for error in (mismatch.value, undecryptable.value):
        shown = f"{error.message} {error.hint} {error.detail}"
        assert "passphrase" in error.message
        assert "\n" not in error.message
        assert PASSPHRASE not in shown and WRONG not in shown
    assert "could not be decrypted" in undecryptable.value.message
    assert not unreachable.reachable
    assert "passphrase" in (unreachable.problem or "")
    assert engine.backups(), "the right passphrase still reads the repository"


def test_expire_keeps_what_kept_backups_need(
    history: History, caplog: pytest.LogCaptureFixture
) -> None:
    """Expire keeps a kept incr's full, removes a full with its incr, prunes old WAL."""
    full, incr, second = history.full, history.incr, history.second
    copy = history.workdir / "expire"
    copy.mkdir()
    # cp -a keeps the files owned by run_as, who must be able to delete them.
    subprocess.run(["cp", "-a", str(history.workdir / "repo"), str(copy)], check=True)
    engine = engine_for(history.source, copy)
    oldest = min(s.name for s in engine.wal())

    with caplog.at_level(logging.INFO, logger="verger.backup"):
        assert engine.expire([incr.label, second.label]) == []
    assert f"keeping pgBackRest backup {full.label}" in caplog.text
    assert engine.backups() == [full, incr, second]

    assert engine.expire([second.label]) == [full.label, incr.label]
    assert engine.backups() == [second]
    assert second.wal_start is not None
    assert oldest < second.wal_start <= min(s.name for s in engine.wal())
    assert len(history.engine.backups()) == 3, "the original repository is untouched"

    with pytest.raises(BackupError, match="at least one"):
        engine.expire([])


def test_s3_repository_config(workdir: Path) -> None:
    """An S3 repository becomes pgBackRest's s3 options, port and path style included."""
    s3 = S3(
        endpoint="minio.internal:9000",
        bucket="backups",
        prefix="/acme/",
        path_style=True,
        ca_file="/etc/ssl/minio.pem",
        key="AKIA1",
        secret="s3-secret-value",
    )
    context = Context(
        app="t",
        database="production",
        dsn="postgresql:///app",
        section=Backup(repository=Repository(s3=s3)),
        root=workdir,
        runner=postgres_runner(),
        passphrase=PASSPHRASE,
    )
    lines = render_config(context, None).splitlines()
    for line in (
        "repo1-type=s3",
        "repo1-s3-endpoint=minio.internal",
        "repo1-storage-port=9000",
        "repo1-s3-bucket=backups",
        "repo1-s3-region=us-east-1",
        "repo1-path=/acme",
        "repo1-s3-uri-style=path",
        "repo1-storage-ca-file=/etc/ssl/minio.pem",
        "repo1-s3-key=AKIA1",
        "repo1-s3-key-secret=s3-secret-value",
        "[t-production]",
    ):
        assert line in lines
    assert not any(line.startswith("repo1-path=/tmp") for line in lines)


class Steps:
    """A progress listener that records each step begun and the bytes after it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, int]] = []
        self.phase = ""

    def __call__(self, done: int, total: int) -> None:
        self.seen.append((self.phase, done, total))

    def begin(self, phase: str) -> None:
        self.phase = phase


def test_verify_reports_each_step_and_the_bytes_restored(
    history: History, tmp_path: Path
) -> None:
    """Verification names its steps in order (restore, start, amcheck, compare),
    and the restore step climbs in bytes to the backup's size."""
    from verger.backup.verify import verify_backup
    from verger.state import open_store

    store = open_store(".verger/state.db", tmp_path)
    backup_id = store.add_backup("production", "pgbackrest", "full", "test")
    store.update_backup(backup_id, status="done", label=history.full.label)
    steps = Steps()
    verdict = verify_backup(history.engine, store, store.backup(backup_id), steps)

    assert verdict.verified, verdict.problems
    order = [phase for phase, _, _ in steps.seen]
    assert list(dict.fromkeys(order)) == ["restore", "start", "amcheck", "compare"]
    restored = [
        (done, total) for phase, done, total in steps.seen if phase == "restore"
    ]
    assert len(restored) > 5
    assert [done for done, _ in restored] == sorted(done for done, _ in restored)
    total = history.full.size
    assert total and all(t == total for _, t in restored)
    assert restored[-1][0] > total * 0.9
