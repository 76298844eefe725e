"""The database of koinonia-sms: SQLite or PostgreSQL behind one small class.

Queries are written once with ``?`` placeholders and run unchanged on SQLite;
for PostgreSQL the placeholders become ``%s``. Every call runs in a worker
thread that keeps its own connection, so the event loop never waits on disk.
"""

from __future__ import annotations

import datetime
import os
import sqlite3
import threading
import urllib.parse
from dataclasses import dataclass
from typing import Any

SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS churches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS members (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    church_id INTEGER NOT NULL REFERENCES churches(id),
    name TEXT NOT NULL,
    phone TEXT NOT NULL,
    email TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (church_id, phone)
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    church_id INTEGER NOT NULL REFERENCES churches(id),
    body TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    phone TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id INTEGER NOT NULL REFERENCES messages(id),
    member_id INTEGER NOT NULL REFERENCES members(id),
    phone TEXT NOT NULL,
    status TEXT NOT NULL,
    provider_ref TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_message ON deliveries (message_id);
"""

POSTGRES_SCHEMA = (
    SQLITE_SCHEMA.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY")
    .replace("INTEGER NOT NULL", "BIGINT NOT NULL")
    .replace("created_at TEXT", "created_at TIMESTAMPTZ")
)

# Any constant will do: it only has to be the same in every version of the app,
# so that two releases starting at once create the schema one after the other.
SCHEMA_LOCK = 7_461_001


class NotFound(Exception):
    """The church or message asked for does not exist."""


class Conflict(Exception):
    """The write would break a uniqueness rule, such as one phone per church."""


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def plain(row: dict[str, Any]) -> dict[str, Any]:
    """A row with PostgreSQL timestamps turned into the ISO strings SQLite stores."""
    return {
        key: value.isoformat() if isinstance(value, datetime.datetime) else value
        for key, value in row.items()
    }


@dataclass(frozen=True)
class Target:
    """Where the data lives, parsed from DATABASE_URL."""

    kind: str
    location: str

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Target:
        url = env.get("DATABASE_URL", "")
        if not url:
            folder = env.get("DATA_DIR") or "."
            return cls("sqlite", os.path.join(folder, "app.db"))
        if url.startswith("sqlite:///"):
            # sqlite:///app.db is relative, sqlite:////srv/app.db is absolute.
            return cls("sqlite", url.removeprefix("sqlite:///"))
        if url.startswith(("postgresql://", "postgres://")):
            return cls("postgresql", url)
        raise ValueError(
            f"DATABASE_URL {url!r} is not understood; "
            "expected sqlite:///path or postgresql://..."
        )

    def describe(self) -> str:
        """The URL without credentials or options, fit for a log line."""
        if self.kind == "sqlite":
            return f"sqlite:///{self.location}"
        url = urllib.parse.urlsplit(self.location)
        return f"postgresql://{url.hostname or ''}:{url.port or 5432}{url.path}"


class Database:
    """Opens one connection per worker thread and runs one transaction per call."""

    def __init__(self, target: Target, version: str) -> None:
        self.target = target
        self.version = version
        self.local = threading.local()

    def connect(self) -> Any:
        if self.target.kind == "sqlite":
            folder = os.path.dirname(self.target.location)
            if folder:
                os.makedirs(folder, exist_ok=True)
            # Autocommit mode, so that transactions begin only where run() says.
            conn = sqlite3.connect(
                self.target.location, timeout=10, isolation_level=None
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA foreign_keys=ON")
            return conn

        import psycopg
        from psycopg.rows import dict_row

        return psycopg.connect(
            self.target.location,
            connect_timeout=3,
            autocommit=True,
            row_factory=dict_row,
            application_name=f"koinonia-sms {self.version}"[:63],
        )

    def run(self, work: Any, *args: Any, write: bool = False) -> Any:
        """Run ``work(cursor, *args)`` in a transaction on this thread's connection."""
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = self.connect()
        try:
            return self.transaction(conn, work, args, write)
        except (NotFound, Conflict):
            raise
        except Exception:
            # The connection may be broken (database restarted): open a new one
            # on the next call instead of failing forever.
            self.local.conn = None
            conn.close()
            raise

    def transaction(self, conn: Any, work: Any, args: Any, write: bool) -> Any:
        cur = Cursor(conn, self.target.kind)
        if self.target.kind == "postgresql":
            with conn.transaction():
                return work(cur, *args)

        # A writer takes SQLite's write lock up front: a read that later turns
        # into a write fails at once when another process wrote in between.
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            result = work(cur, *args)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def create_schema(self) -> None:
        if self.target.kind == "sqlite":
            conn = self.connect()
            try:
                conn.executescript(SQLITE_SCHEMA)
            finally:
                conn.close()
            return
        with self.connect() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            for statement in POSTGRES_SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)


class Cursor:
    """A thin wrapper that speaks ``?`` placeholders and returns dicts."""

    def __init__(self, conn: Any, kind: str) -> None:
        self.conn = conn
        self.kind = kind

    def execute(self, sql: str, *params: Any) -> Any:
        if self.kind == "postgresql":
            sql = sql.replace("?", "%s")
        try:
            return self.conn.execute(sql, params)
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from exc
        except Exception as exc:
            if type(exc).__name__ == "UniqueViolation":
                raise Conflict(str(exc)) from exc
            raise

    def all(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        return [plain(dict(row)) for row in self.execute(sql, *params).fetchall()]

    def one(self, sql: str, *params: Any, missing: str = "not found") -> dict[str, Any]:
        rows = self.all(sql, *params)
        if not rows:
            raise NotFound(missing)
        return rows[0]


class SandboxSms:
    """An SMS provider that records each message in the outbox instead of sending it."""

    name = "sandbox"

    def send(self, cur: Cursor, phone: str, body: str) -> str:
        row = cur.one(
            "INSERT INTO outbox (phone, body, created_at) VALUES (?, ?, ?) "
            "RETURNING id",
            phone,
            body,
            now(),
        )
        return f"sandbox-{row['id']}"


# The work functions below each run inside one transaction, via Database.run.


def ping(cur: Cursor) -> None:
    cur.one("SELECT 1 AS ok")


def create_church(cur: Cursor, name: str) -> dict[str, Any]:
    return cur.one(
        "INSERT INTO churches (name, created_at) VALUES (?, ?) RETURNING *", name, now()
    )


def church_exists(cur: Cursor, church_id: int) -> None:
    cur.one(
        "SELECT id FROM churches WHERE id = ?",
        church_id,
        missing=f"no church {church_id}",
    )


def get_church(cur: Cursor, church_id: int) -> dict[str, Any]:
    church = cur.one(
        "SELECT * FROM churches WHERE id = ?",
        church_id,
        missing=f"no church {church_id}",
    )
    counted = cur.one(
        "SELECT COUNT(*) AS n FROM members WHERE church_id = ?", church_id
    )
    return {**church, "members": counted["n"]}


def add_member(cur: Cursor, church_id: int, member: dict[str, Any]) -> dict[str, Any]:
    church_exists(cur, church_id)
    return cur.one(
        "INSERT INTO members (church_id, name, phone, email, created_at) "
        "VALUES (?, ?, ?, ?, ?) RETURNING *",
        church_id,
        member["name"],
        member["phone"],
        member.get("email"),
        now(),
    )


def list_members(cur: Cursor, church_id: int) -> list[dict[str, Any]]:
    church_exists(cur, church_id)
    return cur.all("SELECT * FROM members WHERE church_id = ? ORDER BY id", church_id)


def send_message(
    cur: Cursor, provider: SandboxSms, church_id: int, body: str
) -> dict[str, Any]:
    """Record a message and hand it to the provider once for every member."""
    church_exists(cur, church_id)
    message = cur.one(
        "INSERT INTO messages (church_id, body, created_at) VALUES (?, ?, ?) "
        "RETURNING *",
        church_id,
        body,
        now(),
    )

    members = cur.all("SELECT id, phone FROM members WHERE church_id = ?", church_id)
    for member in members:
        ref = provider.send(cur, member["phone"], body)
        cur.execute(
            "INSERT INTO deliveries "
            "(message_id, member_id, phone, status, provider_ref) "
            "VALUES (?, ?, ?, 'sent', ?)",
            message["id"],
            member["id"],
            member["phone"],
            ref,
        )
    return {**message, "delivered": len(members)}


def get_message(cur: Cursor, message_id: int) -> dict[str, Any]:
    message = cur.one(
        "SELECT * FROM messages WHERE id = ?",
        message_id,
        missing=f"no message {message_id}",
    )
    deliveries = cur.all(
        "SELECT member_id, phone, status, provider_ref FROM deliveries "
        "WHERE message_id = ? ORDER BY id",
        message_id,
    )
    return {**message, "delivered": len(deliveries), "deliveries": deliveries}


def outbox(cur: Cursor, phone: str | None, limit: int) -> list[dict[str, Any]]:
    if phone:
        return cur.all(
            "SELECT * FROM outbox WHERE phone = ? ORDER BY id DESC LIMIT ?",
            phone,
            limit,
        )
    return cur.all("SELECT * FROM outbox ORDER BY id DESC LIMIT ?", limit)
