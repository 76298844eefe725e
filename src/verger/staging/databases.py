"""The staging server's databases: create, load, drop and swap them by name.

A refresh builds ``<staging>_refresh_<stamp>`` beside the live staging
database and swaps names only once it is complete and clean: connections
are refused for a moment, the old copy becomes ``<staging>_previous`` and the
new one takes its name. Renaming is the only step that touches the live
database, so a refresh killed at any other point leaves staging as it was.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from verger.backup.restore import same_database, same_server
from verger.backup.system import pg_program
from verger.errors import VergerError

log = logging.getLogger("verger.staging")


class RefreshError(VergerError):
    """A staging refresh was refused or failed; staging keeps its old copy."""

    exit_code = 7


def name_of(dsn: str) -> str:
    return str(conninfo_to_dict(dsn).get("dbname") or "postgres")


def with_name(dsn: str, name: str) -> str:
    """The same server and credentials, another database; a URL stays a URL.

    A ``dbname`` among a URL's options names the database over its path (libpq
    reads it last), so it is dropped: left in, every other database this
    module names, the half-built copy included, would be the live one.
    """
    if dsn.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(dsn)
        options = [
            (key, value)
            for key, value in parse_qsl(parts.query, keep_blank_values=True)
            if key != "dbname"
        ]
        return urlunsplit(
            parts._replace(
                path="/" + quote(name, safe=""),
                query=urlencode(options, quote_via=quote),
            )
        )
    return make_conninfo(dsn, dbname=name)


def refuse_production(target: str, source: str, others: dict[str, str]) -> None:
    """Refuse a target that is the source, or any other database the config names."""
    if target.strip() == source.strip() or same_database(target, source):
        raise RefreshError(
            "the staging database is the production database (same server and name)",
            "point databases for staging.target at a database of its own, on "
            "another server or under another name",
        )
    _refuse_managed_names(target, source)
    _refuse_system_database(target)
    for name, url in others.items():
        if same_database(target, url):
            raise RefreshError(
                f"the staging database is also databases.{name} (same server and "
                "name), which a refresh would replace",
                "give staging.target a database of its own",
            )


# A refresh renames the live database aside and a new one into its place:
# done to template1 every later CREATE DATABASE copies staging's tables, and
# the maintenance database is the one the swap itself connects to.
SYSTEM_DATABASES = ("postgres", "template0", "template1")


def _refuse_system_database(target: str) -> None:
    if name_of(target) in SYSTEM_DATABASES:
        raise RefreshError(
            f"the staging database is {name_of(target)}, a database PostgreSQL "
            "keeps for itself, which a refresh would rename and replace",
            "point databases.staging at a database of its own, such as app_staging",
        )


def _refuse_managed_names(target: str, source: str) -> None:
    """Refuse a production database that a refresh's renames and drops would reach."""
    live, production = name_of(target), name_of(source)
    managed = production == f"{live}_previous" or (
        production.startswith(f"{live}_refresh_")
    )
    if managed and same_server(target, source):
        raise RefreshError(
            f"the production database {production} has a name that a refresh of "
            f"{live} renames or drops, on the same server",
            "give staging.target another name, or put it on another server",
        )


class Server:
    """The staging database's server, reached through its maintenance database."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.live = name_of(target)
        self.previous = f"{self.live}_previous"
        self.admin = with_name(target, "postgres")

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        try:
            return psycopg.connect(self.admin, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as exc:
            raise RefreshError(
                f"cannot reach the staging server: {str(exc).strip()}",
                "check the staging URL under databases: and that the server is up",
            ) from exc

    def url(self, name: str) -> str:
        return with_name(self.target, name)

    def new_name(self) -> str:
        return f"{self.live}_refresh_{time.strftime('%Y%m%d%H%M%S', time.gmtime())}"

    def exists(self, name: str) -> bool:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
        return row is not None

    def half_built(self) -> list[str]:
        """Databases left by refreshes that never finished."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT datname FROM pg_database WHERE starts_with(datname, %s)"
                " ORDER BY datname",
                (f"{self.live}_refresh_",),
            ).fetchall()
        return [str(row[0]) for row in rows]

    def create(self, name: str) -> None:
        with self._connect() as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(
                    sql.Identifier(name)
                )
            )

    def drop(self, name: str) -> None:
        with self._connect() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(name)
                )
            )

    def recover(self) -> list[str]:
        """Undo what a refresh killed during its swap left: staging is served again."""
        done = []
        with self._connect() as conn:
            names = {
                str(row[0])
                for row in conn.execute("SELECT datname FROM pg_database").fetchall()
            }
            if self.live not in names and self.previous in names:
                self._rename(conn, self.previous, self.live)
                done.append(f"renamed {self.previous} back to {self.live}")
                names = {*names - {self.previous}, self.live}
            for name in (self.live, self.previous):
                if name in names:
                    self._allow(conn, name, True)
        return done

    def swap(self, new: str) -> None:
        """New becomes staging, staging becomes previous, in one short step."""
        with self._connect() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(self.previous)
                )
            )
            if not self._has(conn, self.live):
                self._rename(conn, new, self.live)
                return
            self._allow(conn, self.live, False)
            try:
                self._terminate(conn, self.live)
                self._rename(conn, self.live, self.previous)
            except BaseException:
                self._allow(conn, self.live, True)
                raise
            try:
                self._rename(conn, new, self.live)
            except BaseException:
                self._rename(conn, self.previous, self.live)
                self._allow(conn, self.live, True)
                raise
            self._allow(conn, self.previous, True)

    def _allow(
        self, conn: psycopg.Connection[tuple[object, ...]], name: str, allow: bool
    ) -> None:
        conn.execute(
            sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
                sql.Identifier(name), sql.SQL("true" if allow else "false")
            )
        )

    def _terminate(
        self, conn: psycopg.Connection[tuple[object, ...]], name: str
    ) -> None:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )

    def _has(self, conn: psycopg.Connection[tuple[object, ...]], name: str) -> bool:
        return (
            conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            is not None
        )

    def _rename(
        self, conn: psycopg.Connection[tuple[object, ...]], old: str, new: str
    ) -> None:
        for attempt in range(50):
            try:
                conn.execute(
                    sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                        sql.Identifier(old), sql.Identifier(new)
                    )
                )
                return
            except psycopg.errors.ObjectInUse:
                # A session that connected before connections were refused; end it.
                self._terminate(conn, old)
                time.sleep(0.05 * (attempt + 1))
        raise RefreshError(
            f"could not rename {old} to {new}: sessions keep reconnecting",
            "stop what connects to it, then run the refresh again",
        )


def dump_schema(source: str, file: Path, snapshot: str | None = None) -> None:
    """Production's schema (no rows) into ``file``, as of ``snapshot`` when given."""
    seen = ["--snapshot", snapshot] if snapshot else []
    _run(
        [pg_program("pg_dump"), "-Fc", "--schema-only", "--no-owner", *seen],
        ["-f", str(file), "-d", source],
        "reading production's schema failed",
        "check that production is reachable with the URL under databases:",
    )


def restore_section(file: Path, target: str, section: str, jobs: int = 1) -> None:
    """One section of the schema in ``file`` (pre-data or post-data) into ``target``."""
    steps = ["--section", section, "-j", str(jobs)]
    try:
        _run(
            [pg_program("pg_restore"), "--no-owner", "--no-privileges", *steps],
            ["--exit-on-error", "-d", target, str(file)],
            f"building the copy's {section} failed",
            "check the staging server's log, then refresh again",
            # Indexes of millions of rows sort in memory rather than on disk.
            {"PGOPTIONS": "-c maintenance_work_mem=256MB"},
        )
    except RefreshError as exc:
        if "could not create unique index" not in exc.message:
            raise
        raise RefreshError(
            f"masking broke a unique constraint: {_first_error(exc.message)}",
            "the column holds values that differ only in case or spacing, or that "
            "are already fakes (example.com addresses, 555-01xx numbers); mask it "
            "with hash, then refresh again",
        ) from exc


def _first_error(text: str) -> str:
    for line in text.splitlines():
        if "ERROR:" in line:
            return line.split("ERROR:", 1)[1].strip()
    return text.strip()


def _run(
    program: list[str],
    rest: list[str],
    what: str,
    hint: str,
    settings: dict[str, str] | None = None,
) -> None:
    done = subprocess.run(
        [*program, *rest],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(settings or {})},
    )
    if done.returncode != 0:
        raise RefreshError(f"{what}: {done.stderr.strip()[-600:]}", hint)
