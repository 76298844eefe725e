"""What the dashboard tests share: a project folder, a seeded metric store, a server."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aiohttp import web

from verger.config import Loaded, load_config
from verger.monitor.build import open_metrics
from verger.monitor.store import MetricStore
from verger.state import Store, open_store
from verger.web import Board, make_app

TOKEN = "test-dashboard-token"
BOUNDS = ("0.05", "0.1", "0.25", "0.5", "1", "+Inf")
# The share of requests at or under each bound: p95 falls exactly on 0.25 s.
SHARES = (0.5, 0.8, 0.95, 0.99, 1.0, 1.0)
RATE = 10.0
ERRORS = 0.02


def write_project(root: Path, extra: str = "") -> Loaded:
    """A verger.yml with staging and production, monitoring and a dashboard."""
    (root / "verger.yml").write_text(
        f"""\
app: shop
start: python app.py
environments:
  staging:
    listen: 127.0.0.1:18081
  production:
    listen: 127.0.0.1:18080
    requires: staging
databases:
  production: postgresql://postgres@127.0.0.1/shop
backup:
  database: production
monitor: {{}}
dashboard:
  listen: 127.0.0.1:19300
{extra}"""
    )
    return load_config(str(root / "verger.yml"))


def seed(store: MetricStore, now: float, seconds: float = 3600.0) -> None:
    """Steady traffic to production (2% 5xx, p95 at 250 ms) and the host, Redis, PG."""
    samples = []
    steps = int(seconds // 10)
    for i in range(steps + 1):
        t = now - seconds + i * 10
        served = RATE * i * 10
        env = {"environment": "production"}
        samples.append(
            ("verger_requests_total", {**env, "class": "2xx"}, t, served * (1 - ERRORS))
        )
        samples.append(
            ("verger_requests_total", {**env, "class": "5xx"}, t, served * ERRORS)
        )
        for bound, share in zip(BOUNDS, SHARES, strict=True):
            labels = {**env, "le": bound}
            samples.append(
                ("verger_request_duration_seconds_bucket", labels, t, served * share)
            )
        samples.append(("verger_host_cpu_ratio", {}, t, 0.42))
        samples.append(("verger_redis_hit_ratio", {}, t, 0.875))
        samples.append(("verger_redis_queue_length", {"key": "sms"}, t, 200.0))
        samples.append(("verger_redis_queue_length", {"key": "mail"}, t, 34.0))
        samples.append(
            (
                "verger_postgres_slowest_query_seconds",
                {"database": "production"},
                t,
                0.12,
            )
        )
    store.write(samples)


def live_release(state: Store, environment: str, version: str, at: float) -> None:
    """A release that went live in ``environment`` through a succeeded deploy."""
    state.ensure_environment(environment, "builtin")
    release = state.add_release(environment, version, f"/srv/{version}", "/src")
    state.update_release(release, status="live", slot="blue")
    deploy = state.add_deploy(environment, "deploy", version, "tester")
    state.update_deploy(
        deploy, status="succeeded", release_id=release, finished_at=at, step="done"
    )
    state.set_live(environment, release)


@contextmanager
def board_for(root: Path, seeded: bool = True) -> Iterator[tuple[Board, MetricStore]]:
    """A board over real state and metric stores in ``root``."""
    loaded = write_project(root)
    state = open_store(loaded.config.state, loaded.root)
    metrics = open_metrics(loaded.config, loaded.root)
    if seeded:
        seed(metrics, time.time())
    try:
        yield Board(loaded.config, state, lambda: metrics), metrics
    finally:
        metrics.close()
        state.close()


class Served:
    """The dashboard of the project in ``root``, on a free loopback port, in a thread.

    The stores are opened in the server's thread: a SQLite connection serves
    the thread that made it.
    """

    def __init__(self, root: Path, monitoring: bool = True) -> None:
        self.root = root
        self.monitoring = monitoring
        self.loop = asyncio.new_event_loop()
        self.runner: web.AppRunner | None = None
        self.port = 0
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        if not ready.wait(20):
            raise RuntimeError("the dashboard did not start")

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        loaded = load_config(str(self.root / "verger.yml"))
        self.state = open_store(loaded.config.state, loaded.root)
        self.metrics = open_metrics(loaded.config, loaded.root)
        board = Board(
            loaded.config, self.state, lambda: self.metrics if self.monitoring else None
        )

        async def start() -> None:
            self.runner = web.AppRunner(make_app(board, TOKEN))
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            self.port = int(self.runner.addresses[0][1])

        self.loop.run_until_complete(start())
        ready.set()
        self.loop.run_forever()
        self.metrics.close()
        self.state.close()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        async def stop() -> None:
            if self.runner is not None:
                await self.runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
