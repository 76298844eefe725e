"""The built-in router process: streaming, WebSockets, headers, failures, restarts."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
from router_harness import RunningRouter, free_port
from router_traffic import Client, body_matches, settled_stats

from verger.deploy.routers.base import Upstream
from verger.deploy.routers.builtin import BuiltinRouter


def test_chunked_response_is_delivered_as_it_streams(
    start_backend: Callable[..., Upstream], start_router: Callable[..., RunningRouter]
) -> None:
    """Each chunk of a slow chunked response reaches the client when it is sent."""
    running = start_router("builtin", start_backend("blue"))

    async def scenario() -> None:
        arrivals: list[tuple[float, bytes]] = []
        started = time.monotonic()
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{running.url}/chunked?count=3&pause=0.5") as response,
        ):
            assert response.headers["Transfer-Encoding"] == "chunked"
            async for line in response.content:
                arrivals.append((time.monotonic() - started, line))

        assert [line for _, line in arrivals] == [
            f"chunk {n} from blue\n".encode() for n in range(3)
        ]
        times = [at for at, _ in arrivals]
        assert times[0] < 0.4
        assert times[1] - times[0] > 0.3 and times[2] - times[1] > 0.3

    running.loop.run(scenario())


def test_chunked_request_streams_to_the_backend_and_back(
    start_backend: Callable[..., Upstream], start_router: Callable[..., RunningRouter]
) -> None:
    """A chunked request body is passed on as it arrives, not after it ends."""
    running = start_router("builtin", start_backend("blue"))

    async def scenario() -> None:
        echoed = asyncio.Event()

        async def body() -> AsyncIterator[bytes]:
            yield b"first part;"
            # The rest is sent only once the first part came back through the
            # router, which a router that read whole bodies would never do.
            await asyncio.wait_for(echoed.wait(), 5)
            yield b"second part"

        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{running.url}/echo", data=body()) as response,
        ):
            first = await response.content.readany()
            echoed.set()
            rest = await response.read()
        assert response.status == 200
        assert first + rest == b"first part;second part"

    running.loop.run(scenario())


def test_websocket_messages_are_relayed_both_ways(
    start_backend: Callable[..., Upstream], start_router: Callable[..., RunningRouter]
) -> None:
    """A WebSocket through the router echoes both ways, idle past the read timeout."""
    running = start_router("builtin", start_backend("blue"), read_timeout=0.5)

    async def scenario() -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"{running.url}/ws") as ws,
        ):
            # The read timeout is for responses, not for a quiet WebSocket.
            await asyncio.sleep(1)
            await ws.send_str("hello")
            assert await ws.receive_str(timeout=5) == "blue: hello"
            await ws.send_bytes(b"\x00\x01binary")
            assert await ws.receive_bytes(timeout=5) == b"\x00\x01binary"
        stats = await running.router.stats()
        assert stats.classes["1xx"] == 1

    running.loop.run(scenario())


def test_forwarded_headers_reach_the_backend_and_hop_by_hop_ones_do_not(
    start_backend: Callable[..., Upstream], start_router: Callable[..., RunningRouter]
) -> None:
    """The backend sees X-Forwarded-For/Proto/Host and none of the hop-by-hop headers."""
    running = start_router("builtin", start_backend("blue"))

    async def scenario() -> None:
        client = Client(running.url)
        plain = (await client.get("/")).document
        assert plain["forwarded"] == {
            "x-forwarded-for": "127.0.0.1",
            "x-forwarded-proto": "http",
            "x-forwarded-host": f"127.0.0.1:{running.port}",
        }
        assert plain["host"] == f"127.0.0.1:{running.port}"

        headers = {
            "X-Forwarded-For": "192.0.2.7",
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "dropped",
            "Keep-Alive": "timeout=5",
            "X-End-To-End": "kept",
        }
        sent = (await client.get("/", headers=headers)).document
        assert sent["forwarded"]["x-forwarded-for"] == "192.0.2.7, 127.0.0.1"
        assert sent["headers"]["x-end-to-end"] == "kept"
        assert "x-hop" not in sent["headers"]
        assert "keep-alive" not in sent["headers"]
        await client.close()

    running.loop.run(scenario())


def test_unreachable_upstream_is_a_502_and_a_router_error(
    start_router: Callable[..., RunningRouter],
) -> None:
    """With nothing listening on the live upstream, users get 502, counted as such."""
    running = start_router("builtin", Upstream("blue", "127.0.0.1", free_port()))

    async def scenario() -> None:
        client = Client(running.url)
        answer = await client.get("/")
        await client.close()
        assert answer.status == 502
        stats = await running.router.stats()
        assert (stats.classes["5xx"], stats.router_errors) == (1, 1)

    running.loop.run(scenario())


def test_no_live_upstream_is_a_503_until_the_first_switch(
    start_backend: Callable[..., Upstream], start_router: Callable[..., RunningRouter]
) -> None:
    """Before any release the router answers 503; after the first switch it serves."""
    blue = start_backend("blue")
    running = start_router("builtin", None)

    async def scenario() -> None:
        client = Client(running.url)
        assert await running.router.live() is None
        answer = await client.get("/")
        assert (answer.status, answer.body) == (503, b"no live release\n")
        await running.router.switch(blue)
        assert (await client.get("/")).name == "blue"
        await client.close()
        stats = await running.router.stats()
        assert (stats.requests, stats.router_errors) == (2, 1)

    running.loop.run(scenario())


def test_upstream_slower_than_the_read_timeout_is_a_504(
    start_backend: Callable[..., Upstream], start_router: Callable[..., RunningRouter]
) -> None:
    """A response that does not start within the read timeout becomes a 504."""
    running = start_router("builtin", start_backend("blue"), read_timeout=0.5)

    async def scenario() -> None:
        client = Client(running.url)
        answer = await client.get("/slow?seconds=3")
        await client.close()
        assert answer.status == 504
        stats = await running.router.stats()
        assert (stats.classes["5xx"], stats.router_errors) == (1, 1)

    running.loop.run(scenario())


def test_restarted_router_serves_the_live_upstream_it_had(
    start_backend: Callable[..., Upstream], start_router: Callable[..., RunningRouter]
) -> None:
    """A router killed and started again routes to the upstream it last switched to."""
    blue, green = start_backend("blue"), start_backend("green")
    running = start_router("builtin", blue)
    running.loop.run(running.router.switch(green))

    running.kill()
    running.start(None, prepare=False)

    async def scenario() -> None:
        assert await running.router.live() == green
        client = Client(running.url)
        assert (await client.get("/")).name == "green"
        await client.close()

    running.loop.run(scenario())


def test_old_upstream_pool_closes_once_its_last_request_finishes(
    start_backend: Callable[..., Upstream], start_router: Callable[..., RunningRouter]
) -> None:
    """After a switch, the old upstream's connections close when its drain ends."""
    blue, green = start_backend("blue"), start_backend("green")
    # A long idle timeout, so that only the drain can close blue's connections.
    running = start_router("builtin", blue, pool_idle_timeout=60.0)
    router = running.router
    assert isinstance(router, BuiltinRouter)

    async def scenario() -> None:
        client, direct = Client(running.url), Client(f"http://{blue.address}")
        for _ in range(3):
            assert (await client.get("/")).name == "blue"
        assert int((await direct.get("/connections")).body) >= 1

        slow_client = Client(running.url)
        slow = asyncio.create_task(slow_client.get("/slow?seconds=1"))
        while await router.inflight(blue.address) < 1:
            await asyncio.sleep(0.02)
        await router.switch(green)
        assert await router.pools() == {blue.address: 1, green.address: 0}
        assert int((await direct.get("/connections")).body) >= 1

        assert (await slow).name == "blue"
        await slow_client.close()
        await asyncio.sleep(0.3)
        assert int((await direct.get("/connections")).body) == 0
        assert await router.pools() == {green.address: 0}
        assert (await client.get("/")).name == "green"
        await client.close()
        await direct.close()

    running.loop.run(scenario())
    log = running.log()
    assert f"drain: 1 requests in flight on blue {blue.address}" in log
    assert f"pool closed: blue {blue.address}" in log


def test_requests_on_a_connection_the_app_closed_are_sent_again(
    start_backend: Callable[..., Upstream], start_router: Callable[..., RunningRouter]
) -> None:
    """A GET or a POST that meets a keep-alive connection the app dropped still succeeds."""
    # This backend drops the second request on every connection unanswered.
    running = start_router("builtin", start_backend("blue", "--drop-reused"))

    async def scenario() -> None:
        client = Client(running.url)
        body = b"payload " * 1000
        answers = [
            await client.get("/one"),
            await client.get("/two"),
            await client.post("/three", body),
            await client.post("/four", body),
        ]
        await client.close()
        assert [answer.status for answer in answers] == [200] * 4
        assert body_matches(answers[2], body) and body_matches(answers[3], body)
        stats = await settled_stats(running.router, 4)
        assert (stats.errors, stats.router_errors) == (0, 0)

    running.loop.run(scenario())


def test_sighup_is_ignored_and_sigterm_lets_requests_finish(
    start_backend: Callable[..., Upstream], start_router: Callable[..., RunningRouter]
) -> None:
    """The router survives SIGHUP, and on SIGTERM finishes its request, then exits 0."""
    blue = start_backend("blue")
    running = start_router("builtin", blue)
    assert running.proc is not None
    proc = running.proc

    async def scenario() -> None:
        client = Client(running.url)
        proc.send_signal(signal.SIGHUP)
        await asyncio.sleep(0.2)
        assert (await client.get("/")).status == 200

        slow_client = Client(running.url)
        slow = asyncio.create_task(slow_client.get("/slow?seconds=1"))
        while await running.router.inflight(blue.address) < 1:
            await asyncio.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        answer = await slow
        assert (answer.status, answer.name) == (200, "blue")
        await slow_client.close()
        await client.close()

    running.loop.run(scenario())
    assert proc.wait(10) == 0
    assert "stopping: 1 requests in flight" in running.log()


def test_unreadable_state_file_stops_the_router_from_starting() -> None:
    """A router whose state file is damaged refuses to start rather than guess."""
    run_dir = Path(tempfile.mkdtemp(prefix="verger-router-"))
    try:
        router = BuiltinRouter("test", f"127.0.0.1:{free_port()}", run_dir)
        router.prepare(Upstream("blue", "127.0.0.1", free_port()))
        router.state_path.write_text("{not json")
        done = subprocess.run(router.command(), capture_output=True, timeout=30)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    assert done.returncode == 2
    assert b"cannot read the state file" in done.stderr
