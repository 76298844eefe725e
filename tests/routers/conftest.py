"""Fixtures that run real backends and a real router process of any kind.

Everything about the router goes through the ``Router`` interface (``prepare``,
``command``, ``ready`` and the rest), so the same tests run against every
router backend.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from router_harness import RunningRouter, free_port, stop_process, wait_listening

from verger.deploy.routers import make_router
from verger.deploy.routers.base import Upstream

BACKEND = Path(__file__).resolve().parents[1] / "support" / "backend.py"
KINDS = ["builtin", "haproxy"]


def unavailable(kind: str) -> str | None:
    """Why router ``kind`` cannot run here, or None if it can."""
    module_name = f"verger.deploy.routers.{kind}"
    try:
        importlib.import_module(module_name)
    except ImportError as exc:
        return f"{module_name} cannot be imported: {exc}"
    if kind == "haproxy" and not os.path.exists("/usr/sbin/haproxy"):
        return "HAProxy is not installed at /usr/sbin/haproxy"
    return None


@pytest.fixture
def loop() -> Iterator[asyncio.Runner]:
    """One event loop for the test, shared by its router calls and its clients."""
    with asyncio.Runner() as runner:
        yield runner


@pytest.fixture
def start_backend() -> Iterator[Callable[..., Upstream]]:
    """Start test backend processes by slot name; all are stopped afterwards."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, *args: str) -> Upstream:
        port = free_port()
        argv = [sys.executable, str(BACKEND), "--port", str(port), "--name", name]
        proc = subprocess.Popen([*argv, *args])
        procs.append(proc)
        wait_listening(port, proc)
        return Upstream(name, "127.0.0.1", port)

    yield start
    for proc in procs:
        stop_process(proc)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    """Each router backend in turn, skipped only where it cannot run."""
    reason = unavailable(request.param)
    if reason:
        pytest.skip(reason)
    return str(request.param)


@pytest.fixture
def start_router(loop: asyncio.Runner) -> Iterator[Callable[..., RunningRouter]]:
    """Start a router of a given kind serving ``live``; it is stopped afterwards."""
    running: list[RunningRouter] = []
    # Not tmp_path: a unix socket path must fit in 107 bytes.
    run_dirs: list[Path] = []

    def start(
        kind: str, live: Upstream | None, drain_timeout: float = 15.0, **settings: float
    ) -> RunningRouter:
        run_dir = Path(tempfile.mkdtemp(prefix="verger-router-"))
        run_dirs.append(run_dir)
        port = free_port()
        router = make_router(kind, "test", f"127.0.0.1:{port}", run_dir, drain_timeout)
        for name, value in settings.items():
            assert hasattr(router, name), f"{kind} router has no setting {name}"
            setattr(router, name, value)
        handle = RunningRouter(router, port, loop)
        running.append(handle)
        handle.start(live)
        return handle

    yield start
    for handle in running:
        handle.stop()
    for run_dir in run_dirs:
        shutil.rmtree(run_dir, ignore_errors=True)
