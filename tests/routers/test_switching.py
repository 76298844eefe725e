"""Switching between slots, for every router backend, with real traffic."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from router_harness import RunningRouter
from router_traffic import Client, keep_busy, settled_stats

from verger.deploy.routers.base import Router, Upstream
from verger.deploy.routers.stats import BOUNDS

SWITCHES = 24


def test_switches_under_keepalive_load_fail_no_request(
    kind: str,
    start_backend: Callable[..., Upstream],
    start_router: Callable[..., RunningRouter],
) -> None:
    """Many switches under load fail no request, and a long one ends on its old slot."""
    blue, green = start_backend("blue"), start_backend("green")
    running = start_router(kind, blue)
    router = running.router

    async def scenario() -> None:
        before = await router.stats()

        # The long request reaches blue before anything switches.
        slow_client = Client(running.url)
        slow = asyncio.create_task(slow_client.get("/slow?seconds=10"))
        await wait_inflight(router, blue.address)
        started = time.monotonic()

        stop = asyncio.Event()
        load = asyncio.create_task(keep_busy(running.url, 8, stop, pause=0.01))
        probe = Client(running.url)
        wrong: list[str] = []
        for index in range(SWITCHES):
            # A fixed schedule: every switch happens while the long request runs.
            await asyncio.sleep(
                max(0.0, started + 0.3 * (index + 1) - time.monotonic())
            )
            target = green if index % 2 == 0 else blue
            await router.switch(target)
            answer = await probe.get(f"/probe?switch={index}")
            if (answer.status, answer.name) != (200, target.slot):
                wrong.append(
                    f"switch {index} to {target.slot}: {answer.status} {answer.name}"
                )
            assert not slow.done(), "the long request ended before the switches did"

        stop.set()
        seen = await load
        answer = await slow
        elapsed = time.monotonic() - started
        await probe.close()
        await slow_client.close()

        assert seen.failures == []
        assert wrong == []
        assert (answer.status, answer.name) == (200, "blue")
        assert elapsed > 9
        assert seen.names == {"blue", "green"}
        # Switches never close the clients' keep-alive connections.
        assert seen.connections == [1] * 8
        assert probe.connections == 1

        sent = seen.requests + SWITCHES + 1
        stats = (await settled_stats(router, before.requests + sent)).since(before)
        assert stats.requests == sent
        assert stats.classes["2xx"] == sent
        assert stats.errors == 0 and stats.router_errors == 0
        assert sum(stats.buckets) == sent
        # Only the long request took longer than 10 seconds.
        assert sum(stats.buckets[BOUNDS.index(10.0) + 1 :]) == 1

    running.loop.run(scenario())


def test_new_requests_follow_each_switch_on_the_same_connection(
    kind: str,
    start_backend: Callable[..., Upstream],
    start_router: Callable[..., RunningRouter],
) -> None:
    """Once switch() returns, the next request on an open connection goes there."""
    blue, green = start_backend("blue"), start_backend("green")
    running = start_router(kind, blue)

    async def scenario() -> None:
        client = Client(running.url)
        assert (await client.get()).name == "blue"
        assert await running.router.live() == blue
        for target in [green, blue] * 5:
            await running.router.switch(target)
            assert await running.router.live() == target
            answer = await client.get()
            assert (answer.status, answer.name) == (200, target.slot)
        assert client.connections == 1
        await client.close()

    running.loop.run(scenario())


def test_stats_count_requests_by_class_and_latency(
    kind: str,
    start_backend: Callable[..., Upstream],
    start_router: Callable[..., RunningRouter],
) -> None:
    """Stats count each request once, by status class, in the right latency bucket."""
    blue = start_backend("blue")
    running = start_router(kind, blue)
    router = running.router

    async def scenario() -> None:
        before = await router.stats()
        client = Client(running.url)
        paths = ["/"] * 6 + ["/status?code=404"] * 2 + ["/status?code=500"]
        paths += ["/slow?seconds=0.3"] * 3
        statuses = [(await client.get(path)).status for path in paths]
        await client.close()
        assert statuses == [200] * 6 + [404, 404, 500] + [200] * 3

        stats = (await settled_stats(router, before.requests + 12)).since(before)
        assert stats.requests == 12
        assert stats.classes == {"1xx": 0, "2xx": 9, "3xx": 0, "4xx": 2, "5xx": 1}
        assert stats.router_errors == 0
        assert sum(stats.buckets) == 12
        # The three slow ones took between 0.25 and 0.5 seconds, the rest less.
        assert stats.buckets[BOUNDS.index(0.5)] == 3
        assert sum(stats.buckets[: BOUNDS.index(0.25) + 1]) == 9
        assert 0.25 < stats.quantile(0.99) <= 0.5

    running.loop.run(scenario())


async def wait_inflight(router: Router, address: str, timeout: float = 5) -> None:
    """Wait until the router counts a request in flight on ``address``."""
    deadline = time.monotonic() + timeout
    while await router.inflight(address) < 1:
        assert time.monotonic() < deadline, f"no request in flight on {address}"
        await asyncio.sleep(0.02)
