"""Shared pieces of the backup tests: PostgreSQL clusters of their own.

Every test gets a work folder that the postgres user can enter (pytest's own
temporary folders are private to root), and a source cluster started as the
postgres user on a free port, holding a small database ``app``.
"""

from __future__ import annotations

import os
import shutil
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
