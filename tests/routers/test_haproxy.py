"""The HAProxy router: runtime API switching, drains, restarts and its request log.

The behaviour every router shares is pinned in test_switching.py; these tests
pin what is particular to HAProxy, through a real HAProxy and real backends.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from router_harness import RunningRouter, free_port
from router_traffic import Client, body_matches, settled_stats

from verger.deploy.routers import haproxy_log, make_router
from verger.deploy.routers.base import Upstream
from verger.deploy.routers.haproxy import HAProxyRouter, haproxy_binary
from verger.deploy.routers.haproxy_log import RequestLog, parse_line
from verger.deploy.routers.stats import BOUNDS
from verger.errors import RouterError


def haproxy_missing() -> bool:
    try:
        haproxy_binary()
    except RouterError:
        return True
    return False


pytestmark = pytest.mark.skipif(haproxy_missing(), reason="HAProxy is not installed")

LOGGER = "verger.deploy.routers.haproxy"


@pytest.fixture
def run_dir() -> Iterator[Path]:
    # Not tmp_path: the admin socket path must fit in 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="verger-haproxy-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def runtime_api(router: HAProxyRouter, command: str) -> str:
    """One command on HAProxy's admin socket, as an operator would type it."""
    reader, writer = await asyncio.open_unix_connection(router.socket_path)
    writer.write(command.encode() + b"\n")
    answer = await reader.read()
    writer.close()
    return answer.decode()


async def haproxy_pid(router: HAProxyRouter) -> int:
    answer = await runtime_api(router, "show info")
    return int(answer.split("Pid: ", 1)[1].split()[0])


async def idle_connections(router: HAProxyRouter, entry: str) -> int:
    """Idle connections HAProxy keeps to one server entry."""
    answer = await runtime_api(router, "show servers conn slots")
    row = next(
        line for line in answer.splitlines() if line.startswith(f"slots/{entry} ")
    )
    # The row ends with idle_cur and then one idle count per thread (HAProxy runs one).
    return int(row.split()[-2])


def haproxy_router(running: RunningRouter) -> HAProxyRouter:
    assert isinstance(running.router, HAProxyRouter)
    return running.router


def test_command_runs_haproxy_in_the_foreground_on_its_run_dir(run_dir: Path) -> None:
    """The command runs HAProxy undaemonized, on a config kept in the run directory."""
    router = make_router("haproxy", "test", f"127.0.0.1:{free_port()}", run_dir)
    router.prepare(Upstream("blue", "127.0.0.1", 9001))
    argv = router.command()
    assert isinstance(router, HAProxyRouter)

    assert argv[0] == "/bin/sh" and haproxy_binary() in argv
    assert "-db" in argv and "-D" not in argv
    assert str(router.config_path) in argv
    assert not any("/etc/haproxy" in arg for arg in argv)
    config = router.config_path.read_text()
    assert f"stats socket '{router.socket_path}' mode 600 level admin" in config
    assert "server a 127.0.0.1:9001\n" in config
    assert "daemon" not in config and "chroot" not in config
    assert router.state_path.exists()


def test_a_run_folder_with_spaces_and_dollars_is_accepted(tmp_path: Path) -> None:
    """A project path with a space or a $ gives a config HAProxy accepts as is."""
    run_dir = tmp_path / "my app $HOME" / "run"
    router = HAProxyRouter("test", f"127.0.0.1:{free_port()}", run_dir)
    router.prepare(Upstream("blue", "127.0.0.1", 9001))

    checked = subprocess.run(
        [haproxy_binary(), "-c", "-f", str(router.config_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"'{router.socket_path}'" in router.config_path.read_text()


def test_prepare_refuses_what_haproxy_cannot_take(tmp_path: Path) -> None:
    """An upstream given by host name, or a run directory too long, is refused."""
    router = HAProxyRouter("test", "127.0.0.1:8080", tmp_path / "run")
    with pytest.raises(RouterError, match="not an IP address"):
        router.prepare(Upstream("blue", "localhost", 9001))

    long_dir = tmp_path / ("x" * 120)
    with pytest.raises(RouterError, match="too long"):
        HAProxyRouter("test", "127.0.0.1:8080", long_dir).prepare(None)


def test_switches_never_reload_and_route_every_later_request_to_the_new_slot(
    start_backend: Callable[..., Upstream],
    start_router: Callable[..., RunningRouter],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Under 8 keep-alive clients, 24 switches keep one HAProxy pid, misrouting none."""
    caplog.set_level(logging.INFO, LOGGER)
    blue, green = start_backend("blue"), start_backend("green")
    running = start_router("haproxy", blue)
    router = haproxy_router(running)
    assert running.proc is not None

    async def scenario() -> None:
        pid = await haproxy_pid(router)
        # The slot every request sent from now on must reach; None during a switch.
        expected: list[str | None] = ["blue"]
        failures: list[str] = []
        sent: list[int] = []
        done = asyncio.Event()

        async def client_loop(index: int) -> int:
            client, count = Client(running.url), 0
            while not done.is_set():
                want, body = expected[0], os.urandom(count % 3000)
                count += 1
                try:
                    answer = await client.post(f"/c{index}", body)
                except (OSError, TimeoutError) as error:
                    failures.append(f"client {index}: {error!r}")
                    continue
                if answer.status != 200 or not body_matches(answer, body):
                    failures.append(f"client {index}: {answer.status}")
                elif want is not None and answer.name != want:
                    failures.append(f"client {index}: {answer.name}, not {want}")
                want = expected[0]
                answer = await client.get(f"/c{index}")
                count += 1
                if want is not None and (answer.status, answer.name) != (200, want):
                    failures.append(f"client {index}: GET {answer.status}")
            sent.append(count)
            await client.close()
            return client.connections

        clients = [asyncio.create_task(client_loop(index)) for index in range(8)]
        await asyncio.sleep(0.2)
        for number in range(24):
            target = green if number % 2 == 0 else blue
            expected[0] = None
            await router.switch(target)
            expected[0] = target.slot
            await asyncio.sleep(0.1)
        done.set()
        connections = await asyncio.gather(*clients)

        assert failures == []
        assert connections == [1] * 8
        assert running.proc is not None
        assert await haproxy_pid(router) == pid == running.proc.pid
        stats = await settled_stats(router, sum(sent))
        assert stats.requests == stats.classes["2xx"] == sum(sent)

    running.loop.run(scenario())
    messages = [record.getMessage() for record in caplog.records]
    assert sum("test switched to" in message for message in messages) == 24


def test_long_request_finishes_on_blue_then_blue_is_drained(
    start_backend: Callable[..., Upstream],
    start_router: Callable[..., RunningRouter],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 10-second request finishes on blue after the switch; then blue's idle
    connections are closed and its entry goes to maintenance."""
    caplog.set_level(logging.INFO, LOGGER)
    blue, green = start_backend("blue"), start_backend("green")
    running = start_router("haproxy", blue)
    router = haproxy_router(running)

    async def scenario() -> None:
        idle_client = Client(running.url)
        assert (await idle_client.get("/")).name == "blue"
        assert await idle_connections(router, "a") >= 1

        slow_client = Client(running.url)
        slow = asyncio.create_task(slow_client.get("/slow?seconds=10"))
        while await router.inflight(blue.address) == 0:
            await asyncio.sleep(0.02)
        began = time.monotonic()
        await router.switch(green)

        assert await router.live() == green
        assert await router.inflight(blue.address) == 1
        assert await router.inflight(green.address) == 0
        assert (await idle_client.get("/")).name == "green"
        assert not slow.done()

        answer = await slow
        assert (answer.status, answer.name) == (200, "blue")
        assert time.monotonic() - began > 9
        await router.wait_drained()
        assert await router.inflight(blue.address) == 0
        assert await idle_connections(router, "a") == 0
        assert "MAINT" in await runtime_api(router, "show stat slots 4 -1")
        await idle_client.close()
        await slow_client.close()

    running.loop.run(scenario())
    messages = [record.getMessage() for record in caplog.records]
    assert any(f"draining blue {blue.address}" in message for message in messages)
    assert any(f"drained blue {blue.address}" in message for message in messages)


def test_restarted_haproxy_serves_the_live_slot_with_fresh_stats(
    start_backend: Callable[..., Upstream], start_router: Callable[..., RunningRouter]
) -> None:
    """HAProxy killed and started again serves green, with or without prepare."""
    blue, green = start_backend("blue"), start_backend("green")
    running = start_router("haproxy", blue)
    router = haproxy_router(running)

    async def switch_and_count() -> tuple[float, int]:
        await router.switch(green)
        client = Client(running.url)
        for _ in range(3):
            assert (await client.get("/")).name == "green"
        await client.close()
        stats = await settled_stats(router, 3)
        return stats.started, stats.requests

    async def serves_green() -> float:
        assert await router.live() == green
        client = Client(running.url)
        assert (await client.get("/")).name == "green"
        await client.close()
        return (await settled_stats(router, 1)).started

    first_started, first_count = running.loop.run(switch_and_count())
    assert first_count == 3
    running.kill()
    running.start(None, prepare=False)
    second_started = running.loop.run(serves_green())

    live = running.loop.run(router.live())
    running.kill()
    running.start(live)
    third_started = running.loop.run(serves_green())
    assert len({first_started, second_started, third_started}) == 3
    assert '"address": "' + green.address in router.state_path.read_text()


def test_stats_count_classes_router_errors_and_latency(
    start_backend: Callable[..., Upstream], start_router: Callable[..., RunningRouter]
) -> None:
    """An app's own 502 is no router error; HAProxy's own 400 and 503 are counted."""
    running = start_router("haproxy", start_backend("blue"))
    router = running.router

    async def scenario() -> None:
        before = await router.stats()
        client = Client(running.url)
        paths = ["/"] * 4 + ["/slow?seconds=0.3"] * 3 + ["/status?code=502"]
        assert [(await client.get(path)).status for path in paths] == [200] * 7 + [502]

        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        writer.write(b"NOT HTTP\r\n\r\n")
        assert b" 400 " in await reader.readline()
        writer.close()

        # Nothing listens on green: HAProxy answers 503 itself.
        await router.switch(Upstream("green", "127.0.0.1", free_port()))
        assert (await client.get("/")).status == 503
        await client.close()

        stats = (await settled_stats(router, before.requests + 10)).since(before)
        assert stats.requests == 10
        assert stats.classes == {"1xx": 0, "2xx": 7, "3xx": 0, "4xx": 1, "5xx": 2}
        assert stats.router_errors == 1
        assert stats.buckets[BOUNDS.index(0.5)] == 3
        assert sum(stats.buckets[: BOUNDS.index(0.05) + 1]) == 6
        assert stats.buckets[-1] == 0

    running.loop.run(scenario())


def test_requests_on_a_connection_the_app_dropped_are_retried(
    start_backend: Callable[..., Upstream], start_router: Callable[..., RunningRouter]
) -> None:
    """A GET or POST sent on a keep-alive connection the app dropped still succeeds."""
    running = start_router("haproxy", start_backend("blue", "--drop-reused"))

    async def scenario() -> None:
        client = Client(running.url)
        body = b"payload " * 1000
        answers = [await client.get("/one"), await client.post("/two", body)]
        answers += [await client.get("/three"), await client.post("/four", body)]
        await client.close()
        assert [answer.status for answer in answers] == [200] * 4
        assert body_matches(answers[1], body) and body_matches(answers[3], body)
        stats = await settled_stats(running.router, 4)
        assert (stats.errors, stats.router_errors) == (0, 0)

    running.loop.run(scenario())


def test_forwarded_headers_reach_the_app(
    start_backend: Callable[..., Upstream], start_router: Callable[..., RunningRouter]
) -> None:
    """The app sees X-Forwarded-For, -Proto and -Host set by HAProxy."""
    running = start_router("haproxy", start_backend("blue"))

    async def scenario() -> None:
        client = Client(running.url)
        document = (await client.get("/")).document
        await client.close()
        assert document["forwarded"] == {
            "x-forwarded-for": "127.0.0.1",
            "x-forwarded-proto": "http",
            "x-forwarded-host": f"127.0.0.1:{running.port}",
        }

    running.loop.run(scenario())


def test_stop_signal_lets_the_request_in_flight_finish(
    start_backend: Callable[..., Upstream], start_router: Callable[..., RunningRouter]
) -> None:
    """On its stop signal HAProxy finishes the request in flight, then exits 0."""
    blue = start_backend("blue")
    running = start_router("haproxy", blue)
    router = haproxy_router(running)
    assert running.proc is not None
    proc = running.proc

    async def scenario() -> None:
        client = Client(running.url)
        slow = asyncio.create_task(client.get("/slow?seconds=1"))
        while await router.inflight(blue.address) < 1:
            await asyncio.sleep(0.02)
        proc.send_signal(router.stop_signal)
        answer = await slow
        assert (answer.status, answer.name) == (200, "blue")
        await client.close()

    running.loop.run(scenario())
    assert proc.wait(10) == 0


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
    requests = RequestLog(path, tmp_path / "counted.json")
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


def test_request_log_is_emptied_and_counting_survives_a_new_router_object(
    start_backend: Callable[..., Upstream],
    start_router: Callable[..., RunningRouter],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past COMPACT_AT the log file is emptied, and a new router object counts on."""
    monkeypatch.setattr(haproxy_log, "COMPACT_AT", 300)
    running = start_router("haproxy", start_backend("blue"))
    router = haproxy_router(running)

    async def scenario() -> None:
        client = Client(running.url)
        for count in range(1, 41):
            assert (await client.get("/")).status == 200
            assert (await settled_stats(router, count)).requests == count
        await client.close()

        assert router.log_path.stat().st_size < 300
        again = make_router("haproxy", "test", router.listen, router.run_dir)
        assert (await again.stats()).requests == 40

    running.loop.run(scenario())
