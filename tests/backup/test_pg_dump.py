"""The pg_dump engine against real PostgreSQL: dumps, restores, damage, S3."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import Source, backup_config, postgres_runner, verger

from verger.backup import crypt
from verger.backup.cluster import ScratchCluster
from verger.backup.crypt import DamagedFile
from verger.backup.engines import pg_dump as pg_dump_engine
from verger.backup.engines.base import Context, RestorePoint
from verger.backup.engines.pg_dump import NO_PITR, NO_POINT_IN_TIME, PgDump
from verger.backup.storage import LocalStorage, S3Storage, Storage
from verger.backup.tables import NICENESS, checksums, table_checks
from verger.config.model import S3, Backup, Repository
from verger.errors import BackupError, VergerError, WrongPassphrase

P = "pg-dump test passphrase 5b1e"
RUN_AS = "postgres" if os.geteuid() == 0 else None


def make_context(
    workdir: Path,
    source: Source,
    passphrase: str = P,
    repository: Repository | None = None,
    dsn: str | None = None,
) -> Context:
    runner = postgres_runner()
    runner.secrets = [passphrase]
    section = Backup(
        engine="pg_dump",
        repository=repository or Repository(path=str(workdir / "repo")),
        passphrase=passphrase,
        run_as=RUN_AS,
    )
    return Context(
        app="t",
        database="production",
        dsn=dsn or source.url("app"),
        section=section,
        root=workdir,
        runner=runner,
        passphrase=passphrase,
    )


def grow(source: Source, rows: int = 60_000) -> None:
    """Make the dump several MiB, so pg_dump is still writing at the first progress."""
    source.sql(
        "CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL);"
        f"INSERT INTO notes (body) SELECT md5(g::text) || md5((g * 7)::text)"
        f" || md5((g * 13)::text) FROM generate_series(1, {rows}) g"
    )


@contextlib.contextmanager
def restored(context: Context, engine: PgDump, label: str) -> Iterator[ScratchCluster]:
    """A scratch cluster holding ``label``, removed when the block ends."""
    with ScratchCluster(context.runner, context.scratch, "restore") as cluster:
        engine.restore(RestorePoint(label=label), cluster)
        yield cluster


def stored_dump(workdir: Path, label: str) -> Path:
    return workdir / "repo" / "dump" / "t-production" / f"{label}.dump"


def test_round_trip_restores_every_row(workdir: Path, source: Source) -> None:
    """A backup restored into a scratch cluster has the source's tables, rows and
    checksums, recorded in the manifest, and the copy is left running for writes."""
    context = make_context(workdir, source)
    engine = PgDump(context)
    before = checksums(source.url("app"))

    taken = engine.backup("logical")

    assert taken.kind == "logical" and taken.label.endswith("L")
    assert [b.label for b in engine.backups()] == [taken.label]
    assert engine.backups()[0].error is None
    assert engine.tables(taken.label) == before
    assert before["public.members"]["rows"] == 5000
    with restored(context, engine, taken.label) as cluster:
        assert checksums(cluster.url("app")) == before
        assert engine.checksums(cluster.url(), "app") == before
        with cluster.connect("app") as conn:
            conn.execute("INSERT INTO churches (name) VALUES ('new')")
            owner = conn.execute(
                "SELECT tableowner FROM pg_tables WHERE tablename = 'members'"
            ).fetchone()
        assert owner == (cluster.superuser,)


def test_each_table_is_checked_with_the_method_its_backup_recorded(
    workdir: Path, source: Source
) -> None:
    """Tables are checksummed by record hash, and a table with a column type that
    has no hash function (point, json) by its text form; a restored copy is
    checked with each table's recorded method, so checks recorded before there
    was a choice (no method, text) still match, and a changed row does not."""
    source.sql(
        "CREATE TABLE places (id int PRIMARY KEY, at point, extra json);"
        "INSERT INTO places SELECT g, point(g, g), '{}' FROM generate_series(1, 50) g"
    )
    context = make_context(workdir, source)
    engine = PgDump(context)

    taken = engine.backup("logical")
    recorded = engine.tables(taken.label)

    assert recorded["public.members"]["method"] == "record"
    assert "method" not in recorded["public.places"]
    with restored(context, engine, taken.label) as cluster:
        url = cluster.url("app")
        assert checksums(url, None, recorded) == recorded
        as_text = {n: {"rows": c["rows"], "checksum": ""} for n, c in recorded.items()}
        old_style = checksums(url, None, as_text)  # type: ignore[arg-type]
        assert all("method" not in facts for facts in old_style.values())
        assert old_style["public.places"] == recorded["public.places"]
        assert old_style["public.members"] != recorded["public.members"]
        with cluster.connect("app") as conn:
            conn.execute("UPDATE members SET full_name = full_name || 'x' WHERE id = 7")
        changed = checksums(url, None, recorded)
        assert changed["public.members"]["rows"] == recorded["public.members"]["rows"]
        assert changed["public.members"] != recorded["public.members"]


def test_the_checks_beside_a_dump_yield_the_cpu_to_it(source: Source) -> None:
    """Beside a dump the table checks run without parallel workers, with their
    backend at a lowered CPU priority (the server runs here, found by its socket
    or by the client's loopback port, and verger as root may lower it), and JIT
    is off for every check; the sums are the same either way."""
    seen = {}
    socket_url = source.url("app")
    loopback_url = f"postgresql://{source.superuser}@127.0.0.1:{source.port}/app"
    for how, url, beside in (
        ("alone", socket_url, False),
        ("socket", socket_url, True),
        ("loopback", loopback_url, True),
    ):
        with psycopg.connect(url) as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            found = table_checks(conn, beside=beside)
            pid = conn.info.backend_pid
            seen[how] = (
                found,
                conn.execute("SHOW max_parallel_workers_per_gather").fetchone(),
                conn.execute("SHOW jit").fetchone(),
                os.getpriority(os.PRIO_PROCESS, pid),
            )

    assert seen["socket"][0] == seen["loopback"][0] == seen["alone"][0]
    assert seen["alone"][0]["public.members"]["rows"] == 5000
    assert seen["alone"][1:] == (("2",), ("off",), 0)
    assert seen["socket"][1:] == (("0",), ("off",), NICENESS)
    assert seen["loopback"][1:] == (("0",), ("off",), NICENESS)


def test_owners_grants_and_policies_are_restored(workdir: Path, source: Source) -> None:
    """The source's roles come back without login, so a table's owner, its grants
    and a policy naming a role are restored as they were."""
    source.sql(
        "CREATE ROLE app_owner NOLOGIN; CREATE ROLE reader LOGIN;"
        "ALTER TABLE members OWNER TO app_owner;"
        "GRANT SELECT ON churches TO reader;"
        "ALTER TABLE members ENABLE ROW LEVEL SECURITY;"
        "CREATE POLICY first_church ON members TO reader USING (church_id = 1)"
    )
    context = make_context(workdir, source)
    engine = PgDump(context)
    taken = engine.backup("logical")

    with restored(context, engine, taken.label) as cluster:
        with cluster.connect("app") as conn:
            facts = conn.execute(
                "SELECT (SELECT tableowner FROM pg_tables WHERE tablename = 'members'),"
                " has_table_privilege('reader', 'churches', 'SELECT'),"
                " (SELECT array_agg(polname) FROM pg_policy),"
                " (SELECT bool_or(rolcanlogin) FROM pg_roles"
                "  WHERE rolname IN ('app_owner', 'reader'))"
            ).fetchone()
        assert facts == ("app_owner", True, ["first_church"], False)
        assert checksums(cluster.url("app")) == engine.tables(taken.label)


def test_a_failing_pg_dump_stores_nothing(workdir: Path, source: Source) -> None:
    """pg_dump failing (here: no right to read a table) fails the backup with its
    first error in one line, and leaves no file and no listed backup."""
    source.sql("CREATE ROLE reader LOGIN; GRANT SELECT ON churches TO reader")
    dsn = source.url("app").replace("postgres@", "reader@")
    engine = PgDump(make_context(workdir, source, dsn=dsn))

    with pytest.raises(VergerError) as caught:
        engine.backup("logical")

    message = str(caught.value)
    assert "permission denied" in message and "\n" not in message
    assert engine.backups() == []
    assert [p for p in (workdir / "repo").rglob("*") if p.is_file()] == []


def test_writes_during_the_dump_are_not_in_it(
    workdir: Path, source: Source, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows written in another session after the snapshot was exported, just
    before pg_dump starts, are neither in the dump nor in its checksums: the
    restore matches the manifest, which matches the data before the writes."""
    grow(source)
    context = make_context(workdir, source)
    engine = PgDump(context)
    before = checksums(source.url("app"))
    real_spawn = pg_dump_engine._spawn
    wrote: list[str] = []

    def write_then_spawn(runner: Any, args: Any, *more: Any, **options: Any) -> Any:
        if Path(args[0]).name == "pg_dump" and not wrote:
            source.sql(
                "INSERT INTO members (church_id, full_name, phone)"
                " SELECT 1, 'late ' || g, '+1000' FROM generate_series(1, 500) g;"
                "DELETE FROM notes WHERE id > 50000;"
                "CREATE TABLE late (id int)"
            )
            wrote.append(args[0])
        return real_spawn(runner, args, *more, **options)

    monkeypatch.setattr(pg_dump_engine, "_spawn", write_then_spawn)
    taken = engine.backup("logical")

    assert wrote, "pg_dump was never started"
    after = checksums(source.url("app"))
    assert after["public.members"]["rows"] == 5500 and "public.late" in after
    assert engine.tables(taken.label) == before
    with restored(context, engine, taken.label) as cluster:
        assert checksums(cluster.url("app")) == before


def test_a_damaged_dump_is_caught_on_restore(workdir: Path, source: Source) -> None:
    """One flipped byte in the stored dump fails the restore with one line saying
    the file is damaged, not that the passphrase is wrong."""
    context = make_context(workdir, source)
    engine = PgDump(context)
    taken = engine.backup("logical")
    path = stored_dump(workdir, taken.label)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x20
    path.write_bytes(bytes(data))

    with (
        ScratchCluster(context.runner, context.scratch, "restore") as cluster,
        pytest.raises(DamagedFile) as caught,
    ):
        engine.restore(RestorePoint(label=taken.label), cluster)

    message = str(caught.value)
    assert message.startswith(f"the backup file dump/t-production/{taken.label}.dump")
    assert "damaged" in message and "passphrase" not in message
    assert "\n" not in message


def test_a_damaged_manifest_is_listed_with_its_problem(
    workdir: Path, source: Source
) -> None:
    """A backup whose manifest is damaged stays listed, with an error saying so."""
    engine = PgDump(make_context(workdir, source))
    taken = engine.backup("logical")
    manifest = stored_dump(workdir, taken.label).with_suffix(".manifest")
    data = bytearray(manifest.read_bytes())
    data[-5] ^= 0x01
    manifest.write_bytes(bytes(data))

    (listed,) = PgDump(make_context(workdir, source)).backups()
    assert listed.label == taken.label
    assert listed.error is not None and "damaged" in listed.error


def test_a_wrong_passphrase_is_told_apart(workdir: Path, source: Source) -> None:
    """With another passphrase, listing and restoring say the passphrase is wrong."""
    taken = PgDump(make_context(workdir, source)).backup("logical")
    other = make_context(workdir, source, passphrase="another passphrase 99")
    engine = PgDump(other)

    with pytest.raises(WrongPassphrase, match="the passphrase is wrong"):
        engine.backups()
    with (
        ScratchCluster(other.runner, other.scratch, "restore") as cluster,
        pytest.raises(WrongPassphrase) as caught,
    ):
        engine.restore(RestorePoint(label=taken.label), cluster)
    assert "damaged" not in str(caught.value)
    assert "backup.passphrase" in caught.value.hint


def test_a_new_backup_takes_the_listed_salt_so_a_listing_derives_one_key(
    workdir: Path, source: Source
) -> None:
    """A backup taken after the repository was listed is sealed under the newest
    listed backup's salt, each file with its own nonce prefix, so a later command
    opens every manifest with one scrypt derivation; both backups still restore."""
    first = PgDump(make_context(workdir, source)).backup("logical")
    engine = PgDump(make_context(workdir, source))
    engine.backups()
    second = engine.backup("logical")

    headers = [p.read_bytes()[: crypt.HEADER] for p in (workdir / "repo").rglob("*.*")]
    assert len(headers) == 4
    assert len({crypt.salt_of(header) for header in headers}) == 1
    start = len(crypt.MAGIC) + 4 + crypt.SALT
    assert len({header[start : start + crypt.PREFIX] for header in headers}) == 4

    crypt._derive.cache_clear()
    fresh = PgDump(make_context(workdir, source))
    assert [b.label for b in fresh.backups()] == [first.label, second.label]
    assert crypt._derive.cache_info().misses == 1
    with restored(fresh.context, fresh, first.label) as cluster:
        assert checksums(cluster.url("app")) == fresh.tables(first.label)


def test_the_repository_holds_no_plaintext(workdir: Path, source: Source) -> None:
    """Neither the stored dump nor the manifest shows a member, a table name or SQL,
    and no other file is left in the repository."""
    engine = PgDump(make_context(workdir, source))
    taken = engine.backup("logical")
    files = sorted(p for p in (workdir / "repo").rglob("*") if p.is_file())
    assert [p.name for p in files] == [f"{taken.label}.dump", f"{taken.label}.manifest"]
    for path in files:
        data = path.read_bytes()
        assert data.startswith(b"VERGER1")
        for word in (b"member 1234", b"+1555", b"members", b"CREATE TABLE", b"PGDMP"):
            assert word not in data, f"{word!r} found in {path.name}"


def test_no_secret_in_errors_logs_or_command_lines(
    workdir: Path, source: Source, caplog: pytest.LogCaptureFixture
) -> None:
    """The passphrase is in no error or log line, and the database password is not
    on pg_dump's command line (it goes in the environment)."""
    caplog.set_level(logging.DEBUG)
    grow(source)
    password = "db-password-d41d8c"
    dsn = source.url("app").replace("postgres@", f"postgres:{password}@")
    context = make_context(workdir, source, dsn=dsn)
    engine = PgDump(context)
    command_lines: list[bytes] = []

    def look(done: int, total: int) -> None:
        command_lines.extend(_command_lines("pg_dump"))

    taken = engine.backup("logical", look)
    assert command_lines, "pg_dump's command line was not seen"
    assert not [line for line in command_lines if password.encode() in line]

    errors: list[VergerError] = []
    stored_dump(workdir, taken.label).write_bytes(b"VERGER1 cut short")
    for passphrase in (P, "another passphrase 99"):
        with ScratchCluster(context.runner, context.scratch, "restore") as cluster:
            try:
                PgDump(make_context(workdir, source, passphrase, dsn=dsn)).restore(
                    RestorePoint(label=taken.label), cluster
                )
            except VergerError as exc:
                errors.append(exc)
    with pytest.raises(VergerError) as refused:
        PgDump(
            make_context(workdir, source, dsn="postgresql://nobody@127.0.0.1:1/x")
        ).backup("logical")
    errors.append(refused.value)

    assert len(errors) == 3
    shown = [f"{e.message} {e.hint} {e.detail}" for e in errors] + [caplog.text]
    for text in shown:
        assert P not in text and password not in text


def _command_lines(program: str) -> list[bytes]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            line = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if Path(line.split(b"\0", 1)[0].decode(errors="replace")).name == program:
            found.append(line)
    return found


def test_point_in_time_is_refused(workdir: Path, source: Source) -> None:
    """A restore to a time, or to the end of WAL, is refused with one sentence and
    nothing is written to the cluster."""
    context = make_context(workdir, source)
    engine = PgDump(context)
    engine.backup("logical")
    for point in (RestorePoint(time=time.time()), RestorePoint(latest=True)):
        with ScratchCluster(context.runner, context.scratch, "restore") as cluster:
            with pytest.raises(BackupError) as caught:
                engine.restore(point, cluster)
            assert str(caught.value) == NO_POINT_IN_TIME
            assert not cluster.data.exists()
    assert NO_POINT_IN_TIME == (
        "the pg_dump engine keeps no WAL, so it cannot restore to a point in time; "
        "restore a backup as it was taken, or use the pgbackrest engine"
    )


KILLED_BACKUP = """
import os, sys, time
from pathlib import Path
from typing import Any
from verger.backup.engines.base import Context
from verger.backup.engines.pg_dump import PgDump
from verger.backup.system import Runner, resolve_user
from verger.config.model import Backup, Repository

workdir, dsn, passphrase, marker = sys.argv[1:5]
run_as = "postgres" if os.geteuid() == 0 else None
section = Backup(
    engine="pg_dump",
    repository=Repository(path=workdir + "/repo"),
    passphrase=passphrase,
    run_as=run_as,
)
context = Context(
    app="t", database="production", dsn=dsn, section=section, root=Path(workdir),
    runner=Runner(resolve_user(run_as), secrets=[passphrase]), passphrase=passphrase,
)

def stall(done, total):
    Path(marker).write_text(str(done))
    time.sleep(120)

PgDump(context).backup("logical", stall)
"""


def test_a_killed_backup_leaves_nothing_listed(workdir: Path, source: Source) -> None:
    """SIGKILL in the middle of a backup leaves no listed backup and no pg_dump
    running; the next backup removes the partial file and is the only one listed."""
    grow(source)
    context = make_context(workdir, source)
    marker = workdir / "stalled"
    script = workdir / "killed_backup.py"
    script.write_text(textwrap.dedent(KILLED_BACKUP))
    process = subprocess.Popen(
        [sys.executable, str(script), str(workdir), context.dsn, P, str(marker)]
    )
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert process.poll() is None, "the backup ended before its first progress"
        assert time.monotonic() < deadline, "the backup made no progress in 60s"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()

    engine = PgDump(context)
    assert engine.backups() == []
    assert LocalStorage(workdir / "repo").list() == []
    partial = [p for p in (workdir / "repo").rglob("*") if p.is_file()]
    assert len(partial) == 1 and ".partial-" in partial[0].name
    _wait_for_no_pg_dump(source)

    taken = engine.backup("logical")
    assert [b.label for b in engine.backups()] == [taken.label]
    left = sorted(p.name for p in (workdir / "repo").rglob("*") if p.is_file())
    assert left == [f"{taken.label}.dump", f"{taken.label}.manifest"]


def _wait_for_no_pg_dump(source: Source) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        sessions = source.sql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump'"
        )
        if sessions == [(0,)]:
            return
        time.sleep(0.1)
    raise AssertionError("pg_dump is still connected after its parent was killed")


def test_expire_deletes_what_is_not_kept(workdir: Path, source: Source) -> None:
    """expire removes every backup not kept, manifest and dump, and an hour-old dump
    a killed run left without a manifest; a fresh one may still be finishing."""
    context = make_context(workdir, source)
    engine = PgDump(context)
    first = engine.backup("logical")
    second = engine.backup("logical")
    folder = workdir / "repo" / "dump" / "t-production"
    old, fresh = folder / "20200101-000000L.dump", folder / "20990101-000000L.dump"
    old.write_bytes(b"VERGER1 orphan")
    fresh.write_bytes(b"VERGER1 orphan")
    os.utime(old, (time.time() - 7200, time.time() - 7200))

    deleted = engine.expire([second.label])

    assert sorted(deleted) == sorted([first.label, "20200101-000000L"])
    assert [b.label for b in engine.backups()] == [second.label]
    assert sorted(p.name for p in folder.iterdir()) == [
        f"{second.label}.dump",
        f"{second.label}.manifest",
        fresh.name,
    ]


def test_setup_reports_versions_and_the_lack_of_pitr(
    workdir: Path, source: Source
) -> None:
    """setup changes nothing on the database and says that there is no PITR and
    which pg_dump will dump which server."""
    engine = PgDump(make_context(workdir, source))
    lines = engine.setup(apply=True)
    assert lines[0] == NO_PITR
    assert any(
        line.startswith("pg_dump 15") and "PostgreSQL 15" in line for line in lines
    )
    assert engine.repository().reachable
    assert engine.wal() == []


def test_setup_names_tables_the_user_cannot_read(workdir: Path, source: Source) -> None:
    """A backup user without SELECT on a table is told which, before a backup fails."""
    source.sql("CREATE ROLE reader LOGIN; GRANT SELECT ON churches TO reader")
    dsn = source.url("app").replace("postgres@", "reader@")
    with pytest.raises(BackupError, match="cannot read 3 tables") as caught:
        PgDump(make_context(workdir, source, dsn=dsn)).setup(apply=False)
    assert "public.members" in str(caught.value)
    assert "GRANT SELECT" in caught.value.hint


# --- storage: a folder and a bucket behave the same ---------------------------


@pytest.fixture(scope="module")
def s3_server() -> Iterator[Any]:
    """One S3 server (moto behind TLS) for this module's S3 tests."""
    try:
        from s3server import S3Server
    except ImportError as exc:  # pragma: no cover - depends on the checkout
        pytest.skip(f"tests/backup/s3server.py cannot be imported: {exc}")
    with S3Server() as server:
        yield server


def s3_config(server: Any, bucket: str) -> S3:
    """A fresh bucket on ``server``, reached over verified TLS, path-style."""
    server.make_bucket(bucket)
    return S3(
        endpoint=server.endpoint,
        bucket=bucket,
        region=server.region,
        prefix="verger/",
        path_style=True,
        ca_file=server.ca_file,
        key=server.key,
        secret=server.secret,
    )


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, workdir: Path) -> Iterator[Storage]:
    """A LocalStorage in a fresh folder, or an S3Storage on a fresh bucket."""
    if request.param == "local":
        yield LocalStorage(workdir / "store")
        return
    server = request.getfixturevalue("s3_server")
    yield S3Storage(s3_config(server, f"b{time.time_ns()}"))


class Failing:
    """A source that yields ``good`` bytes, then fails as pg_dump dying would."""

    def __init__(self, good: int) -> None:
        self.left = good

    def read(self, size: int = -1) -> bytes:
        if self.left <= 0:
            raise BackupError("pg_dump failed (exit 1): connection lost")
        step = min(self.left, size if size > 0 else 1 << 20)
        self.left -= step
        return os.urandom(step)


def test_storage_round_trip(storage: Storage) -> None:
    """put, get, list by prefix and delete work the same in a folder and a bucket."""
    data = os.urandom(3 * 1024 * 1024 + 11)
    seen: list[tuple[int, int]] = []
    assert storage.put("dump/a/1.dump", io.BytesIO(data), len(data)) == len(data)
    storage.put(
        "dump/a/1.manifest", io.BytesIO(b"m"), 1, lambda d, t: seen.append((d, t))
    )
    storage.put("dump/b/2.dump", io.BytesIO(b""), 0)

    listed = storage.list("dump/a/")
    assert [(f.name, f.size) for f in listed] == [
        ("dump/a/1.dump", len(data)),
        ("dump/a/1.manifest", 1),
    ]
    assert all(abs(f.mtime - time.time()) < 120 for f in listed)
    assert seen[-1][0] == 1
    out = io.BytesIO()
    assert storage.get("dump/a/1.dump", out) == len(data)
    assert out.getvalue() == data

    storage.delete("dump/a/1.dump")
    storage.delete("dump/a/1.dump")
    assert [f.name for f in storage.list()] == ["dump/a/1.manifest", "dump/b/2.dump"]
    assert storage.reachable() is None
    with pytest.raises(BackupError, match="not a valid backup file name"):
        storage.put("../x", io.BytesIO(b""))


def test_a_failed_write_is_never_listed(storage: Storage) -> None:
    """A source failing after 20 MiB (a multipart upload on S3) leaves no file
    listed, no temporary file and no open multipart upload; its error comes out
    unchanged."""
    with pytest.raises(BackupError, match="pg_dump failed"):
        storage.put("dump/a/1.dump", Failing(20 * 1024 * 1024), 40 * 1024 * 1024)
    assert storage.list() == []
    if isinstance(storage, LocalStorage):
        assert [p for p in storage.path.rglob("*") if p.is_file()] == []
    if isinstance(storage, S3Storage):
        uploads = storage.client.list_multipart_uploads(Bucket=storage.bucket)
        assert uploads.get("Uploads", []) == []


def test_an_unreachable_bucket_is_one_sentence(workdir: Path) -> None:
    """An S3 endpoint nobody listens on is reported as a sentence, not a traceback."""
    storage = S3Storage(
        S3(endpoint="127.0.0.1:9", bucket="b", path_style=True, key="k", secret="s")
    )
    problem = storage.reachable()
    assert problem is not None and "cannot connect" in problem
    with pytest.raises(BackupError, match="cannot list"):
        storage.list()


def test_round_trip_through_s3(workdir: Path, source: Source, s3_server: Any) -> None:
    """A backup stored in an S3 bucket restores with the source's checksums, and
    expire removes it from the bucket."""
    repository = Repository(s3=s3_config(s3_server, "dumps"))
    context = make_context(workdir, source, repository=repository)
    engine = PgDump(context)
    before = checksums(source.url("app"))

    taken = engine.backup("logical")

    assert [b.label for b in engine.backups()] == [taken.label]
    assert engine.repository().reachable
    with restored(context, engine, taken.label) as cluster:
        assert checksums(cluster.url("app")) == before
    assert engine.expire([]) == [taken.label]
    assert engine.backups() == []


def test_a_restored_folder_starts_as_printed_and_trusts_no_one(
    workdir: Path, source: Source
) -> None:
    """A pg_dump restore into a folder leaves peer and scram-sha-256 access, a
    port of its own in postgresql.auto.conf, and a start command that works."""
    import json
    import shlex

    from verger.backup.system import pg_program

    config = backup_config(workdir, source, engine="pg_dump")
    verger(config, "backup", "setup", check=True)
    verger(config, "backup", "run", "--no-verify", check=True)
    target = workdir / "restored"
    done = verger(config, "--json", "restore", "--backup", "1", "--target", str(target))
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    hba = (target / "pg_hba.conf").read_text()
    assert "trust" not in hba.replace("trusted", "") and "scram-sha-256" in hba
    assert f"port = '{result['port']}'" in (target / "postgresql.auto.conf").read_text()
    assert f"-p {result['port']}" in result["start_with"]
    started = subprocess.run(
        ["sh", "-c", result["start_with"]], capture_output=True, text=True, timeout=120
    )
    try:
        assert started.returncode == 0, started.stdout + started.stderr
    finally:
        stop = f"{pg_program('pg_ctl')} -D {shlex.quote(str(target))} -m fast -w stop"
        postgres_runner().run(["sh", "-c", stop], check=False, timeout=60)


def test_a_missing_or_empty_repository_is_refused_once_it_held_backups(
    workdir: Path, source: Source
) -> None:
    """With the catalog holding pg_dump backups and the repository folder gone
    or empty, 'backup run', 'backup verify' and 'restore --latest' refuse with
    the missing-or-not-mounted line and write nothing there, and 'backup list'
    warns and says the repository was not checked."""
    import json

    config = backup_config(workdir, source, engine="pg_dump")
    verger(config, "backup", "setup", check=True)
    verger(config, "backup", "run", "--no-verify", check=True)
    repo = workdir / "repo"
    repo.rename(workdir / "elsewhere")
    try:
        for empty in (False, True):
            if empty:
                repo.mkdir()
            listed = verger(config, "--json", "backup", "list")
            assert listed.returncode == 0, listed.stdout + listed.stderr
            assert "missing or not mounted" in listed.stderr
            assert json.loads(listed.stdout)["repository_checked"] is False
            for command in (
                ("backup", "run", "--no-verify"),
                ("backup", "verify"),
                ("restore", "--latest", "--target", str(workdir / "copy")),
            ):
                done = verger(config, *command)
                assert done.returncode == 6, (command, done.stdout + done.stderr)
                assert f"the repository at {repo} is missing or not mounted" in (
                    done.stderr
                ), done.stderr
                assert "Traceback" not in done.stderr
                assert repo.exists() is empty
                assert not empty or not any(repo.iterdir())
            assert not (workdir / "copy").exists()
    finally:
        if repo.exists():
            repo.rmdir()
        (workdir / "elsewhere").rename(repo)
    listed = verger(config, "--json", "backup", "list", check=True)
    assert json.loads(listed.stdout)["repository_checked"] is True


def test_backup_run_says_verified_once_and_one_differing_table_in_the_singular(
    workdir: Path, source: Source
) -> None:
    """'backup run' says once that the backup is verified; a verify that finds one
    table unlike its record says '1 table differs', not '1 tables differ'."""
    import json
    import sqlite3

    config = backup_config(workdir, source, engine="pg_dump")
    verger(config, "backup", "setup", check=True)
    done = verger(config, "backup", "run", check=True)
    assert done.stdout.count("is verified") == 1, done.stdout
    state = config.parent / ".verger" / "state.db"
    with contextlib.closing(sqlite3.connect(state)) as db, db:
        (text,) = db.execute("SELECT tables FROM backups WHERE id = 1").fetchone()
        tables = json.loads(text)
        name = next(n for n in sorted(tables) if not n.startswith("verger."))
        tables[name]["rows"] = int(tables[name]["rows"]) + 1
        db.execute("UPDATE backups SET tables = ? WHERE id = 1", (json.dumps(tables),))
    checked = verger(config, "backup", "verify", "1")
    assert checked.returncode == 6, checked.stdout + checked.stderr
    assert f"1 table differs from what was recorded at backup time ({name})" in (
        checked.stdout + checked.stderr
    )
