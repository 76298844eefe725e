"""Fixtures for alerting tests: a fresh state store per test, on SQLite or PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from verger.state import Store, open_store

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(".verger/state.db", tmp_path)
    yield opened
    opened.close()


@pytest.fixture
def pg_store() -> Iterator[Store]:
    """A store in a new PostgreSQL database of its own, dropped afterwards."""
    name = f"verger_alerting_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    opened = open_store(f"postgresql://postgres@127.0.0.1:5432/{name}", Path("."))
    yield opened
    opened.close()
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest) -> Store:
    """The store on each engine in turn."""
    fixture = "store" if request.param == "sqlite" else "pg_store"
    found: Store = request.getfixturevalue(fixture)
    return found
