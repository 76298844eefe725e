"""Real processes for router tests: backends, routers, and how to stop them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time

from verger.deploy.routers.base import Router, Upstream


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(
    port: int, proc: subprocess.Popen[bytes], timeout: float = 10
) -> None:
    """Wait until something accepts connections on ``port``; fail if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"process exited with {proc.returncode}"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise AssertionError(f"nothing listens on port {port}")


def stop_process(
    proc: subprocess.Popen[bytes],
    timeout: float = 10,
    *,
    group: bool = False,
    signum: int = signal.SIGTERM,
) -> int:
    """``signum``, then SIGKILL if it does not exit in time; its exit status.

    With ``group``, the signals go to the process group the process leads (it
    was started with ``start_new_session``), which takes any child with it.
    """
    if proc.poll() is None:
        send(proc, signum, group)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            send(proc, signal.SIGKILL, group)
            proc.wait(5)
    if group:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode


def send(proc: subprocess.Popen[bytes], signum: int, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)


class RunningRouter:
    """A router object and the process its ``command`` runs."""

    def __init__(self, router: Router, port: int, loop: asyncio.Runner) -> None:
        self.router = router
        self.port = port
        self.loop = loop
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr = router.run_dir / "router.stderr"

    def start(self, live: Upstream | None, *, prepare: bool = True) -> None:
        """Prepare (unless restarting as is), run the command, wait until ready."""
        if prepare:
            self.router.prepare(live)
        with self.stderr.open("ab") as stderr:
            self.proc = subprocess.Popen(
                self.router.command(), stderr=stderr, start_new_session=True
            )
        wait_listening(self.port, self.proc)
        self.loop.run(self._wait_ready())

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + 10
        while not await self.router.ready():
            assert self.proc is not None and self.proc.poll() is None, self.log()
            assert time.monotonic() < deadline, "router never became ready"
            await asyncio.sleep(0.05)

    def stop(self) -> int | None:
        """Stop the router process the way its kind asks to be stopped."""
        if self.proc is None:
            return None
        signum = self.router.stop_signal
        return stop_process(self.proc, group=True, signum=signum)

    def kill(self) -> None:
        """Kill the router process outright, as a crash would."""
        assert self.proc is not None
        send(self.proc, signal.SIGKILL, group=True)
        self.proc.wait(5)

    def log(self) -> str:
        return self.stderr.read_text() if self.stderr.exists() else ""
