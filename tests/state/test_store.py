"""The state store on SQLite and on a real PostgreSQL: schema upgrades and records."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from verger.errors import StateError
from verger.state import Store, open_store
from verger.state.schema import LATEST

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def pg_url() -> Iterator[str]:
    name = f"verger_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return ".verger/state.db"
    return str(request.getfixturevalue("pg_url"))


def test_new_store_is_at_the_latest_schema(state: str, tmp_path: Path) -> None:
    """Opening a new store creates every table at the newest schema version."""
    store = open_store(state, tmp_path)
    assert store.schema_version() == LATEST
    store.close()


def test_old_store_is_upgraded_in_place(state: str, tmp_path: Path) -> None:
    """A store written at schema 1 keeps its rows and gains later columns when opened."""
    store = open_store(state, tmp_path)
    store.ensure_environment("staging", "builtin")
    deploy_id = store.add_deploy("staging", "deploy", "v1", "alice@host")
    # Take it back to version 1 the way an older verger would have left it.
    store._run("ALTER TABLE deploys DROP COLUMN rollback_seconds")
    store._run("ALTER TABLE environments DROP COLUMN router_listen")
    for table in ("backups", "drills", "jobs", "staging_refreshes"):
        store._run(f"DROP TABLE {table}")
    for table in ("alert_notifications", "silences", "incidents", "incident_notes"):
        store._run(f"DROP TABLE {table}")
    for table in ("alert_states", "heartbeats"):
        store._run(f"DROP TABLE {table}")
    store._run("UPDATE schema_version SET version = 1")
    store.close()

    store = open_store(state, tmp_path)
    assert store.schema_version() == LATEST
    store.update_deploy(deploy_id, rollback_seconds=0.25)
    row = store.deploy(deploy_id)
    assert row is not None and row.version == "v1" and row.rollback_seconds == 0.25
    store.close()


def test_store_from_a_newer_verger_is_refused(state: str, tmp_path: Path) -> None:
    """A schema newer than this verger knows is refused with a hint, not misread."""
    store = open_store(state, tmp_path)
    store._run("UPDATE schema_version SET version = ?", (LATEST + 1,))
    store.close()
    with pytest.raises(StateError, match="newer than this verger knows"):
        open_store(state, tmp_path)


def test_deploys_steps_and_audit_are_recorded(state: str, tmp_path: Path) -> None:
    """Deploys, their steps in order, promotion and the audit trail round-trip."""
    store: Store = open_store(state, tmp_path)
    store.ensure_environment("staging", "builtin")
    release_id = store.add_release("staging", "v1", "/r/1", "/src")
    deploy_id = store.add_deploy("staging", "deploy", "v1", "alice@host")
    for step in ("build", "start", "health"):
        store.record_step(deploy_id, step, "started")
        store.record_step(deploy_id, step, "done")
    store.update_deploy(deploy_id, release_id=release_id, status="succeeded")
    store.audit("alice@host", "deployed", "staging", version="v1")

    assert store.deploy(deploy_id).step == "health"  # type: ignore[union-attr]
    assert [s.name for s in store.steps(deploy_id)][::2] == ["build", "start", "health"]
    assert store.passed("staging", "v1") is not None
    assert store.passed("staging", "v2") is None
    assert store.audit_trail("staging")[0].action == "deployed"
    assert store.deploy(deploy_id).finished_at is not None  # type: ignore[union-attr]
    store.close()


def test_unreachable_postgresql_is_one_clear_error(tmp_path: Path) -> None:
    """A state URL nothing answers on gives a StateError naming the host, no password."""
    with pytest.raises(StateError) as caught:
        open_store("postgresql://verger:s3cret@127.0.0.1:1/verger", tmp_path)
    assert "127.0.0.1" in caught.value.message and "s3cret" not in caught.value.message
    assert "state:" in caught.value.hint
