"""pgBackRest: physical backups, WAL archiving and point-in-time restores.

verger writes one pgBackRest config file per database under its state folder,
points PostgreSQL's ``archive_command`` at it, and runs ``pgbackrest`` as
``backup.run_as`` for everything else, reading ``--output=json`` where the
command has it. The repository is always encrypted with ``backup.passphrase``.

pgBackRest 2.45 can finish with exit code 0 and still say something is wrong
(``info`` reports an unreadable repository as a stanza status, a backup with
page checksum errors carries an ``error`` flag), so every answer is checked,
not only the exit code. Retention is verger's decision: the config keeps every
backup, and ``expire`` removes exactly the sets verger names.

    engine = PgBackRest(context)
    engine.setup(apply=True)
    taken = engine.backup("full")
    engine.restore(RestorePoint(latest=True), cluster)
"""

from __future__ import annotations

import configparser
import contextlib
import json
import logging
import os
import pwd
import re
import shlex
import shutil
import subprocess
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from verger.backup.cluster import ScratchCluster
from verger.backup.engines.base import (
    Context,
    Engine,
    EngineBackup,
    Progress,
    RepositoryStatus,
    RestorePoint,
    WalSegment,
    empty_folder,
    missing_repository,
    no_progress,
    step,
)
from verger.backup.system import pg_program
from verger.children import guarded
from verger.config.model import S3
from verger.errors import BackupError, RepositoryMissing, WrongPassphrase

log = logging.getLogger("verger.backup")

CONFIG_NAME = "pgbackrest.conf"
# How a pgBackRest command is given the passphrase without a file on disk.
CIPHER_PASS_VARIABLE = "PGBACKREST_REPO1_CIPHER_PASS"

# pgBackRest's largest retention count: keep every backup until verger expires it.
KEEP_ALL = 9999999

# "(768KB, 12.34%)" at the end of a "backup file" or "restore file" detail line.
PERCENT = re.compile(r"\(\d+(?:\.\d+)?[KMGTP]?B, (\d+(?:\.\d+)?)%\)")
NEW_LABEL = re.compile(r"new backup label = (\S+)")
ERROR_LINE = re.compile(r"ERROR: \[(\d+)\]: (.*)")
# A commit record in pg_waldump's output, its time printed in UTC.
COMMIT_TIME = re.compile(r"desc: COMMIT (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC")
# The start of another pgBackRest log line (process id and level, or a time).
LOG_PREFIX = re.compile(r"^\s*(?:\d{4}-\d\d-\d\d |P\d\d +[A-Z]+:)")
# An archived segment: 24 hex digits, then "-<sha1>" and an optional compression suffix.
SEGMENT = re.compile(r"^([0-9A-F]{24})-[0-9a-f]{40}(?:\.[a-z0-9]+)?$")

# Server log lines that mean a point-in-time restore could not stop where asked.
TARGET_MISSED = (
    "recovery ended before configured recovery target was reached",
    "requested recovery stop point is before consistent recovery point",
)

# pgBackRest error codes with a remedy of their own.
LOCK_HELD = 50
ARCHIVE_DISABLED = 87


@dataclass(frozen=True)
class Cluster:
    """The facts pgBackRest needs about the source cluster, which must be local."""

    data: str
    port: int
    socket: str
    user: str
    database: str


@dataclass(frozen=True)
class ArchiveStatus:
    """What ``pg_stat_archiver`` says about WAL archiving on the source."""

    archived_count: int
    last_archived_wal: str | None
    last_archived_at: float | None
    failed_count: int
    last_failed_wal: str | None
    last_failed_at: float | None


class PgBackRest(Engine):
    """Drives Debian's pgBackRest (2.45) for one database's stanza."""

    name: ClassVar[str] = "pgbackrest"
    pitr: ClassVar[bool] = True
    kinds: ClassVar[tuple[str, ...]] = ("full", "diff", "incr")

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        self.program = program()
        s3 = context.section.repository.s3
        self.secrets = [context.passphrase, *([s3.secret] if s3 and s3.secret else [])]

    @property
    def config_path(self) -> Path:
        return self.context.state / CONFIG_NAME

    # -- setup ------------------------------------------------------------

    def setup(self, apply: bool) -> list[str]:
        """Write the config, turn archiving on, create the stanza and check it.

        Without ``apply`` nothing changes, and the lines are the settings and
        the command a person must run on the database host.
        """
        settings = self.archive_settings()
        if not apply:
            statements = [
                f"ALTER SYSTEM SET {name} = {quote_literal(value)};"
                for name, value in settings.items()
            ]
            return [
                *statements,
                "SELECT pg_reload_conf();",
                "restart PostgreSQL if archive_mode was off",
                f"then, as {self.user_name}: "
                + shlex.join(self.command("stanza-create")),
            ]

        facts = self.cluster_facts()
        self.refuse_other_owner(facts.data)
        self.refuse_wrong_passphrase(render_config(self.context, facts, secret=False))
        previous = self.read_config()
        lines = [f"wrote {self.write_config(facts)}"]
        try:
            lines += self.apply_setup(settings)
        except BackupError:
            # A wrong passphrase or repository must not break archive_command.
            if previous is not None:
                self.replace_config(previous)
            raise
        return lines

    def refuse_wrong_passphrase(self, text: str) -> None:
        """Refuse, changing nothing, when the repository exists and the passphrase
        cannot open it.

        The config ``text`` is tried from a file of its own, without the
        passphrase, which pgBackRest gets from its environment instead: the
        file archive_command reads is replaced only once the passphrase is
        known to be right, and no second copy of it is written.
        """
        done = self.trial_info(text)
        if undecryptable(done.stdout + done.stderr):
            raise self.passphrase_error()

    def trial_info(self, text: str) -> subprocess.CompletedProcess[str]:
        """``info --output=json`` run with the config ``text``, from a file of
        its own that is removed afterwards (see refuse_wrong_passphrase)."""
        state = self.runner.own(self.context.state, 0o700)
        for folder in ("log", "lock", "spool"):
            self.runner.own(state / folder, 0o700)
        trial = state / f".{CONFIG_NAME}.trial-{os.getpid()}"
        self.write_file(trial, text)
        secret = {CIPHER_PASS_VARIABLE: self.context.passphrase}
        try:
            return subprocess.run(
                [
                    self.program,
                    f"--config={trial}",
                    f"--stanza={self.context.stanza}",
                    "info",
                    "--output=json",
                ],
                capture_output=True,
                timeout=300,
                check=False,
                **{**self.spawn_options(), "env": self.runner.environment(secret)},
            )
        finally:
            trial.unlink(missing_ok=True)

    def setup_holdings(self) -> set[str]:
        """Labels in the repository verger.yml names now, which may not be the
        one the config file written by an earlier setup points at."""
        done = self.trial_info(render_config(self.context, None, secret=False))
        if undecryptable(done.stdout + done.stderr):
            raise self.passphrase_error()
        if done.returncode != 0:
            raise self.failure("info", (done.stdout + done.stderr).splitlines())
        stanzas: list[dict[str, Any]] = parse_json(done.stdout, "info")
        stanza = next((s for s in stanzas if s.get("name") == self.context.stanza), {})
        code = stanza.get("status", {}).get("code")
        if code not in (0, 1, 2):
            message = stanza.get("status", {}).get("message", "unknown")
            raise self.status_error(stanza, code, message)
        return {str(entry["label"]) for entry in stanza.get("backup", [])}

    def apply_setup(self, settings: dict[str, str]) -> list[str]:
        self._refuse_foreign_archiving(settings["archive_command"])
        # The stanza first, so that archive_command never pushes into nothing.
        self.prepare_repository()
        self.run("stanza-create", timeout=300)
        lines = [f"stanza {self.context.stanza} is ready in the repository"]
        archiving = self.set_archiving(settings)
        lines.append(
            "set " + ", ".join(f"{name} = {value}" for name, value in settings.items())
        )
        if not archiving:
            lines.append(
                "archive_mode is still off: restart PostgreSQL to start archiving "
                "(verger does not restart a production database), then run setup again"
            )
            return lines
        self.run("check", timeout=300)
        lines.append("pgbackrest check passed: WAL reaches the repository")
        return lines

    def _refuse_foreign_archiving(self, ours: str) -> None:
        """Never take over an archive_command that feeds another repository."""
        try:
            with psycopg.connect(self.context.dsn, autocommit=True) as conn:
                row = conn.execute("SHOW archive_command").fetchone()
        except psycopg.Error:
            return  # set_archiving reports an unreachable database in full.
        current = str(row[0]) if row else ""
        if current in ("", "(disabled)", ours):
            return
        raise BackupError(
            f"{self.context.database} already archives WAL with another command: "
            f"{self.mask(current)}",
            "if nothing needs it any more (another verger config, another backup "
            "tool), run ALTER SYSTEM RESET archive_command on the database, then "
            "'verger backup setup' again",
        )

    def archive_command(self) -> str:
        return shlex.join([*self.command("archive-push"), "%p"])

    def archive_settings(self) -> dict[str, str]:
        return {
            "archive_mode": "on",
            "archive_command": self.archive_command(),
            "archive_timeout": f"{int(self.context.section.archive_timeout)}s",
        }

    def set_archiving(self, settings: dict[str, str]) -> bool:
        """ALTER SYSTEM the archive settings and reload; True if archiving is on."""
        try:
            with psycopg.connect(self.context.dsn, autocommit=True) as conn:
                for name, value in settings.items():
                    conn.execute(
                        sql.SQL("ALTER SYSTEM SET {} = {}").format(
                            sql.Identifier(name), sql.Literal(value)
                        )
                    )
                conn.execute("SELECT pg_reload_conf()")
                row = conn.execute("SHOW archive_mode").fetchone()
        except psycopg.Error as error:
            raise BackupError(
                f"could not set the archive settings on {self.context.database}: "
                f"{self.mask(first_line(str(error)))}",
                "connect as a superuser, or run setup without apply and have a "
                "superuser set the lines it prints",
            ) from error
        return row is not None and row[0] in ("on", "always")

    def prepare_repository(self) -> None:
        path = self.context.repository_path()
        if path is None:
            return
        self.runner.check_reachable(path)
        if not path.exists():
            self.runner.own(path, 0o750)

    # -- backups ----------------------------------------------------------

    def backup(self, kind: str, progress: Progress = no_progress) -> EngineBackup:
        """Run one backup, report progress from pgBackRest's per-file lines."""
        if kind not in self.kinds:
            raise BackupError(
                f"pgBackRest has no backup kind {kind!r}",
                f"use one of {', '.join(self.kinds)}",
            )
        self.ensure_config(database=True)
        facts = self.saved_facts()
        if facts is not None:
            self.refuse_other_owner(facts.data)
        total = self.database_size()
        step(progress, "backup", total)
        code, output = self.stream(
            ["backup", f"--type={kind}", "--log-level-console=detail"], total, progress
        )
        if code != 0:
            raise self.failure("backup", output)

        match = NEW_LABEL.search("\n".join(output))
        listed = self.backups()
        taken = next((b for b in listed if match and b.label == match[1]), None)
        if taken is None:
            raise BackupError(
                "pgBackRest backup finished but the repository lists no new backup",
                f"see {self.context.state / 'log'} for pgBackRest's log",
            )
        if taken.error:
            raise BackupError(
                f"pgBackRest backup {taken.label} finished with errors: {taken.error}",
                "check the server's disks and pg_amcheck the database, then take "
                "a new full backup",
            )
        final = total or taken.size or 0
        progress(final, final)
        return taken

    def backups(self) -> list[EngineBackup]:
        """Every backup set in the repository, oldest first."""
        stanza = self.info()
        listed = [to_backup(entry) for entry in stanza.get("backup", [])]
        return sorted(listed, key=lambda b: (b.started_at, b.label))

    def info(self) -> dict[str, Any]:
        """This stanza's ``info --output=json``, refusing any status but ok or empty."""
        self.ensure_config()
        done = self.run("info", "--output=json", timeout=300)
        stanzas: list[dict[str, Any]] = parse_json(done.stdout, "info")
        stanza: dict[str, Any] = next(
            (s for s in stanzas if s.get("name") == self.context.stanza), {}
        )
        status = stanza.get("status", {})
        code = status.get("code")
        if code in (0, 2):
            return stanza
        raise self.status_error(stanza, code, status.get("message", "unknown"))

    def status_error(
        self, stanza: dict[str, Any], code: object, message: str
    ) -> BackupError:
        repos = stanza.get("repo", [])
        detail = (
            repos[0].get("status", {}).get("message", message) if repos else message
        )
        if undecryptable(detail):
            return self.passphrase_error()
        if code == 1:
            return self.missing_error() or BackupError(
                f"the repository has no stanza {self.context.stanza} yet",
                "run backup setup first",
            )
        return BackupError(
            f"pgBackRest reports stanza {self.context.stanza} as "
            f"{self.mask(clean(first_line(detail)))}",
            f"see {self.context.state / 'log'} for pgBackRest's log",
        )

    # -- restore ----------------------------------------------------------

    def restore(
        self,
        point: RestorePoint,
        cluster: ScratchCluster,
        progress: Progress = no_progress,
    ) -> None:
        """Restore into ``cluster.data``, then start it and wait for recovery to end."""
        self.ensure_config()
        args = ["restore", f"--pg1-path={cluster.data}", "--archive-mode=off"]
        if point.label:
            args.append(f"--set={point.label}")
        if point.time is not None:
            args += ["--type=time", f"--target={target_time(point.time)}"]
            args.append("--target-action=promote")
        elif not point.latest:
            args += ["--type=immediate", "--target-action=promote"]
        args.append("--log-level-console=detail")

        size = point.size if point.size is not None else self.restore_size(point.label)
        step(progress, "restore", size)
        code, output = self.stream(args, size, progress)
        if code != 0:
            raise self.failure("restore", output)
        step(progress, "start")

        fetch = self.command("archive-get", f"--pg1-path={cluster.data}", "%f", "%p")
        restore_command = shlex.join(fetch)
        # The scratch cluster's small max_connections and max_wal_senders would
        # stop a hot standby's replay; without hot standby PostgreSQL skips that check.
        settings = {"restore_command": restore_command, "hot_standby": "off"}
        try:
            cluster.start(settings=settings)
        except BackupError as error:
            raise self.recovery_error(cluster, point) or error from None

    def restore_size(self, label: str | None) -> int:
        listed = self.backups()
        chosen = [b for b in listed if b.label == label] if label else listed[-1:]
        return (chosen[0].size or 0) if chosen else 0

    def recovery_error(
        self, cluster: ScratchCluster, point: RestorePoint
    ) -> BackupError | None:
        try:
            server_log = cluster.log.read_text(errors="replace")
        except OSError:
            return None
        said = next((phrase for phrase in TARGET_MISSED if phrase in server_log), None)
        if said is None:
            return None
        when = "" if point.time is None else f" {target_time(point.time)}"
        return BackupError(
            f"the restore could not reach the recovery target{when}: PostgreSQL "
            f"says {said}",
            "pick an earlier time after the backup's end (see 'verger backup "
            "list'); a time past the newest commit is never reached",
        )

    # -- WAL, retention, repository ---------------------------------------

    def wal(self) -> list[WalSegment]:
        """Archived segments from ``repo-ls``, oldest first."""
        self.ensure_config()
        done = self.run(
            "repo-ls",
            "--recurse",
            "--output=json",
            f"archive/{self.context.stanza}",
            timeout=300,
        )
        listing: dict[str, dict[str, Any]] = parse_json(done.stdout, "repo-ls")
        segments = []
        for path, entry in listing.items():
            match = SEGMENT.match(path.rpartition("/")[2])
            if match and entry.get("type") == "file":
                segments.append(WalSegment(match[1], float(entry.get("time", 0))))
        return sorted(segments, key=lambda s: (s.name[8:], s.name[:8]))

    def last_commit(self, names: list[str]) -> float | None:
        """The newest commit time in the first of the archived segments ``names``
        that holds a commit, read with pg_waldump from a copy fetched with
        archive-get; None when none can be read."""
        log.debug("Reading the newest commit from WAL segments %s", ", ".join(names))
        self.ensure_config()
        scratch = self.runner.own(self.context.scratch, 0o755)
        folder = self.runner.own(scratch / f"wal-{os.getpid()}", 0o700)
        try:
            for name in names:
                found = self._commits(name, folder)
                if found:
                    return max(found)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return None

    def _commits(self, name: str, folder: Path) -> list[float]:
        try:
            self.run("archive-get", name, str(folder / name), timeout=300)
        except BackupError as exc:
            log.warning("Cannot fetch WAL segment %s: %s", name, exc)
            return []
        done = self.runner.run(
            [pg_program("pg_waldump"), str(folder / name)],
            env={"TZ": "UTC"},
            check=False,
            timeout=300,
        )
        (folder / name).unlink(missing_ok=True)
        return [
            datetime.fromisoformat(match[1]).replace(tzinfo=UTC).timestamp()
            for match in COMMIT_TIME.finditer(done.stdout)
        ]

    def expire(self, keep: list[str]) -> list[str]:
        """Expire every set not kept nor needed by a kept one, then the WAL they held."""
        present = self.backups()
        kept = self.needed(present, set(keep))
        doomed = [b.label for b in present if b.label not in kept]
        if not doomed:
            return []
        if not kept:
            raise BackupError(
                "refusing to expire every backup: pgBackRest keeps at least one full",
                "keep at least one backup",
            )

        for label in doomed:
            if label in {b.label for b in self.backups()}:
                log.info("expiring pgBackRest backup %s", label)
                self.run(
                    "expire", f"--set={label}", f"--repo1-retention-full={KEEP_ALL}"
                )
        left = self.backups()
        still = [b.label for b in left if b.label in doomed]
        if still:
            raise BackupError(
                f"pgBackRest left backups it was told to expire: {', '.join(still)}",
                f"see {self.context.state / 'log'} for pgBackRest's log",
            )

        # Retention that keeps every full left, so only WAL older than all goes.
        fulls = sum(1 for b in left if b.kind == "full")
        self.run("expire", f"--repo1-retention-full={max(fulls, 1)}", timeout=3600)
        return doomed

    def needed(self, present: list[EngineBackup], keep: set[str]) -> set[str]:
        """The kept labels plus every set they depend on, saying which were added."""
        by_label = {b.label: b for b in present}
        kept: set[str] = set()
        for label in sorted(keep & by_label.keys()):
            chain = by_label[label]
            while True:
                kept.add(chain.label)
                if chain.prior is None or chain.prior not in by_label:
                    break
                if chain.prior not in keep and chain.prior not in kept:
                    log.info(
                        "keeping pgBackRest backup %s: kept backup %s depends on it",
                        chain.prior,
                        label,
                    )
                chain = by_label[chain.prior]
        return kept

    def repository(self) -> RepositoryStatus:
        """Whether ``repo-ls`` answers and ``info`` can read the stanza."""
        details = self.repository_details()
        free = self.free_bytes()
        try:
            self.ensure_config()
            self.run("repo-ls", "--output=json", timeout=120)
            self.info()
        except BackupError as error:
            return RepositoryStatus(False, error.message, free, details)
        return RepositoryStatus(True, None, free, details)

    def repository_details(self) -> dict[str, str]:
        s3 = self.context.section.repository.s3
        if s3 is not None:
            return {"type": "s3", "bucket": s3.bucket, "endpoint": s3.endpoint}
        return {"type": "posix", "path": str(self.context.repository_path())}

    def free_bytes(self) -> int | None:
        path = self.context.repository_path()
        if path is None:
            return None
        while not path.exists() and path != path.parent:
            path = path.parent
        return shutil.disk_usage(path).free

    def archive_status(self) -> ArchiveStatus:
        """The source's ``pg_stat_archiver`` counters and last segments."""
        query = (
            "SELECT archived_count, last_archived_wal, "
            "extract(epoch FROM last_archived_time)::float8, failed_count, "
            "last_failed_wal, extract(epoch FROM last_failed_time)::float8 "
            "FROM pg_stat_archiver"
        )
        try:
            with psycopg.connect(self.context.dsn, autocommit=True) as conn:
                row = conn.execute(query).fetchone()
        except psycopg.Error as error:
            raise self.database_error(error) from error
        if row is None:
            raise BackupError(
                "pg_stat_archiver returned no row", "check the database's version"
            )
        return ArchiveStatus(int(row[0]), row[1], row[2], int(row[3]), row[4], row[5])

    # -- the source cluster -----------------------------------------------

    def cluster_facts(self) -> Cluster:
        """Data folder, port and socket of the source, asked through the DSN."""
        params = conninfo_to_dict(self.context.dsn)
        try:
            with psycopg.connect(self.context.dsn, autocommit=True) as conn:
                data = self.context.section.data or show(conn, "data_directory")
                sockets = show(conn, "unix_socket_directories")
                user = str(conn.info.user)
                database = str(conn.info.dbname)
                port = int(conn.info.port)
        except psycopg.Error as error:
            raise self.database_error(error) from error

        host = str(params.get("host") or "")
        socket = host if host.startswith("/") else first_socket(sockets)
        if socket is None:
            raise BackupError(
                f"PostgreSQL for {self.context.database} listens on no unix socket, "
                "and pgBackRest reaches it only through one",
                "set unix_socket_directories (the default /var/run/postgresql is fine)",
            )
        if not Path(data).is_dir():
            raise BackupError(
                f"the data folder {data} is not on this host, and pgBackRest must "
                "run where the database runs",
                "run verger on the database host, or set backup.data to the "
                "cluster's data folder",
            )
        return Cluster(data, port, socket, user, database)

    def preflight(self) -> None:
        """A run_as that cannot read the cluster is named before pgBackRest runs."""
        facts = self.saved_facts()
        if facts is not None:
            self.refuse_other_owner(facts.data)

    def refuse_other_owner(self, data: str) -> None:
        """Refuse up front when run_as does not own the cluster's data folder.

        PostgreSQL keeps the folder private to its owner, so pgBackRest run as
        anyone else fails deep inside with "Permission denied".
        """
        try:
            owner = Path(data).stat().st_uid
        except OSError:
            return  # pgBackRest names what is wrong with the folder itself.
        if owner == self.runner.uid:
            return
        name = _user_of(owner)
        hint = f"set backup.run_as: {name} in verger.yml"
        if self.runner.user is not None:
            who = f"backup.run_as is {self.runner.user.name}"
        else:
            who = f"verger runs as {_user_of(self.runner.uid)}"
            hint = f"run verger as {name}, or as root with backup.run_as: {name}"
        raise BackupError(
            f"the cluster's data folder {data} is owned by {name}, and {who}: "
            "pgBackRest cannot read it",
            hint,
        )

    def database_size(self) -> int:
        """The source's size, for progress: pgBackRest's percentages are of it."""
        try:
            with psycopg.connect(self.context.dsn, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT sum(pg_database_size(oid))::bigint FROM pg_database"
                ).fetchone()
        except psycopg.Error:
            return 0
        return int(row[0]) if row and row[0] else 0

    def database_error(self, error: psycopg.Error) -> BackupError:
        return BackupError(
            f"could not reach the database {self.context.database}: "
            f"{self.mask(first_line(str(error)))}",
            "check that PostgreSQL is running and the database URL in verger.yml",
        )

    # -- the config file --------------------------------------------------

    def ensure_config(self, database: bool = False) -> Path:
        """The config file setup wrote, refused if verger.yml no longer matches it.

        Only setup rewrites an existing file, since PostgreSQL's archive_command
        reads it: a mistyped passphrase in verger.yml must fail verger's own
        commands, not archiving. A missing file (a new host) is written, with
        the source cluster's facts when the command needs ``database``.
        """
        current = self.read_config()
        if current is None:
            return self.write_config(self.cluster_facts() if database else None)
        if current == render_config(self.context, self.saved_facts()):
            return self.config_path
        parser = configparser.ConfigParser(interpolation=None)
        with contextlib.suppress(configparser.Error):
            parser.read_string(current)
        if parser.get("global", "repo1-cipher-pass", fallback=None) != (
            self.context.passphrase
        ):
            raise WrongPassphrase(
                f"backup.passphrase is not the passphrase in {self.config_path}, "
                "which archive_command uses",
                "set backup.passphrase back to the passphrase the repository was "
                "created with",
            )
        raise BackupError(
            f"{self.config_path} no longer matches the backup section of verger.yml",
            "run 'verger backup setup' to rewrite it (archive_command reads it)",
        )

    def read_config(self) -> str | None:
        try:
            return self.config_path.read_text()
        except FileNotFoundError:
            return None

    def write_config(self, facts: Cluster | None = None) -> Path:
        """Write the config file owned by run_as, 0600; keep known cluster facts."""
        state = self.runner.own(self.context.state, 0o700)
        self.runner.check_reachable(state)
        for folder in ("log", "lock", "spool"):
            self.runner.own(state / folder, 0o700)
        return self.replace_config(
            render_config(self.context, facts or self.saved_facts())
        )

    def replace_config(self, text: str) -> Path:
        """Swap the file in whole, so archive_command never reads half of it."""
        path = self.config_path
        temporary = path.with_name(f".{CONFIG_NAME}.{os.getpid()}")
        self.write_file(temporary, text)
        os.replace(temporary, path)
        return path

    def write_file(self, path: Path, text: str) -> None:
        """Write a config file private to run_as (it holds the passphrase)."""
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            os.fchown(handle.fileno(), self.runner.uid, self.runner.gid)
            os.fchmod(handle.fileno(), 0o600)
            handle.write(text)

    def saved_facts(self) -> Cluster | None:
        """The cluster facts in the config file already written, if any."""
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(self.config_path)
            section = parser[self.context.stanza]
            return Cluster(
                section["pg1-path"],
                int(section["pg1-port"]),
                section["pg1-socket-path"],
                section["pg1-user"],
                section["pg1-database"],
            )
        except (KeyError, ValueError, configparser.Error):
            return None

    # -- running pgbackrest -----------------------------------------------

    @property
    def user_name(self) -> str:
        return self.runner.user.name if self.runner.user else "the cluster's owner"

    def command(self, *args: str) -> list[str]:
        return [
            self.program,
            f"--config={self.config_path}",
            f"--stanza={self.context.stanza}",
            *args,
        ]

    def run(
        self, *args: str, timeout: float | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run one pgbackrest command to completion; a failure raises BackupError.

        Output is decoded leniently: with a wrong passphrase pgBackRest quotes
        the undecryptable bytes of its info files, which are not UTF-8.
        """
        try:
            done = subprocess.run(
                self.command(*args),
                capture_output=True,
                timeout=timeout,
                check=False,
                **self.spawn_options(),
            )
        except subprocess.TimeoutExpired:
            raise BackupError(
                f"pgBackRest {args[0]} did not finish within {timeout:g}s",
                f"see {self.context.state / 'log'} for what it was doing, then retry",
            ) from None
        if done.returncode != 0:
            raise self.failure(args[0], (done.stdout + done.stderr).splitlines())
        return done

    def spawn_options(self) -> dict[str, Any]:
        """How every pgbackrest process starts: as run_as, dying with verger,
        text decoded leniently."""
        return {
            "text": True,
            "errors": "replace",
            "env": self.runner.environment(),
            **self.runner.spawn(),
        }

    def stream(
        self, args: list[str], total: int, progress: Progress
    ) -> tuple[int, list[str]]:
        """Run a long command, turning its per-file percentages into progress.

        The command and its workers get a process group of their own, which
        a guard kills if verger dies before the command ends.
        """
        process = subprocess.Popen(
            self.command(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            process_group=0,
            **self.spawn_options(),
        )
        kept: deque[str] = deque(maxlen=200)
        notable: list[str] = []
        try:
            assert process.stdout is not None
            with guarded(process.pid):
                for line in process.stdout:
                    kept.append(line.rstrip("\n"))
                    percent = PERCENT.search(line)
                    if percent:
                        progress(int(total * float(percent[1]) / 100), total)
                    elif "ERROR:" in line or "new backup label" in line:
                        notable.append(line.rstrip("\n"))
                code = process.wait()
        finally:
            if process.poll() is None:
                process.terminate()
                process.wait(30)
        return code, [*notable, *kept]

    def failure(self, command: str, output: Iterable[str]) -> BackupError:
        """A one-line BackupError from pgBackRest's first ERROR line."""
        lines = [self.mask(line) for line in output if line.strip()]
        text = "\n".join(lines)
        if undecryptable(text):
            return self.passphrase_error()
        match = ERROR_LINE.search(text)
        reason = (
            _whole_error(text, match)
            if match
            else clean(lines[-1] if lines else "no output")
        )
        hint = f"see {self.context.state / 'log'} for pgBackRest's log"
        if match and int(match[1]) == LOCK_HELD:
            hint = "another pgBackRest command holds the stanza's lock; wait and retry"
        elif match and int(match[1]) == ARCHIVE_DISABLED:
            hint = "restart PostgreSQL so that archive_mode=on applies, then retry"
        return BackupError(
            f"pgBackRest {command} failed: {reason[:300]}",
            hint,
            detail="\n".join(clean(line) for line in lines[-40:]),
        )

    def missing_error(self) -> RepositoryMissing | None:
        """A local repository whose folder is gone or holds nothing: not a new one.

        Setup would start an empty stanza there and hide that the real
        repository is unmounted or deleted, so the error never suggests it.
        """
        path = self.context.repository_path()
        if path is None:
            return None
        empty = empty_folder(path)
        if not empty and not (path / "backup" / self.context.stanza).exists():
            empty = self.saved_facts() is not None
        return missing_repository(path) if empty else None

    def passphrase_error(self) -> BackupError:
        return WrongPassphrase(
            "the repository could not be decrypted with backup.passphrase",
            "set backup.passphrase to the passphrase the repository was created with",
        )

    def mask(self, text: str) -> str:
        text = self.runner.mask(text)
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, "********")
        return text


def _user_of(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def program() -> str:
    found = shutil.which("pgbackrest") or (
        "/usr/bin/pgbackrest" if Path("/usr/bin/pgbackrest").exists() else None
    )
    if found is None:
        raise BackupError(
            "pgBackRest is not installed",
            "install it (apt-get install pgbackrest), or set backup.engine: pg_dump",
        )
    return found


def render_config(
    context: Context, cluster: Cluster | None, *, secret: bool = True
) -> str:
    """The pgBackRest config file for ``context``: repository, logs, stanza.

    It holds the passphrase, since PostgreSQL runs archive_command with its
    own environment; without ``secret`` it leaves it out, for a command that
    gets it through ``CIPHER_PASS_VARIABLE``.
    """
    if not context.passphrase or "\n" in context.passphrase:
        raise BackupError(
            "pgBackRest needs a one-line backup.passphrase to encrypt the repository",
            "set backup.passphrase (or its secret reference) in verger.yml",
        )
    state = context.state
    lines = ["[global]", *repository_lines(context)]
    lines += [
        "repo1-cipher-type=aes-256-cbc",
        *([f"repo1-cipher-pass={context.passphrase}"] if secret else []),
        f"repo1-retention-full={KEEP_ALL}",
        f"log-path={state / 'log'}",
        "log-level-console=off",
        "log-level-stderr=warn",
        "log-level-file=info",
        f"lock-path={state / 'lock'}",
        f"spool-path={state / 'spool'}",
        "start-fast=y",
        "archive-check=y",
        "compress-type=zst",
        "process-max=2",
        "",
        f"[{context.stanza}]",
    ]
    if cluster is not None:
        lines += [
            f"pg1-path={cluster.data}",
            f"pg1-port={cluster.port}",
            f"pg1-socket-path={cluster.socket}",
            f"pg1-user={cluster.user}",
            f"pg1-database={cluster.database}",
        ]
    elif context.section.data:
        lines.append(f"pg1-path={context.section.data}")
    return "\n".join(lines) + "\n"


def repository_lines(context: Context) -> list[str]:
    s3 = context.section.repository.s3
    if s3 is None:
        return [f"repo1-path={context.repository_path()}"]
    return s3_lines(s3)


def s3_lines(s3: S3) -> list[str]:
    host, _, port = s3.endpoint.partition(":")
    lines = [
        "repo1-type=s3",
        f"repo1-s3-endpoint={host}",
        f"repo1-s3-bucket={s3.bucket}",
        f"repo1-s3-region={s3.region}",
        f"repo1-path=/{s3.prefix.strip('/') or 'verger'}",
    ]
    if port:
        lines.append(f"repo1-storage-port={port}")
    if s3.key and s3.secret:
        lines += [f"repo1-s3-key={s3.key}", f"repo1-s3-key-secret={s3.secret}"]
    else:
        lines.append("repo1-s3-key-type=auto")
    if s3.path_style:
        lines.append("repo1-s3-uri-style=path")
    if s3.ca_file:
        lines.append(f"repo1-storage-ca-file={s3.ca_file}")
    return lines


def to_backup(entry: dict[str, Any]) -> EngineBackup:
    """One ``backup`` entry of ``info --output=json`` as an EngineBackup."""
    info = entry.get("info", {})
    archive = entry.get("archive", {})
    stamps = entry.get("timestamp", {})
    return EngineBackup(
        label=entry["label"],
        kind=entry["type"],
        started_at=float(stamps["start"]),
        finished_at=float(stamps["stop"]),
        size=info.get("size"),
        repo_size=info.get("repository", {}).get("delta"),
        wal_start=archive.get("start"),
        wal_stop=archive.get("stop"),
        prior=entry.get("prior"),
        error="page checksum errors in the copied files"
        if entry.get("error")
        else None,
    )


def parse_json(text: str, command: str) -> Any:
    """pgBackRest's JSON, which may quote raw control bytes from a damaged file."""
    try:
        return json.loads(text, strict=False)
    except json.JSONDecodeError as error:
        raise BackupError(
            f"pgBackRest {command} printed something that is not JSON",
            f"run pgbackrest {command} --output=json by hand to see what it says",
        ) from error


def target_time(epoch: float) -> str:
    """A recovery target time as PostgreSQL reads it, in UTC."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def show(conn: psycopg.Connection[tuple[Any, ...]], setting: str) -> str:
    row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(setting))).fetchone()
    return str(row[0]) if row else ""


def first_socket(setting: str) -> str | None:
    for entry in setting.split(","):
        folder = entry.strip().strip('"')
        if folder and not folder.startswith("@"):
            return folder
    return None


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _whole_error(text: str, match: re.Match[str]) -> str:
    """The ERROR line with the lines that continue it (a reason ending in ':')."""
    parts = [clean(match[2])]
    for line in text[match.end() :].splitlines()[1:]:
        if not parts[-1].endswith(":") and not line[:1].isspace():
            break
        if LOG_PREFIX.match(line) or not clean(line):
            break
        parts.append(clean(line))
    return " ".join(parts).rstrip(":")


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "no message"


def clean(text: str) -> str:
    """Printable text only: an undecryptable file shows as binary noise."""
    return "".join(c for c in text if c.isprintable()).strip()


def undecryptable(text: str) -> bool:
    """Whether pgBackRest failed to read its info files as a wrong passphrase does."""
    return "unable to load info file" in text and (
        "FormatError" in text or "CryptoError" in text
    )
