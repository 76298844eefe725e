"""The HAProxy router against a real HAProxy and real backend processes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from verger.deploy.routers import make_router
from verger.deploy.routers.base import Upstream
from verger.deploy.routers.haproxy import HAProxyRouter, haproxy_binary
from verger.deploy.routers.haproxy_log import RequestLog, parse_line
from verger.deploy.routers.stats import BOUNDS, Stats
from verger.errors import RouterError

BACKEND = Path(__file__).resolve().parents[1] / "support" / "backend.py"

pytestmark = pytest.mark.skipif(
    shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin:" + os.environ["PATH"])
    is None,
    reason="HAProxy is not installed",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"process exited with {proc.returncode}"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise AssertionError(f"nothing listens on port {port}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Client:
    """One keep-alive HTTP/1.1 connection to the router, reopened only if closed."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.connections = 0

    async def request(
        self, method: str, path: str, body: bytes = b""
    ) -> tuple[int, dict[str, Any]]:
        async with asyncio.timeout(30):
            reader, writer = await self._connection()
            head = (
                f"{method} {path} HTTP/1.1\r\nHost: test\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
            return await self._answer(reader)

    async def send_raw(self, data: bytes) -> int:
        """Send bytes as they are and return the status of the answer."""
        reader, writer = await self._connection()
        writer.write(data)
        await writer.drain()
        status, _ = await self._answer(reader)
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.reader is None or self.writer is None or self.reader.at_eof():
            await self.close()
            self.reader, self.writer = await asyncio.open_connection(
                "127.0.0.1", self.port
            )
            self.connections += 1
        return self.reader, self.writer

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[int, dict[str, Any]]:
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionError("the router closed the connection without an answer")
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()

        if "content-length" in headers:
            data = await reader.readexactly(int(headers["content-length"]))
        else:
            data = await reader.read()
        if (
            headers.get("connection", "").lower() == "close"
            or "content-length" not in headers
        ):
            await self.close()
        document = json.loads(data) if data.startswith(b"{") else {}
        return int(status_line.split()[1]), document


class RunningHAProxy:
    """A router object and the HAProxy process it runs, started from ``command``."""

    def __init__(self, router: HAProxyRouter, port: int) -> None:
        self.router = router
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, live: Upstream | None) -> None:
        self.router.prepare(live)
        stderr = (self.router.run_dir / "stderr.log").open("ab")
        self.proc = subprocess.Popen(self.router.command(), stderr=stderr)
        stderr.close()
        wait_listening(self.port, self.proc)
        assert asyncio.run(self._wait_ready())

    async def _wait_ready(self) -> bool:
        # HAProxy may open its admin socket a moment after its listener.
        deadline = time.monotonic() + 5
        while not await self.router.ready():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)

    async def pid(self) -> int:
        reader, writer = await asyncio.open_unix_connection(self.router.socket_path)
        writer.write(b"show info\n")
        answer = (await reader.read()).decode()
        writer.close()
        return int(answer.split("Pid: ", 1)[1].split()[0])

    async def settled_stats(self, requests: int) -> Stats:
        """Stats once ``requests`` requests are logged; HAProxy logs after answering."""
        deadline = time.monotonic() + 5
        stats = await self.router.stats()
        while stats.requests < requests and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            stats = await self.router.stats()
        return stats


@pytest.fixture
def start_backend() -> Iterator[Callable[[str], Upstream]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str) -> Upstream:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, str(BACKEND), "--port", str(port), "--name", name]
        )
        procs.append(proc)
        wait_listening(port, proc)
        return Upstream(name, "127.0.0.1", port)

    yield start
    for proc in procs:
        stop(proc)


@pytest.fixture
def haproxy() -> Iterator[RunningHAProxy]:
    # Not tmp_path: the admin socket path must fit in 107 bytes.
    run_dir = Path(tempfile.mkdtemp(prefix="verger-haproxy-"))
    port = free_port()
    router = make_router("haproxy", "test", f"127.0.0.1:{port}", run_dir, 15.0)
    assert isinstance(router, HAProxyRouter)
    running = RunningHAProxy(router, port)
    yield running
    running.stop()
    shutil.rmtree(run_dir, ignore_errors=True)


def test_command_runs_haproxy_in_the_foreground_from_the_run_dir(
    haproxy: RunningHAProxy,
) -> None:
    """The command runs HAProxy undaemonized on a config in the run directory."""
    router = haproxy.router
    router.prepare(None)
    argv = router.command()

    assert haproxy_binary() in argv
    assert "-db" in argv and "-D" not in argv
    assert str(router.config_path) in argv
    assert not any(arg.startswith("/etc/haproxy") for arg in argv)
    config = router.config_path.read_text()
    assert f"stats socket {router.socket_path} mode 600 level admin" in config
    assert "option forwardfor" in config and "X-Forwarded-Proto" in config
    assert "daemon" not in config and "chroot" not in config


def test_prepare_refuses_upstreams_haproxy_cannot_take(tmp_path: Path) -> None:
    """An upstream given by host name, or a run directory too long, is refused."""
    router = HAProxyRouter("test", "127.0.0.1:8080", tmp_path / "run")
    with pytest.raises(RouterError, match="not an IP address"):
        router.prepare(Upstream("blue", "localhost", 9001))

    long_dir = tmp_path / ("x" * 120)
    with pytest.raises(RouterError, match="too long"):
        HAProxyRouter("test", "127.0.0.1:8080", long_dir).prepare(None)


def test_live_is_none_until_the_first_switch(
    haproxy: RunningHAProxy, start_backend: Callable[[str], Upstream]
) -> None:
    """A router prepared without a live upstream answers 503 until it is switched."""
    blue = start_backend("blue")
    haproxy.start(None)

    async def scenario() -> None:
        client = Client(haproxy.port)
        assert await haproxy.router.live() is None
        assert (await client.request("GET", "/"))[0] == 503

        await haproxy.router.switch(blue)
        assert await haproxy.router.live() == blue
        status, body = await client.request("GET", "/")
        assert (status, body["name"]) == (200, "blue")

        stats = await haproxy.settled_stats(2)
        assert stats.classes["5xx"] == 1 and stats.router_errors == 1

    asyncio.run(scenario())


def test_switches_under_keepalive_load_fail_no_request(
    haproxy: RunningHAProxy,
    start_backend: Callable[[str], Upstream],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """24 switches under 8 keep-alive clients: no error, no reload, none misrouted."""
    caplog.set_level(logging.INFO, "verger.deploy.routers.haproxy")
    blue, green = start_backend("blue"), start_backend("green")
    haproxy.start(blue)
    router = haproxy.router

    async def scenario() -> None:
        pid = await haproxy.pid()
        expected: list[str | None] = ["blue"]
        errors: list[str] = []
        served: list[int] = []
        done = asyncio.Event()

        async def client_loop(index: int) -> Client:
            client = Client(haproxy.port)
            count = 0
            while not done.is_set():
                want = expected[0]
                body = os.urandom(64 + count % 2000) if count % 2 else b""
                method = "POST" if body else "GET"
                try:
                    status, answer = await client.request(method, f"/c{index}", body)
                except (OSError, TimeoutError, ValueError) as error:
                    errors.append(f"client {index}: {error!r}")
                    continue
                count += 1
                if status != 200:
                    errors.append(f"client {index}: status {status}")
                elif answer["body_sha256"] != hashlib.sha256(body).hexdigest():
                    errors.append(f"client {index}: body mangled")
                elif want is not None and answer["name"] != want:
                    errors.append(
                        f"client {index}: {answer['name']} after switch to {want}"
                    )
            served.append(count)
            return client

        clients = [asyncio.create_task(client_loop(i)) for i in range(8)]
        await asyncio.sleep(0.3)
        for number in range(24):
            target = green if number % 2 == 0 else blue
            expected[0] = None
            await router.switch(target)
            expected[0] = target.slot
            assert await router.live() == target
            await asyncio.sleep(0.15)
        done.set()
        finished = await asyncio.gather(*clients)

        assert errors == []
        assert all(client.connections == 1 for client in finished)
        assert await haproxy.pid() == pid == haproxy.proc.pid  # type: ignore[union-attr]
        stats = await haproxy.settled_stats(sum(served))
        assert stats.requests == sum(served) == stats.classes["2xx"]
        assert stats.router_errors == 0

    asyncio.run(scenario())
    switched = [r for r in caplog.records if "switched to" in r.getMessage()]
    assert len(switched) == 24


def test_keepalive_connections_follow_the_switch(
    haproxy: RunningHAProxy, start_backend: Callable[[str], Upstream]
) -> None:
    """Once switch() returns, open keep-alive connections send to the new slot."""
    blue, green = start_backend("blue"), start_backend("green")
    haproxy.start(blue)

    async def scenario() -> None:
        clients = [Client(haproxy.port) for _ in range(4)]
        for target, before in ((green, "blue"), (blue, "green"), (green, "blue")):
            for client in clients:
                assert (await client.request("GET", "/"))[1]["name"] == before
            await haproxy.router.switch(target)
            for client in clients:
                assert (await client.request("GET", "/"))[1]["name"] == target.slot
        assert [client.connections for client in clients] == [1, 1, 1, 1]

    asyncio.run(scenario())


def test_long_request_finishes_on_the_old_upstream(
    haproxy: RunningHAProxy,
    start_backend: Callable[[str], Upstream],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 10-second request in flight at a switch finishes on blue, then blue drains."""
    caplog.set_level(logging.INFO, "verger.deploy.routers.haproxy")
    blue, green = start_backend("blue"), start_backend("green")
    haproxy.start(blue)
    router = haproxy.router

    async def scenario() -> None:
        slow = asyncio.create_task(
            Client(haproxy.port).request("GET", "/slow?seconds=10")
        )
        deadline = time.monotonic() + 5
        while await router.inflight(blue.address) == 0:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)

        began = time.monotonic()
        await router.switch(green)
        assert await router.live() == green
        assert await router.inflight(blue.address) == 1
        assert await router.inflight(green.address) == 0
        assert (await Client(haproxy.port).request("GET", "/"))[1]["name"] == "green"

        status, body = await slow
        assert (status, body["name"]) == (200, "blue")
        assert time.monotonic() - began > 8
        await router.wait_drained()
        assert await router.inflight(blue.address) == 0

    asyncio.run(scenario())
    messages = [record.getMessage() for record in caplog.records]
    assert any(f"draining blue {blue.address}" in message for message in messages)
    assert any(f"drained blue {blue.address}" in message for message in messages)


def test_restarted_haproxy_routes_to_the_same_live_upstream(
    haproxy: RunningHAProxy, start_backend: Callable[[str], Upstream]
) -> None:
    """HAProxy restarted after prepare(live) serves the live slot, with fresh stats."""
    blue, green = start_backend("blue"), start_backend("green")
    haproxy.start(blue)
    router = haproxy.router

    before = asyncio.run(_switch_and_count(haproxy, green))
    state = json.loads(router.state_path.read_text())
    assert state["live"]["address"] == green.address

    live = asyncio.run(router.live())
    haproxy.stop()
    haproxy.start(live)

    async def after_restart() -> None:
        assert await router.live() == green
        assert (await Client(haproxy.port).request("GET", "/"))[1]["name"] == "green"
        stats = await haproxy.settled_stats(1)
        assert stats.started != before.started
        assert stats.since(before).requests == 1

    asyncio.run(after_restart())


async def _switch_and_count(haproxy: RunningHAProxy, target: Upstream) -> Stats:
    await haproxy.router.switch(target)
    client = Client(haproxy.port)
    for _ in range(3):
        await client.request("GET", "/")
    return await haproxy.settled_stats(3)


def test_stats_count_classes_router_errors_and_latency(
    haproxy: RunningHAProxy, start_backend: Callable[[str], Upstream]
) -> None:
    """Stats count status classes, HAProxy's own 503s and latency buckets."""
    blue = start_backend("blue")
    haproxy.start(blue)
    router = haproxy.router

    async def scenario() -> None:
        start = await router.stats()
        client = Client(haproxy.port)
        for _ in range(5):
            await client.request("GET", "/")
        for _ in range(3):
            await client.request("GET", "/slow?seconds=0.3")
        assert await Client(haproxy.port).send_raw(b"NOT HTTP\r\n\r\n") == 400

        # An upstream where nothing listens: HAProxy answers 503 itself.
        await router.switch(Upstream("green", "127.0.0.1", free_port()))
        assert (await client.request("GET", "/"))[0] == 503

        stats = (await haproxy.settled_stats(10)).since(start)
        assert stats.requests == 10
        assert stats.classes == {"1xx": 0, "2xx": 8, "3xx": 0, "4xx": 1, "5xx": 1}
        assert stats.router_errors == 1
        bucket = BOUNDS.index(0.5)
        assert stats.buckets[bucket] == 3
        assert sum(stats.buckets[: BOUNDS.index(0.05) + 1]) == 6
        assert stats.quantile(0.5) <= 0.05

    asyncio.run(scenario())


def test_request_log_reader_follows_truncation_and_restarts(tmp_path: Path) -> None:
    """The log reader counts each line once and starts over on truncation or restart."""
    path = tmp_path / "requests.log"
    path.write_text(
        "verger-request 200 3 ---- a\n"
        "Server slots/b is UP/READY (leaving forced maintenance).\n"
        "verger-request 503 2001 SC-- b\n"
        "verger-request 502 1 ---- a\n"
        "verger-request 200 12"
    )
    requests = RequestLog(path)
    stats = requests.read(100.0)
    assert (stats.requests, stats.router_errors, stats.classes["5xx"]) == (3, 1, 2)

    with path.open("a") as file:
        file.write("0 ---- a\n")
    assert requests.read(100.0).requests == 4
    assert requests.read(100.0).buckets[BOUNDS.index(0.25)] == 1

    path.write_text("verger-request 200 1 ---- a\n")
    assert requests.read(100.0).requests == 5
    assert requests.read(200.0).requests == 1
    assert parse_line("verger-request -1 5 CD-- a") is None
