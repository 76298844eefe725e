"""Shared pieces of the staging tests: a production and a staging database of their own.

Each test gets two fresh databases on the shared PostgreSQL server, a
verger.yml naming them, and a state store in a temporary folder; all are
dropped afterwards, with any database a refresh built beside staging.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from verger.config import Loaded, load_config
from verger.state import open_store
from verger.state.base import Store

SERVER = "postgresql://postgres@127.0.0.1:5432/"
SALT = "a-test-salt-of-more-than-16-characters"

SCHEMA = """
CREATE TABLE churches (id serial PRIMARY KEY, name text NOT NULL);
CREATE TABLE members (
    id serial PRIMARY KEY,
    church_id int NOT NULL REFERENCES churches(id),
    referred_by int REFERENCES members(id),
    full_name varchar(40) NOT NULL,
    phone varchar(20),
    email text,
    born date,
    UNIQUE (church_id, phone)
);
CREATE TABLE messages (
    id serial PRIMARY KEY,
    member_id int NOT NULL REFERENCES members(id),
    to_phone text NOT NULL,
    body text NOT NULL,
    sent_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO churches (name) SELECT 'Church ' || g FROM generate_series(1, 3) g;
INSERT INTO members (church_id, referred_by, full_name, phone, email, born)
SELECT 1 + g % 3,
       CASE WHEN g > 1 THEN g - 1 END,
       (ARRAY['Zoë Ångström', 'José Núñez', 'Łukasz Żółć', '山田 太郎', 'Anna Smith'])
           [1 + g % 5] || ' ' || g,
       CASE WHEN g % 50 = 0 THEN NULL WHEN g IN (49, 98) THEN ''
            ELSE '(415) 555-' || lpad((1000 + g)::text, 4, '0') END,
       CASE WHEN g % 47 = 0 THEN NULL WHEN g % 46 = 0 THEN ''
            ELSE (ARRAY['Member', 'MEMBER', ' member'])[1 + g % 3] || g || '@Church.ORG '
       END,
       date '1970-01-01' + g
  FROM generate_series(1, 300) g;
-- the same number written twice in another church: (church_id, phone) stays unique
UPDATE members SET phone = '(415) 555-1002' WHERE id = 4;
INSERT INTO messages (member_id, to_phone, body)
SELECT m.id, coalesce(nullif(m.phone, ''), '+14155559999'),
       (ARRAY['Call me on ', 'Text ', 'My number is '])[1 + m.id % 3]
       || (ARRAY['(415) 555-', '415.555.', '+1 415 555 ', '415-555-'])[1 + m.id % 4]
       || lpad((1000 + m.id)::text, 4, '0')
       || ' or mail ' || upper(coalesce(nullif(trim(m.email), ''), 'x@y.org'))
       || '. See you Sunday!'
  FROM members m;
INSERT INTO messages (member_id, to_phone, body) VALUES (1, '+14155551001', '');
"""

MASK = {
    "members.full_name": "name",
    "members.phone": "phone",
    "members.email": "email",
    "members.born": {"rule": "date_noise", "days": 10},
    "messages.to_phone": "phone",
    "messages.body": "text",
}
KEEP = [
    "churches.id",
    "churches.name",
    "members.id",
    "members.church_id",
    "members.referred_by",
    "messages.id",
    "messages.member_id",
    "messages.sent_at",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_sql(
    url: str, statement: str, args: tuple[Any, ...] = ()
) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(statement, args or None)
        return cursor.fetchall() if cursor.description else []


def database_names(prefix: str) -> list[str]:
    rows = run_sql(
        SERVER + "postgres",
        "SELECT datname FROM pg_database WHERE starts_with(datname, %s) ORDER BY 1",
        (prefix,),
    )
    return [str(row[0]) for row in rows]


class Site:
    """A production database, a staging database and the verger.yml naming them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.prefix = f"vs_{uuid.uuid4().hex[:8]}"
        self.production = f"{self.prefix}_prod"
        self.staging = f"{self.prefix}_stg"
        self.mask: dict[str, Any] = dict(MASK)
        self.keep: list[str] = list(KEEP)
        self.canaries: list[str] = []
        self.extra = ""
        self.head: list[str] = []
        self.port = free_port()
        for name in (self.production, self.staging):
            run_sql(
                SERVER + "postgres",
                sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)).as_string(),
            )
        self.sql(SCHEMA)
        self.sql("CREATE TABLE marker (note text)", self.staging_url)
        self.sql("INSERT INTO marker VALUES ('old copy')", self.staging_url)

    @property
    def production_url(self) -> str:
        return SERVER + self.production

    @property
    def staging_url(self) -> str:
        return SERVER + self.staging

    def sql(self, statement: str, url: str | None = None) -> list[tuple[Any, ...]]:
        return run_sql(url or self.production_url, statement)

    def write_config(self, staging_url: str | None = None) -> Path:
        import json

        path = self.folder / "verger.yml"
        lines = [
            *(self.head or ["app: shop", "start: node server.js"]),
            "environments:",
            f"  staging: {{listen: '127.0.0.1:{self.port}'}}",
            "databases:",
            f"  production: {self.production_url}",
            f"  staging: {staging_url or self.staging_url}",
            "staging:",
            f"  salt: {SALT}",
            f"  mask: {json.dumps(self.mask)}",
            f"  keep: {json.dumps(self.keep)}",
            f"  canaries: {json.dumps(self.canaries)}",
            self.extra,
        ]
        path.write_text("\n".join(lines) + "\n")
        return path

    def loaded(self) -> Loaded:
        return load_config(self.write_config())

    def store(self) -> Store:
        return open_store(".verger/state.db", self.folder)

    def databases(self) -> list[str]:
        return database_names(self.prefix)

    def drop(self) -> None:
        for name in database_names(self.prefix):
            run_sql(
                SERVER + "postgres",
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                .format(sql.Identifier(name))
                .as_string(),
            )


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """Production with 3 churches, 300 members and their messages; staging with a marker."""
    made = Site(tmp_path)
    try:
        yield made
    finally:
        made.drop()


Refresh = Callable[..., Any]


class Receiver:
    """A local webhook endpoint that records every JSON body posted to it."""

    def __init__(self) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        received: list[dict[str, Any]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(
            target=self.server.serve_forever, args=(0.05,), daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on a free port."""
    hook = Receiver()
    try:
        yield hook
    finally:
        hook.close()
