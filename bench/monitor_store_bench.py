"""Benchmark of the metric store: bytes per sample, size for 30 days, writes, queries.

A demo-like mix of series, on the noisy side so that real data does better:
40% counters with random increments (requests, bytes, buckets), 30% ratios
with four decimals jittering around a level (CPU, memory, disk), 20% integer
gauges drawn at random (connections, queue depth) and 10% full-precision
floats (durations from an app's own /metrics). It is written every 10
seconds through ``MetricStore.write``, as the agent does, and compacted into
blocks every six simulated hours. The peer is the plainest
SQLite layout, one row (series, time, value) per sample, holding the same
samples in the same run. Query times are the median of ``--runs`` reads of
one series: 30 days (from rollups) and the last hour (raw).

    python bench/monitor_store_bench.py --series 300 --hours 24 --runs 5
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from verger.monitor.store import BLOCK, Matcher, MetricStore

ROOT = Path(__file__).resolve().parent.parent
STEP = 10.0
DAYS = 30
T0 = 1_800_014_400.0  # on a block boundary


def _kinds(
    count: int, rng: random.Random
) -> list[tuple[str, dict[str, str], Callable[[int], float]]]:
    """(name, labels, value at step i) for a demo-like mix of series."""
    series: list[tuple[str, dict[str, str], Callable[[int], float]]] = []
    for n in range(count):
        kind = n % 10
        labels = {"environment": ("production", "staging")[n % 2], "n": str(n)}
        rate = rng.uniform(0.5, 40)
        if kind < 4:  # counters: requests, bytes, buckets
            state = {"total": 0.0}

            def counter(i: int, s: dict[str, float] = state, r: float = rate) -> float:
                s["total"] += max(0.0, round(rng.gauss(r * STEP, r)))
                return s["total"]

            series.append(("bench_requests_total", labels, counter))
        elif kind < 7:  # gauges with four decimals: ratios from /proc
            level = rng.uniform(0.1, 0.9)
            series.append(
                ("bench_ratio", labels,
                 lambda i, lv=level: round(min(1, max(0, lv + rng.gauss(0, 0.02))), 4))
            )  # fmt: skip
        elif kind < 9:  # integer gauges: connections, queue depth
            series.append(("bench_depth", labels, lambda i: float(rng.randint(0, 300))))
        else:  # noisy floats: durations
            series.append(
                ("bench_seconds", labels, lambda i: rng.lognormvariate(-4, 0.5))
            )
    return series


def _ticks(hours: float) -> Iterator[float]:
    for i in range(int(hours * 3600 / STEP)):
        yield T0 + i * STEP


def run(series_count: int, hours: float, runs: int) -> dict[str, float]:
    rng = random.Random(42)
    kinds = _kinds(series_count, rng)
    with tempfile.TemporaryDirectory() as folder:
        store = MetricStore(Path(folder) / "metrics.db", retention=DAYS * 86400)
        peer = sqlite3.connect(str(Path(folder) / "peer.db"))
        peer.execute("CREATE TABLE samples (series INTEGER, t REAL, v REAL)")
        peer.execute("CREATE INDEX samples_by_series ON samples (series, t)")

        written = 0
        writing = 0.0
        head_max = 0
        last_compact = T0
        for t in _ticks(hours):
            batch = [(name, labels, t, value(0)) for name, labels, value in kinds]
            started = time.perf_counter()
            written += store.write(batch)
            if t - last_compact >= BLOCK:
                head_max = max(head_max, store.size())
                store.compact(t)
                last_compact = t
            writing += time.perf_counter() - started
            peer.executemany(
                "INSERT INTO samples VALUES (?, ?, ?)",
                [(n, t, v) for n, (_, _, t, v) in enumerate(batch)],
            )
        head_max = max(head_max, store.size())
        store.compact(T0 + hours * 3600 + BLOCK)
        peer.commit()
        store._db.execute("VACUUM")
        store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        peer.execute("VACUUM")
        size = store.size()
        (in_blocks,) = store._db.execute(
            "SELECT sum(length(data)) FROM blocks"
        ).fetchone()
        peer_size = (Path(folder) / "peer.db").stat().st_size
        store.close()
        peer.close()

    figures = {
        "samples": float(written),
        "bytes_per_sample": size / written,
        "block_bytes_per_sample": in_blocks / written,
        "head_max": float(head_max),
        "peer_bytes_per_sample": peer_size / written,
        "write_rate": written / writing,
    }
    figures.update(_queries(runs))
    return figures


def _queries(runs: int) -> dict[str, float]:
    """Median times to read 30 days (rollups) and one hour (raw) of one series."""
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as folder:
        store = MetricStore(Path(folder) / "metrics.db", retention=DAYS * 86400)
        batch = []
        for t in _ticks(DAYS * 24):
            batch.append(("cpu", {"host": "web1"}, t, round(rng.uniform(0, 1), 4)))
            if len(batch) >= BLOCK / STEP:
                store.write(batch)
                store.compact(t)
                batch = []
        store.write(batch)
        end = T0 + DAYS * 86400
        store.compact(end)
        month, hour = [], []
        points = 0
        for _ in range(runs):
            store._decoded.clear()
            started = time.perf_counter()
            (series,) = store.select("cpu", [Matcher("host", "=", "web1")], T0, end)
            month.append(time.perf_counter() - started)
            points = len(series.times)
            started = time.perf_counter()
            store.select("cpu", [], end - 3600, end, rollup=False)
            hour.append(time.perf_counter() - started)
        store.close()
    return {
        "query_30d_ms": statistics.median(month) * 1000,
        "query_30d_points": float(points),
        "query_1h_ms": statistics.median(hour) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=int, default=300)
    parser.add_argument("--hours", type=float, default=24)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    f = run(args.series, args.hours, args.runs)
    samples_30d = args.series * DAYS * 86400 / STEP
    # Blocks grow with time; the head (at most one block span of rows) does not.
    mb_30d = (f["block_bytes_per_sample"] * samples_30d + f["head_max"]) / 1e6
    peer_mb_30d = f["peer_bytes_per_sample"] * samples_30d / 1e6
    rows = [
        ("series x hours written", f"{args.series} x {args.hours:g} h "
         f"({f['samples']:,.0f} samples at 10 s)", ""),
        ("bytes per sample in blocks (raw + 5 min rollups)",
         f"{f['block_bytes_per_sample']:.2f}", f"{f['peer_bytes_per_sample']:.2f} (plain rows)"),
        ("whole file per sample, this run (fixed pages included)",
         f"{f['bytes_per_sample']:.2f}", ""),
        ("file at its fullest before a compaction (six hours in the head, WAL)",
         f"{f['head_max'] / 1e6:.1f} MB", ""),
        (f"size for 30 days of {args.series} series at 10 s (blocks + full head)",
         f"{mb_30d:.0f} MB",
         f"{peer_mb_30d:.0f} MB ({peer_mb_30d / mb_30d:.1f}x larger)"),
        ("write rate (write + compaction)", f"{f['write_rate']:,.0f} samples/s", ""),
        ("query: 30 days of one series, from rollups",
         f"{f['query_30d_ms']:.0f} ms ({f['query_30d_points']:,.0f} points)", ""),
        ("query: last hour of one series, raw", f"{f['query_1h_ms']:.1f} ms", ""),
    ]  # fmt: skip
    lines = [
        "# Metric store benchmark",
        "",
        f"`python bench/monitor_store_bench.py --series {args.series} --hours "
        f"{args.hours:g} --runs {args.runs}`; query times are medians of "
        f"{args.runs} runs; 30-day sizes are extrapolated from the bytes per "
        "sample in blocks plus the head at its fullest.",
        "",
        "| measure | verger's store | peer: one SQLite row per sample |",
        "|---|---|---|",
        *(f"| {a} | {b} | {c} |" for a, b, c in rows),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    out = ROOT / "bench" / "results" / "monitor_store.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
