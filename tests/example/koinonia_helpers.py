"""Helpers to run the koinonia-sms example as a real process on a free port."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "koinonia-sms"
POSTGRES = "postgresql://postgres@127.0.0.1:5432"
# Settings of the outer shell that must not leak into the app under test.
CLEARED = ("DATABASE_URL", "DATA_DIR", "VERGER_VERSION", "BASE_URL")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    return env | extra


@dataclass
class App:
    """One running koinonia-sms process and a client for it."""

    proc: subprocess.Popen[bytes]
    port: int
    folder: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10)

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10, **kwargs)  # type: ignore[arg-type]

    def post(self, path: str, json: object, **kwargs: object) -> httpx.Response:
        return httpx.post(self.url + path, json=json, timeout=10, **kwargs)  # type: ignore[arg-type]

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_healthy(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"app exited {self.proc.returncode}:\n{self.output()}"
                )
            try:
                if self.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"app not healthy after {timeout}s:\n{self.output()}")

    def wait_listening(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"app is not listening:\n{self.output()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


def copy_example(folder: Path) -> Path:
    ignored = shutil.ignore_patterns(
        "__pycache__", ".verger", "*.db*", "FAULT", "VERSION"
    )
    shutil.copytree(EXAMPLE, folder, ignore=ignored)
    return folder


Launch = Callable[..., App]
