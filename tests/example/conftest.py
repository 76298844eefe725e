"""Fixtures that run the koinonia-sms example as a real process on a free port."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import psycopg
import pytest
from koinonia_helpers import (
    EXAMPLE,
    POSTGRES,
    App,
    Launch,
    clean_env,
    copy_example,
    free_port,
)


@pytest.fixture
def app_folder(tmp_path: Path) -> Path:
    """A fresh copy of the example, so FAULT and VERSION files stay in the test."""
    return copy_example(tmp_path / "app")


@pytest.fixture
def launch(app_folder: Path, tmp_path: Path) -> Iterator[Launch]:
    """Start the app as a subprocess; every one started is stopped at teardown."""
    started: list[App] = []

    def start(env: dict[str, str] | None = None, folder: Path | None = None) -> App:
        port = free_port()
        log = tmp_path / f"app-{port}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "server.py"],
                cwd=folder or app_folder,
                env=clean_env(PORT=str(port), **(env or {})),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        app = App(proc, port, folder or app_folder, log)
        started.append(app)
        return app

    yield start

    for app in started:
        if app.proc.poll() is None:
            app.proc.kill()
            app.proc.wait(10)


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A throwaway PostgreSQL database on 127.0.0.1:5432, dropped afterwards."""
    name = f"koinonia_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{POSTGRES}/{name}"
    finally:
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL for each backend the app supports, empty at the start."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/data/app.db"
    return str(request.getfixturevalue("postgres_database"))


@pytest.fixture(scope="session")
def traffic_module() -> ModuleType:
    """The example's traffic.py, imported from its file."""
    spec = importlib.util.spec_from_file_location(
        "koinonia_traffic", EXAMPLE / "traffic.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
