"""Benchmark of the dashboard's reads: the summary and each chart over 30 days of data.

Writes ``--days`` of production traffic at 10-second steps (two status
classes, six latency buckets) and the host's CPU into a fresh metric store,
compacts it as the agent does, then times ``/api/v1/summary`` and
``/api/v1/series`` for every range, as the page asks for them (the median of
``--runs`` reads, the chart cache emptied before each), and prints a table.

    python bench/dashboard_bench.py --days 30 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from verger.config import load_config
from verger.monitor.build import open_metrics
from verger.monitor.store import BLOCK, MetricStore
from verger.state import open_store
from verger.web import RANGES, Board

BOUNDS = ("0.05", "0.1", "0.25", "0.5", "1", "+Inf")
SHARES = (0.5, 0.8, 0.95, 0.99, 1.0, 1.0)
CONFIG = """\
app: bench
start: python app.py
environments:
  production:
    listen: 127.0.0.1:18080
monitor: {}
dashboard:
  listen: 127.0.0.1:19300
"""


def fill(store: MetricStore, days: int, now: float) -> int:
    """Write ``days`` of samples up to ``now``, compacting every six hours."""
    env = {"environment": "production"}
    steps = days * 8640
    batch = []
    for i in range(steps + 1):
        t = now - days * 86400 + i * 10
        served = 100.0 * i
        batch.append(("verger_requests_total", {**env, "class": "2xx"}, t, served))
        batch.append(("verger_requests_total", {**env, "class": "5xx"}, t, i / 10))
        for bound, share in zip(BOUNDS, SHARES, strict=True):
            labels = {**env, "le": bound}
            batch.append(
                ("verger_request_duration_seconds_bucket", labels, t, served * share)
            )
        batch.append(("verger_host_cpu_ratio", {}, t, 0.4 + (i % 60) / 1000))
        if i % int(BLOCK / 10) == 0:
            store.write(batch)
            store.compact(t)
            batch = []
    store.write(batch)
    store.compact(now)
    return steps + 1


async def timed(board: Board, runs: int) -> list[tuple[str, float]]:
    async def median(read: object) -> float:
        times = []
        for _ in range(runs):
            board._charts.clear()
            started = time.perf_counter()
            await read()  # type: ignore[operator]
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    rows = [("summary", await median(lambda: board.summary("production")))]
    for range_name in RANGES:
        for metric in ("p95", "error_rate", "cpu"):

            def read(m: str = metric, r: str = range_name) -> object:
                return board.series(m, r, "production")

            rows.append((f"series {metric} {range_name}", await median(read)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vdash-") as folder:
        root = Path(folder)
        (root / "verger.yml").write_text(CONFIG)
        loaded = load_config(str(root / "verger.yml"))
        metrics = open_metrics(loaded.config, loaded.root)
        ticks = fill(metrics, args.days, time.time())
        state = open_store(loaded.config.state, loaded.root)
        board = Board(loaded.config, state, lambda: metrics)
        rows = asyncio.run(timed(board, args.runs))
        metrics.close()
        state.close()
    print(f"{args.days} days at 10 s ({ticks} steps, 9 series), median of {args.runs}")
    print("| read | ms |\n|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds * 1000:.0f} |")


if __name__ == "__main__":
    main()
