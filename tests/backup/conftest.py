"""Shared pieces of the backup tests: PostgreSQL clusters of their own.

Every test gets a work folder that the postgres user can enter (pytest's own
temporary folders are private to root), and a source cluster started as the
postgres user on a free port, holding a small database ``app``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from verger.backup.cluster import ScratchCluster
from verger.backup.system import Runner, resolve_user

SCHEMA = """
CREATE TABLE churches (id serial PRIMARY KEY, name text NOT NULL);
CREATE TABLE members (
    id serial PRIMARY KEY,
    church_id int NOT NULL REFERENCES churches(id),
    full_name text NOT NULL,
    phone text NOT NULL
);
INSERT INTO churches (name) SELECT 'church ' || g FROM generate_series(1, 10) g;
INSERT INTO members (church_id, full_name, phone)
    SELECT 1 + g % 10, 'member ' || g, '+1555' || lpad(g::text, 7, '0')
    FROM generate_series(1, 5000) g;
"""


def postgres_runner() -> Runner:
    """Commands as the postgres user when the tests run as root, else as ourselves."""
    return Runner(resolve_user("postgres" if os.geteuid() == 0 else None))


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A folder the postgres user can enter, removed after the test."""
    folder = Path(tempfile.mkdtemp(prefix="verger-backup-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


class Source(ScratchCluster):
    """A test's production stand-in: archives like a real server, if told to."""

    def configure(self, **settings: str) -> None:
        """ALTER SYSTEM each setting, then restart so that all of them apply."""
        with self.connect() as conn:
            conn.autocommit = True
            for name, value in settings.items():
                conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        self.restart()

    def restart(self) -> None:
        self.stop()
        self.start(timeout=60, isolated=False)

    def sql(self, statement: str, database: str = "app") -> list[tuple[object, ...]]:
        with self.connect(database) as conn:
            conn.autocommit = True
            cursor = conn.execute(statement)
            return cursor.fetchall() if cursor.description else []


@pytest.fixture
def source(workdir: Path) -> Iterator[Source]:
    """A running cluster with a database ``app`` of 10 churches and 5,000 members."""
    cluster = Source(postgres_runner(), workdir / "pg", "source")
    cluster.init()
    cluster.start(timeout=60, isolated=False, settings={"wal_level": "replica"})
    with cluster.connect() as conn:
        conn.autocommit = True
        conn.execute("CREATE DATABASE app")
    with cluster.connect("app") as conn:
        conn.execute(SCHEMA)
    yield cluster
    cluster.remove()


PASSPHRASE = "correct horse battery staple 42"


class Recorder:
    """A local webhook receiver that records every JSON body it is sent."""

    def __init__(self) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        received: list[dict[str, object]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                received.append(json.loads(self.rfile.read(length) or b"{}"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.received = received
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[object]:
        return [body.get("event") for body in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    hook = Recorder()
    yield hook
    hook.close()


def backup_config(
    workdir: Path,
    source: Source,
    hook: Recorder | None = None,
    engine: str = "pgbackrest",
    extra: str = "",
    repository: str | None = None,
) -> Path:
    """Write a verger.yml whose backup: section points at ``source``."""
    run_as = "\n  run_as: postgres" if os.geteuid() == 0 else ""
    notify = f"notify:\n  webhooks: [{hook.url}]\n" if hook else ""
    repo = repository or f"{{path: {workdir / 'repo'}}}"
    text = f"""\
app: koinonia
start: python3 -m http.server $PORT
environments:
  production: {{listen: 127.0.0.1:{free_port()}}}
databases:
  production: {source.url("app")}
{notify}backup:
  engine: {engine}
  database: production
  repository: {repo}
  passphrase: ${{VERGER_BACKUP_PASSPHRASE}}{run_as}
  scratch: {workdir / "scratch"}
  archive_timeout: 2s
  targets: {{rpo: 1m, rto: 10m}}
{extra}"""
    path = workdir / "app" / "verger.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def free_port() -> int:
    from verger.backup.cluster import free_port as pick

    return pick()


def verger(
    config: Path, *args: str, check: bool = False, timeout: float = 300, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run the verger CLI on ``config`` as a user would, with the test passphrase."""
    import sys

    environment = {**os.environ, "VERGER_BACKUP_PASSPHRASE": PASSPHRASE, **env}
    done = subprocess.run(
        [sys.executable, "-m", "verger", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        check=False,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"verger {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
    return done
