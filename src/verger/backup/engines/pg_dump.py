"""The pg_dump engine: logical backups of databases whose WAL verger cannot reach.

Managed databases rarely let anyone set ``archive_command``, but they all let
a user with read rights run pg_dump. Each backup is one pg_dump custom-format
archive and one manifest, both encrypted, kept in the repository under
``dump/<stanza>/``:

    20261203-213000L.dump       pg_dump -Fc output, encrypted as it streams
    20261203-213000L.manifest   JSON: times, sizes, SHA-256s, every table's checks

The dump never touches the disk in plaintext: pg_dump's output goes through
the encryption straight into the repository. The manifest is written last,
so a backup is listed only once both files are whole; deletion removes the
manifest first for the same reason.

pg_dump reads a snapshot exported by verger's own REPEATABLE READ transaction,
and while it runs verger counts and checksums every table in that same
snapshot. The manifest therefore describes exactly the data in the dump, and
a restore is proved by finding the same counts and checksums again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from verger.backup.cluster import ScratchCluster
from verger.backup.crypt import (
    Decryptor,
    Encryptor,
    Readable,
    Writable,
    decrypt_bytes,
    encrypt_bytes,
    require_passphrase,
    salt_of,
)
from verger.backup.engines.base import (
    Context,
    Engine,
    EngineBackup,
    Progress,
    RepositoryStatus,
    RestorePoint,
    WalSegment,
    no_progress,
    step,
)
from verger.backup.storage import LocalStorage, StoredFile, make_storage
from verger.backup.system import Runner, pg_program
from verger.backup.tables import Connection, TableCheck, checksums, table_checks
from verger.errors import BackupError, ToolError, VergerError, WrongPassphrase

log = logging.getLogger("verger.backup")

NO_PITR = (
    "pg_dump engine: no WAL archiving, so no point-in-time recovery; the RPO is "
    "the time between backups"
)
NO_POINT_IN_TIME = (
    "the pg_dump engine keeps no WAL, so it cannot restore to a point in time; "
    "restore a backup as it was taken, or use the pgbackrest engine"
)
MANIFEST_FORMAT = 1
# A dump without a manifest this much older than now is left by a killed run,
# not one whose manifest is about to be written.
ORPHAN_AGE = 3600.0
# How long pg_dump waits for a table lock (ms) before failing the backup,
# rather than queueing forever behind a long migration.
LOCK_WAIT_MS = 300_000

# Owners and privileges are kept: the source's role names are recorded at
# backup time (pg_roles is readable on managed servers, where pg_dumpall
# --roles-only is not) and made as NOLOGIN roles in the copy, so ownership,
# grants and policies naming a role restore as they were, and row-level
# security behaves as on the source (a table's owner is exempt from it). With
# --no-owner alone, a policy "TO some_role" would still fail the restore.
# What a copy leaves out, and why:
#   --no-tablespaces: the copy has only the default tablespace.
#   --no-subscriptions: a copy must never start replicating from anywhere.
#   --no-security-labels: the copy loads no label provider.
RESTORE_OPTIONS = (
    "--no-tablespaces",
    "--no-subscriptions",
    "--no-security-labels",
    "--exit-on-error",
    "--no-password",
)


@dataclass
class Snapshot:
    """verger's open transaction whose snapshot pg_dump imports."""

    conn: Connection
    id: str
    database: str
    size: int
    server_version: int
    roles: list[str]


@dataclass
class Dumped:
    plain_bytes: int
    plain_sha256: str
    stored_bytes: int
    stored_sha256: str
    tables: dict[str, TableCheck]


class PgDump(Engine):
    """Logical backups with pg_dump; see the module docstring."""

    name = "pg_dump"
    pitr = False
    kinds = ("logical",)

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        self.storage = make_storage(context.section.repository, context.root)
        self.folder = f"dump/{context.stanza}/"
        self._manifests: dict[StoredFile, dict[str, Any]] = {}
        self._written: dict[str, dict[str, Any]] = {}
        self._salts: dict[str, bytes] = {}
        # The salt of the newest manifest read, whose key is already derived:
        # a new backup is sealed under it, so listing the repository costs one
        # key derivation however many backups it holds.
        self._salt: bytes | None = None

    # --- setup -----------------------------------------------------------

    def setup(self, apply: bool) -> list[str]:
        require_passphrase(self.context.passphrase)
        lines = [NO_PITR]
        client, client_text = self._pg_dump_version()
        server, server_text, user, unreadable = self._server_facts()
        if client < server:
            raise BackupError(
                f"pg_dump is version {client_text} and the server runs PostgreSQL "
                f"{server_text}; pg_dump refuses servers newer than itself",
                f"install the PostgreSQL {server} client and server packages "
                f"(postgresql-{server}) here",
            )
        lines.append(
            f"pg_dump {client_text} can dump the server, which runs PostgreSQL "
            f"{server_text}"
        )
        if unreadable:
            shown = ", ".join(unreadable[:5]) + (" …" if len(unreadable) > 5 else "")
            raise BackupError(
                f"the user {user} cannot read {len(unreadable)} tables or sequences "
                f"({shown}), so pg_dump would fail",
                f"GRANT SELECT on them to {user}, or back up as a user that can "
                "read every table",
            )
        lines.append(self._setup_repository(apply))
        return lines

    def _pg_dump_version(self) -> tuple[int, str]:
        done = self.runner.run([pg_program("pg_dump"), "--version"], what="pg_dump")
        found = re.search(r"(\d+)(?:\.(\d+))?", done.stdout)
        if found is None:
            raise BackupError(
                f"cannot read pg_dump's version from {done.stdout.strip()!r}",
                "check the PostgreSQL installation",
            )
        return int(found.group(1)), found.group(0)

    def _server_facts(self) -> tuple[int, str, str, list[str]]:
        query = """
            SELECT format('%I.%I', n.nspname, c.relname)
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p', 'S')
              AND n.nspname NOT IN ('pg_catalog', 'information_schema')
              AND n.nspname NOT LIKE 'pg\\_%'
              AND NOT has_table_privilege(c.oid, 'SELECT')
            ORDER BY 1
        """
        with self._connect() as conn:
            row = conn.execute(
                "SELECT current_setting('server_version_num')::int,"
                " current_setting('server_version'), current_user"
            ).fetchone()
            assert row is not None
            unreadable = [str(name) for (name,) in conn.execute(query).fetchall()]
        number, text, user = int(str(row[0])), str(row[1]), str(row[2])
        return number // 10000, text.split()[0], user, unreadable

    def _setup_repository(self, apply: bool) -> str:
        problem = self.storage.reachable()
        if problem is not None:
            raise BackupError(problem, "fix backup.repository in verger.yml")
        # A repository with backups must open with this passphrase before
        # anything is set up around it; a wrong one raises WrongPassphrase here.
        self.backups()
        if apply and isinstance(self.storage, LocalStorage):
            self.storage.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return f"repository: {self.storage.describe()}"

    # --- backup ----------------------------------------------------------

    def backup(self, kind: str, progress: Progress = no_progress) -> EngineBackup:
        if kind not in self.kinds:
            raise BackupError(
                f"the pg_dump engine has no {kind} backups",
                f"use one of: {', '.join(self.kinds)}",
            )
        require_passphrase(self.context.passphrase)
        self.storage.clean()
        label = self._new_label()
        started = time.time()
        with self._snapshot() as snapshot:
            dumped = self._dump(label, snapshot, progress)
        manifest = self._manifest_for(label, started, snapshot, dumped)
        try:
            self._store_manifest(label, manifest)
        except BaseException:
            self._forget(label)
            raise
        progress(dumped.stored_bytes, dumped.stored_bytes)
        rows = sum(check["rows"] for check in dumped.tables.values())
        log.info(
            "pg_dump backup %s of %s: %d tables, %d rows, %d bytes stored in %.1fs",
            label,
            snapshot.database,
            len(dumped.tables),
            rows,
            dumped.stored_bytes,
            manifest["finished_at"] - started,
        )
        return self._entry(manifest, error=None)

    def _new_label(self) -> str:
        """A UTC timestamp no backup in the repository has yet."""
        taken = {_label_of(f.name) for f in self.storage.list(self.folder)}
        while True:
            label = time.strftime("%Y%m%d-%H%M%SL", time.gmtime())
            if label not in taken:
                return label
            time.sleep(1.0 - time.time() % 1.0 + 0.01)

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[Snapshot]:
        conn = self._connect()
        try:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            row = conn.execute(
                "SELECT pg_export_snapshot(), current_database(),"
                " pg_database_size(current_database()),"
                " current_setting('server_version_num')::int"
            ).fetchone()
            assert row is not None
            roles = conn.execute(
                "SELECT rolname FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY 1"
            ).fetchall()
            snapshot = Snapshot(
                conn,
                str(row[0]),
                str(row[1]),
                int(str(row[2])),
                int(str(row[3])),
                [str(name) for (name,) in roles],
            )
            yield snapshot
        except psycopg.Error as exc:
            raise self._database_error("cannot take a snapshot to dump", exc) from exc
        finally:
            with contextlib.suppress(psycopg.Error):
                conn.rollback()
            conn.close()

    def _dump(self, label: str, snapshot: Snapshot, progress: Progress) -> Dumped:
        """Stream pg_dump through encryption into storage while the tables are checked."""
        step(progress, "backup", snapshot.size)
        checks = _Background(lambda: table_checks(snapshot.conn, beside=True))
        args = [
            pg_program("pg_dump"),
            "--format=custom",
            f"--snapshot={snapshot.id}",
            f"--lock-wait-timeout={LOCK_WAIT_MS}",
            "--no-password",
            f"--dbname={self._conninfo()}",
        ]
        with tempfile.TemporaryFile() as errors:
            process = _spawn(
                self.runner,
                args,
                self._password_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=errors,
            )
            plain = _ReadDigest(_ProgramOutput(process, errors, self._failure))
            sealer = Encryptor(plain, self.context.passphrase, salt=self._salt)
            self._salts[label] = sealer.salt
            stored = _ReadDigest(sealer)
            try:
                self.storage.put(
                    self._dump_name(label),
                    stored,
                    snapshot.size,
                    lambda done, _: progress(done, snapshot.size),
                )
            except BaseException as exc:
                _end(process)
                # A failed check aborts the snapshot's transaction, and pg_dump
                # then fails to import it; the check's error says why.
                cause = checks.cancel(snapshot.conn)
                if cause is not None and isinstance(exc, VergerError):
                    raise cause from exc
                raise
            try:
                tables = checks.result()
            except BaseException:
                self._forget(label)
                raise
        return Dumped(
            plain.count, plain.hexdigest(), stored.count, stored.hexdigest(), tables
        )

    def _manifest_for(
        self, label: str, started: float, snapshot: Snapshot, dumped: Dumped
    ) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "engine": self.name,
            "label": label,
            "kind": "logical",
            "database": snapshot.database,
            "started_at": started,
            "finished_at": time.time(),
            "database_size": snapshot.size,
            "server_version": snapshot.server_version,
            "pg_dump_version": self._pg_dump_version()[1],
            "snapshot": snapshot.id,
            "roles": snapshot.roles,
            "dump": {
                "name": self._dump_name(label),
                "bytes": dumped.plain_bytes,
                "sha256": dumped.plain_sha256,
                "stored_bytes": dumped.stored_bytes,
                "stored_sha256": dumped.stored_sha256,
            },
            "tables": dumped.tables,
        }

    def _forget(self, label: str) -> None:
        """Delete a dump whose backup failed after it was stored (best effort)."""
        with contextlib.suppress(VergerError):
            self.storage.delete(self._dump_name(label))

    def _store_manifest(self, label: str, manifest: dict[str, Any]) -> None:
        data = encrypt_bytes(
            json.dumps(manifest, indent=1, sort_keys=True).encode(),
            self.context.passphrase,
            salt=self._salts.get(label),
        )
        self.storage.put(self._manifest_name(label), _BytesReader(data), len(data))
        # Kept, so recording the backup does not read back and decrypt what it
        # has just written (a key derivation per read).
        self._written[label] = manifest

    # --- listing ---------------------------------------------------------

    def backups(self) -> list[EngineBackup]:
        files = {f.name: f for f in self.storage.list(self.folder)}
        found: list[EngineBackup] = []
        for file in files.values():
            if not file.name.endswith(".manifest"):
                continue
            try:
                manifest = self._read_manifest(file)
            except WrongPassphrase:
                raise
            except BackupError as exc:
                found.append(_unreadable(file, exc))
                continue
            dump = files.get(manifest["dump"]["name"])
            found.append(self._entry(manifest, _dump_problem(manifest, dump)))
        return sorted(found, key=lambda b: (b.started_at, b.label))

    def tables(self, label: str) -> dict[str, TableCheck]:
        """Every table's row count and checksum recorded when ``label`` was taken."""
        manifest = self._written.get(label) or self._manifest(label)
        tables: dict[str, TableCheck] = manifest["tables"]
        return tables

    def checksums(
        self,
        dsn: str,
        database: str | None = None,
        recorded: Mapping[str, TableCheck] | None = None,
    ) -> dict[str, TableCheck]:
        """The same checks on any database, such as a restored copy, to compare."""
        return checksums(dsn, database, recorded)

    def _manifest(self, label: str) -> dict[str, Any]:
        name = self._manifest_name(label)
        for file in self.storage.list(name):
            if file.name == name:
                return self._read_manifest(file)
        raise BackupError(
            f"the repository holds no pg_dump backup {label}",
            "see 'verger backup list' for the backups there are",
        )

    def _read_manifest(self, file: StoredFile) -> dict[str, Any]:
        cached = self._manifests.get(file)
        if cached is not None:
            return cached
        sink = _BytesWriter()
        self.storage.get(file.name, sink)
        data = sink.getvalue()
        text = decrypt_bytes(data, self.context.passphrase, file.name)
        self._salt = salt_of(data) or self._salt
        try:
            manifest: dict[str, Any] = json.loads(text)
            if manifest.get("format") != MANIFEST_FORMAT:
                raise ValueError(f"format {manifest.get('format')!r}")
        except ValueError as exc:
            raise BackupError(
                f"the manifest {file.name} cannot be read: {exc}",
                "it was written by another verger version; upgrade verger",
            ) from exc
        self._manifests[file] = manifest
        return manifest

    def _entry(self, manifest: dict[str, Any], error: str | None) -> EngineBackup:
        return EngineBackup(
            label=manifest["label"],
            kind=manifest["kind"],
            started_at=float(manifest["started_at"]),
            finished_at=float(manifest["finished_at"]),
            size=int(manifest["database_size"]),
            repo_size=int(manifest["dump"]["stored_bytes"]),
            error=error,
        )

    # --- restore ---------------------------------------------------------

    def restore(
        self,
        point: RestorePoint,
        cluster: ScratchCluster,
        progress: Progress = no_progress,
    ) -> None:
        """Restore a backup as it was taken into a new cluster, and leave it running.

        The database gets the source's name; the source's roles are made
        there without login, so owners and grants restore as they were (see
        ``RESTORE_OPTIONS`` for why, and for what is left out).
        """
        if point.time is not None or point.latest:
            raise BackupError(
                NO_POINT_IN_TIME,
                "restore a backup by its label (or the newest one), or set "
                "backup.engine: pgbackrest where archive_command can be set",
            )
        require_passphrase(self.context.passphrase)
        label = point.label or self._newest()
        manifest = self._manifest(label)
        step(progress, "start")
        cluster.init()
        cluster.start()
        database = str(manifest["database"])
        _create_roles(cluster, [str(role) for role in manifest.get("roles", [])])
        _create_database(cluster, database)
        started = time.monotonic()
        step(progress, "restore", int(manifest["dump"]["stored_bytes"]))
        self._pg_restore(cluster, database, manifest, progress)
        log.info(
            "pg_dump backup %s restored into %s in %.1fs",
            label,
            cluster.folder,
            time.monotonic() - started,
        )

    def _newest(self) -> str:
        usable = [b for b in self.backups() if b.error is None]
        if not usable:
            raise BackupError(
                "the repository holds no pg_dump backup to restore",
                "take one with 'verger backup run'",
            )
        return usable[-1].label

    def _pg_restore(
        self,
        cluster: ScratchCluster,
        database: str,
        manifest: dict[str, Any],
        progress: Progress,
    ) -> None:
        name = str(manifest["dump"]["name"])
        args = [
            pg_program("pg_restore"),
            *RESTORE_OPTIONS,
            f"--dbname={make_conninfo(cluster.dsn, dbname=database)}",
        ]
        with tempfile.TemporaryFile() as errors:
            process = _spawn(
                self.runner,
                args,
                {},
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=errors,
            )
            assert process.stdin is not None
            plain = _WriteDigest(process.stdin)
            opener = Decryptor(plain, self.context.passphrase, name)
            stored = _WriteDigest(opener)
            whole = self._feed(name, stored, opener, process, progress)
            code = process.wait()
            output = _read_errors(errors)
        if code != 0:
            raise self._failure("pg_restore", code, output)
        if not whole:
            raise BackupError(
                f"pg_restore stopped reading {name} before its end",
                "run with --debug for pg_restore's output",
            )
        for line in output.splitlines():
            if line.strip():
                log.warning("pg_restore: %s", self._mask(line.strip()))
        _match(manifest, plain, stored)

    def _feed(
        self,
        name: str,
        stored: _WriteDigest,
        opener: Decryptor,
        process: subprocess.Popen[bytes],
        progress: Progress,
    ) -> bool:
        """Stream the stored dump into pg_restore; False if it stopped reading early."""
        assert process.stdin is not None
        whole = True
        try:
            self.storage.get(name, stored, progress)
            opener.finish()
        except BrokenPipeError:
            whole = False
        except BaseException:
            _end(process)
            raise
        finally:
            with contextlib.suppress(BrokenPipeError):
                process.stdin.close()
        return whole

    # --- the rest of the interface -----------------------------------------

    def wal(self) -> list[WalSegment]:
        return []

    def expire(self, keep: list[str]) -> list[str]:
        """Delete every backup not kept, manifest first; and dumps killed runs left."""
        self.storage.clean()
        files = {f.name: f for f in self.storage.list(self.folder)}
        deleted: list[str] = []
        for label in sorted({_label_of(name) for name in files}):
            if label in keep:
                continue
            manifest = files.get(self._manifest_name(label))
            dump = files.get(self._dump_name(label))
            if manifest is None and dump is not None:
                if time.time() - dump.mtime < ORPHAN_AGE:
                    continue
                log.info("Deleting the dump %s, whose backup never finished", label)
            if manifest is not None:
                self.storage.delete(manifest.name)
            if dump is not None:
                self.storage.delete(dump.name)
            deleted.append(label)
        self._manifests.clear()
        return deleted

    def repository(self) -> RepositoryStatus:
        problem = self.storage.reachable()
        return RepositoryStatus(
            reachable=problem is None,
            problem=problem,
            free_bytes=None if problem else self.storage.free_bytes(),
            details={"location": self.storage.describe(), "folder": self.folder},
        )

    # --- names, connections and failures ---------------------------------

    def _dump_name(self, label: str) -> str:
        return f"{self.folder}{label}.dump"

    def _manifest_name(self, label: str) -> str:
        return f"{self.folder}{label}.manifest"

    def _connect(self) -> Connection:
        try:
            return psycopg.connect(self.context.dsn, connect_timeout=10)
        except psycopg.Error as exc:
            raise self._database_error(
                f"cannot connect to the database {self.context.database}", exc
            ) from exc

    def _database_error(self, action: str, exc: psycopg.Error) -> BackupError:
        text = str(exc).strip()
        first = self._mask(text.splitlines()[0]) if text else type(exc).__name__
        return BackupError(
            f"{action}: {first}",
            f"check databases.{self.context.section.database} in verger.yml and "
            "that the server is up",
        )

    def _conninfo(self) -> str:
        """The DSN for pg_dump without its password, which goes in the environment."""
        params = conninfo_to_dict(self.context.dsn)
        params.pop("password", None)
        return make_conninfo("", **params)

    def _password_env(self) -> dict[str, str]:
        password = conninfo_to_dict(self.context.dsn).get("password")
        return {"PGPASSWORD": str(password)} if password else {}

    def _mask(self, text: str) -> str:
        text = self.runner.mask(text)
        password = conninfo_to_dict(self.context.dsn).get("password")
        return text.replace(str(password), "********") if password else text

    def _failure(self, program: str, code: int, output: str) -> ToolError:
        """A failed pg_dump or pg_restore as one line: its first error, not its last."""
        lines = [line.strip() for line in self._mask(output).splitlines()]
        lines = [line for line in lines if line]
        first = next((line for line in lines if "error:" in line), None)
        shown = first or (lines[-1] if lines else "no output")
        return ToolError(
            f"{program} failed (exit {code}): {shown[:300]}",
            "run with --debug for its full output",
            detail="\n".join(lines[-40:]),
        )


def _label_of(name: str) -> str:
    return name.rsplit("/", 1)[-1].split(".", 1)[0]


def _unreadable(file: StoredFile, exc: VergerError) -> EngineBackup:
    return EngineBackup(
        label=_label_of(file.name),
        kind="logical",
        started_at=file.mtime,
        finished_at=file.mtime,
        error=str(exc),
    )


def _dump_problem(manifest: dict[str, Any], dump: StoredFile | None) -> str | None:
    expected = int(manifest["dump"]["stored_bytes"])
    if dump is None:
        return f"its dump {manifest['dump']['name']} is missing from the repository"
    if dump.size != expected:
        return f"its dump is {dump.size} bytes in the repository, not {expected}"
    return None


def _match(manifest: dict[str, Any], plain: _WriteDigest, stored: _WriteDigest) -> None:
    """The streamed dump must be the one the manifest describes, byte for byte."""
    facts = manifest["dump"]
    if (stored.count, stored.hexdigest()) != (
        facts["stored_bytes"],
        facts["stored_sha256"],
    ) or (plain.count, plain.hexdigest()) != (facts["bytes"], facts["sha256"]):
        raise BackupError(
            f"the dump {facts['name']} is not the one its manifest describes",
            "the repository was altered; restore another backup",
        )


def _create_roles(cluster: ScratchCluster, roles: list[str]) -> None:
    """Make the source's roles in the copy, unable to log in, for owners and grants."""
    with cluster.connect() as conn:
        conn.autocommit = True
        existing = {
            str(name) for (name,) in conn.execute("SELECT rolname FROM pg_roles")
        }
        for role in roles:
            if role not in existing:
                conn.execute(
                    sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role))
                )


def _create_database(cluster: ScratchCluster, database: str) -> None:
    with cluster.connect() as conn:
        conn.autocommit = True
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if exists is None:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(
                    sql.Identifier(database)
                )
            )


def _spawn(
    runner: Runner,
    args: Sequence[str],
    env: Mapping[str, str],
    *,
    stdin: int,
    stdout: int,
    stderr: IO[bytes],
) -> subprocess.Popen[bytes]:
    """Start a program as the runner's user, dying with verger, with pipes."""
    try:
        return subprocess.Popen(
            list(args),
            env=runner.environment(env),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            **runner.spawn(),
        )
    except FileNotFoundError:
        raise ToolError(
            f"{args[0]} is not installed", "run scripts/setup.sh to install it"
        ) from None


def _end(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()


def _read_errors(errors: IO[bytes]) -> str:
    errors.seek(0)
    return errors.read().decode(errors="replace")


class _ProgramOutput:
    """A program's stdout that raises at its end if the program failed.

    Raising before the end is reached means the encryption never seals a last
    chunk, so the storage write fails and nothing is listed.
    """

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        errors: IO[bytes],
        failure: Callable[[str, int, str], ToolError],
    ) -> None:
        assert process.stdout is not None
        self.process = process
        self.stdout = process.stdout
        self.errors = errors
        self.failure = failure

    def read(self, size: int = -1) -> bytes:
        data = self.stdout.read(size)
        if data:
            return data
        code = self.process.wait()
        if code != 0:
            raise self.failure("pg_dump", code, _read_errors(self.errors))
        return b""


class _ReadDigest:
    """Counts and hashes what is read through it."""

    def __init__(self, inner: Readable) -> None:
        self.inner = inner
        self.digest = hashlib.sha256()
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size)
        self.digest.update(data)
        self.count += len(data)
        return data

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


class _WriteDigest:
    """Counts and hashes what is written through it."""

    def __init__(self, inner: Writable) -> None:
        self.inner = inner
        self.digest = hashlib.sha256()
        self.count = 0

    def write(self, data: bytes) -> int:
        self.inner.write(data)
        self.digest.update(data)
        self.count += len(data)
        return len(data)

    def hexdigest(self) -> str:
        return self.digest.hexdigest()


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.offset = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self.data) if size < 0 else self.offset + size
        out = bytes(self.data[self.offset : end])
        self.offset += len(out)
        return out


class _BytesWriter:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def getvalue(self) -> bytes:
        return b"".join(self.parts)


class _Background:
    """The table checks, run in a thread on the snapshot's connection."""

    def __init__(self, work: Callable[[], dict[str, TableCheck]]) -> None:
        self.value: dict[str, TableCheck] | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(work,), daemon=True)
        self.thread.start()

    def _run(self, work: Callable[[], dict[str, TableCheck]]) -> None:
        try:
            self.value = work()
        except BaseException as exc:
            self.error = exc

    def result(self) -> dict[str, TableCheck]:
        self.thread.join()
        failure = self.failure()
        if failure is not None:
            raise failure from self.error
        if self.error is not None:
            raise self.error
        assert self.value is not None
        return self.value

    def failure(self) -> BackupError | None:
        """The checks' own database error as a sentence; None if none or cancelled."""
        if not isinstance(self.error, psycopg.Error) or isinstance(
            self.error, psycopg.errors.QueryCanceled
        ):
            return None
        text = str(self.error).strip() or type(self.error).__name__
        return BackupError(
            f"cannot count and checksum the tables: {text.splitlines()[0]}",
            "check that the backup user can read every table",
        )

    def cancel(self, conn: Connection) -> BackupError | None:
        """Stop the checks; return their own error, the likelier root cause."""
        if self.thread.is_alive():
            with contextlib.suppress(psycopg.Error):
                conn.cancel_safe(timeout=10)
        self.thread.join()
        return self.failure()
