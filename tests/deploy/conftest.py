"""Fixtures for deploy tests: a project folder with a config, the real CLI and agent."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import pytest

APP = Path(__file__).parent.parent / "support" / "app" / "app.py"
VERGER = [sys.executable, "-m", "verger"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """Distinct free ports: held open together, so the kernel cannot hand one out twice."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class Project:
    """A folder holding an app and its verger.yml, driven through the real CLI."""

    root: Path
    ports: dict[str, int]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.root / "verger.yml"

    def write_config(self, text: str) -> None:
        self.config.write_text(text)

    def source(self, name: str, fault: str | None = None) -> Path:
        """A copy of the app in a folder of its own, optionally with a FAULT file."""
        folder = self.root / "src" / name
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(APP, folder / "app.py")
        if fault:
            (folder / "FAULT").write_text(fault)
        return folder

    def run(
        self,
        *args: str,
        timeout: float = 120,
        check: bool = False,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*VERGER, "-c", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"verger {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
            )
        return done

    def json(self, *args: str) -> Any:
        done = self.run("--json", *args, check=True)
        return json.loads(done.stdout)

    def deploy(
        self, environment: str, source: Path, version: str, *extra: str
    ) -> subprocess.CompletedProcess[str]:
        return self.run(
            "deploy", environment, str(source), "--version", version, *extra
        )

    def url(self, environment: str) -> str:
        return f"http://127.0.0.1:{self.ports[environment]}"

    def get(self, environment: str, path: str = "/") -> tuple[int, str, str]:
        conn = HTTPConnection("127.0.0.1", self.ports[environment], timeout=15)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return (
                response.status,
                response.getheader("X-Version") or "",
                response.read().decode(),
            )
        finally:
            conn.close()

    def agent_pid(self) -> int | None:
        try:
            return int(
                json.loads((self.root / ".verger" / "agent.json").read_text())["pid"]
            )
        except (OSError, ValueError, KeyError):
            return None


def config_text(ports: dict[str, int], **overrides: str) -> str:
    """A fast config for tests: quick health checks and a short watch window."""
    values = {
        "health": (
            "{path: /health, interval: 100ms, timeout: 1s, healthy_after: 2,"
            " start_timeout: 5s}"
        ),
        "watch": "{duration: 1s, max_error_rate: 5%, max_p95: 1s, interval: 100ms}",
        "keep_previous": "30s",
        "smoke": "[{http: GET /smoke}]",
        "router": "builtin",
        "notify": "{}",
        "requires": "",
        "approval": "auto",
    }
    values.update(overrides)
    requires = f"\n    requires: {values['requires']}" if values["requires"] else ""
    return f"""\
app: testapp
start: {sys.executable} app.py
health: {values["health"]}
smoke: {values["smoke"]}
watch: {values["watch"]}
keep_previous: {values["keep_previous"]}
environments:
  staging:
    listen: 127.0.0.1:{ports["staging"]}
    router: {values["router"]}
    drain_timeout: 5s
  production:
    listen: 127.0.0.1:{ports["production"]}
    router: {values["router"]}
    drain_timeout: 5s{requires}
    approval: {values["approval"]}
notify: {values["notify"]}
"""


def _kill_leftovers(root: Path) -> None:
    """Stop every process whose working folder is inside the project (apps, routers)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd.startswith(str(root)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    staging, production = free_ports(2)
    ports = {"staging": staging, "production": production}
    proj = Project(tmp_path, ports)
    proj.write_config(config_text(ports))
    yield proj
    proj.run("down", timeout=60)
    _kill_leftovers(tmp_path)


class Traffic:
    """Keep-alive clients sending GETs and POSTs, counting every failure."""

    def __init__(self, port: int, clients: int = 4, path: str = "/") -> None:
        self.port = port
        self.path = path
        self.sent = 0
        self.failed: list[str] = []
        self.versions: dict[str, int] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True)
            for i in range(clients)
        ]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _client(self, index: int) -> None:
        conn = HTTPConnection("127.0.0.1", self.port, timeout=30)
        deadline = time.monotonic() + 600
        n = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            n += 1
            try:
                if n % 2:
                    conn.request("GET", self.path)
                else:
                    conn.request(
                        "POST",
                        self.path,
                        body=b"x" * 512,
                        headers={"Content-Type": "text/plain"},
                    )
                response = conn.getresponse()
                response.read()
                outcome = None if response.status < 500 else f"HTTP {response.status}"
                version = response.getheader("X-Version") or "?"
            except OSError as exc:
                outcome, version = f"{type(exc).__name__}: {exc}", "?"
                conn.close()
                conn = HTTPConnection("127.0.0.1", self.port, timeout=30)
            with self._lock:
                self.sent += 1
                self.versions[version] = self.versions.get(version, 0) + 1
                if outcome:
                    self.failed.append(outcome)
            time.sleep(0.005)
        conn.close()
