"""Benchmark of the release path: what a router adds, and how fast switches are.

Measures, in one run on this machine:

- requests/s (closed loop, wrk) and p50/p99 latency at a fixed rate (open
  loop, 500 requests/s by default) against the same backend directly, through
  the built-in router and through HAProxy;
- switch time for each router: from the switch command until a new request is
  answered by the new upstream;
- rollback time through the agent: ``verger rollback`` to a warm release, as
  the command's wall time and as the switch the agent recorded.

Each figure is the median of several runs; the ratio column compares each
target with the backend reached directly. The table is printed and written to
bench/results/release.md.

    python bench/release_bench.py --runs 5 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from verger.deploy.routers import Router, Upstream, make_router

ROOT = Path(__file__).resolve().parent.parent
BACKEND = ROOT / "tests" / "support" / "backend.py"
APP = ROOT / "tests" / "support" / "app" / "app.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"bench: nothing listens on port {port}")


@dataclass
class Target:
    name: str
    port: int


# -- load -------------------------------------------------------------------


async def open_loop(port: int, rate: int, seconds: float) -> list[float]:
    """Latencies of requests sent at a fixed rate, timed from when each was due."""
    connector = aiohttp.TCPConnector(limit=64)
    latencies: list[float] = []
    errors = 0
    url = f"http://127.0.0.1:{port}/"
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(due: float) -> None:
            nonlocal errors
            try:
                async with session.get(url) as response:
                    await response.read()
                latencies.append(time.perf_counter() - due)
            except aiohttp.ClientError:
                errors += 1

        # Warm the connection pool so the first requests do not pay for connects.
        await asyncio.gather(*(one(time.perf_counter()) for _ in range(16)))
        latencies.clear()
        tasks = []
        start = time.perf_counter()
        total = int(rate * seconds)
        for index in range(total):
            due = start + index / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(due)))
        await asyncio.gather(*tasks)
    if errors:
        raise SystemExit(f"bench: {errors} requests failed against port {port}")
    return latencies


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def throughput(port: int, seconds: float) -> float:
    """Requests/s with wrk (closed loop, 2 threads, 32 connections)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return float("nan")
    done = subprocess.run(
        [wrk, "-t2", "-c32", f"-d{seconds:g}s", f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        check=True,
    )
    for line in done.stdout.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    raise SystemExit(f"bench: cannot read wrk's output:\n{done.stdout}")


# -- routers ----------------------------------------------------------------


class Running:
    """A router process started for the benchmark."""

    def __init__(self, kind: str, folder: Path, live: Upstream) -> None:
        self.port = free_port()
        self.router: Router = make_router(
            kind, "bench", f"127.0.0.1:{self.port}", folder / kind
        )
        self.router.run_dir.mkdir(parents=True, exist_ok=True)
        self.router.prepare(live)
        log = open(folder / f"{kind}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            self.router.command(), cwd=self.router.run_dir, stdout=log, stderr=log
        )

    async def ready(self) -> None:
        for _ in range(200):
            try:
                if await self.router.ready():
                    return
            except Exception:
                pass
            await asyncio.sleep(0.05)
        raise SystemExit("bench: router did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


async def switch_times(
    running: Running, blue: Upstream, green: Upstream, count: int
) -> list[float]:
    """Seconds from the switch command until a new request is answered by the new upstream."""
    times = []
    url = f"http://127.0.0.1:{running.port}/"
    async with aiohttp.ClientSession() as session:
        for index in range(count):
            target = green if index % 2 == 0 else blue
            started = time.perf_counter()
            await running.router.switch(target)
            while True:
                async with session.get(url) as response:
                    served = (await response.json())["name"]
                if served == target.slot:
                    break
            times.append(time.perf_counter() - started)
    return times


# -- rollback through the agent ---------------------------------------------


def rollback_times(folder: Path, count: int) -> tuple[list[float], list[float]]:
    """Wall time of 'verger rollback' to a warm release, and the switch the agent recorded."""
    project = folder / "project"
    project.mkdir()
    shutil.copy(APP, project / "app.py")
    port = free_port()
    (project / "verger.yml").write_text(
        f"app: bench\nstart: {sys.executable} app.py\n"
        "health: {interval: 100ms, healthy_after: 2, start_timeout: 10s}\n"
        "watch: {duration: 1s}\nkeep_previous: 1h\n"
        f"environments:\n  staging: {{listen: 127.0.0.1:{port}}}\n"
    )

    def verger(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "verger", "-c", str(project / "verger.yml"), *args],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return done.stdout

    walls, switches = [], []
    try:
        verger("up")
        verger("deploy", "staging", str(project), "--version", "v1")
        verger("deploy", "staging", str(project), "--version", "v2")
        for index in range(count):
            to = "v1" if index % 2 == 0 else "v2"
            started = time.perf_counter()
            verger("rollback", "staging", "--to", to)
            walls.append(time.perf_counter() - started)
            history = json.loads(verger("--json", "history", "staging", "--limit", "1"))
            switches.append(history[0]["switch_ms"] / 1000)
    finally:
        subprocess.run(
            [sys.executable, "-m", "verger", "-c", str(project / "verger.yml"), "down"],
            capture_output=True, check=False,
        )  # fmt: skip
    return walls, switches


# -- the run ----------------------------------------------------------------


def start_backend(name: str, folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    log = open(folder / f"backend-{name}.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, str(BACKEND), "--port", str(port), "--name", name],
        stdout=log,
        stderr=log,
    )
    wait_port(port)
    return proc, port


async def measure(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    blue_proc, blue_port = start_backend("blue", folder)
    green_proc, green_port = start_backend("green", folder)
    blue = Upstream("blue", "127.0.0.1", blue_port)
    green = Upstream("green", "127.0.0.1", green_port)
    routers = {kind: Running(kind, folder, blue) for kind in ("builtin", "haproxy")}
    try:
        for running in routers.values():
            await running.ready()
        targets = [
            Target("direct", blue_port),
            Target("built-in router", routers["builtin"].port),
            Target("HAProxy", routers["haproxy"].port),
        ]
        figures: dict[str, dict[str, list[float]]] = {
            t.name: {"rps": [], "p50": [], "p99": []} for t in targets
        }
        for run in range(args.runs):
            print(f"run {run + 1} of {args.runs}", file=sys.stderr)
            for target in targets:
                latencies = await open_loop(target.port, args.rate, args.seconds)
                figures[target.name]["p50"].append(quantile(latencies, 0.50))
                figures[target.name]["p99"].append(quantile(latencies, 0.99))
                figures[target.name]["rps"].append(
                    throughput(target.port, args.seconds)
                )
        switches = {
            kind: await switch_times(running, blue, green, args.switches)
            for kind, running in routers.items()
        }
    finally:
        for running in routers.values():
            running.stop()
        for proc in (blue_proc, green_proc):
            proc.terminate()
            proc.wait(10)
    walls, recorded = rollback_times(folder, args.rollbacks)
    return {"figures": figures, "switches": switches, "rollback": (walls, recorded)}


def table(args: argparse.Namespace, result: dict[str, Any]) -> str:
    figures = result["figures"]
    med = {
        name: {k: statistics.median(v) for k, v in f.items()}
        for name, f in figures.items()
    }
    direct = med["direct"]
    lines = [
        f"Release path benchmark: median of {args.runs} runs of {args.seconds:g}s, "
        f"open loop at {args.rate} requests/s for latency, wrk -t2 -c32 for requests/s; "
        f"{os.cpu_count()} cores.",
        "",
        "| target | requests/s | ratio | p50 ms | p99 ms | p99 added ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, m in med.items():
        lines.append(
            f"| {name} | {m['rps']:.0f} | {m['rps'] / direct['rps']:.2f} | "
            f"{m['p50'] * 1000:.2f} | {m['p99'] * 1000:.2f} | "
            f"{(m['p99'] - direct['p99']) * 1000:+.2f} |"
        )
    lines += [
        "",
        "| switch or rollback | median ms | max ms | count | target |",
        "|---|---:|---:|---:|---|",
    ]
    for kind, times in result["switches"].items():
        lines.append(
            f"| switch, {kind} router (command to first request on green) | "
            f"{statistics.median(times) * 1000:.1f} | {max(times) * 1000:.1f} | "
            f"{len(times)} | < 100 ms |"
        )
    walls, recorded = result["rollback"]
    lines.append(
        f"| rollback, 'verger rollback' wall time (warm release) | "
        f"{statistics.median(walls) * 1000:.0f} | {max(walls) * 1000:.0f} | {len(walls)} | < 1 s |"
    )
    lines.append(
        f"| rollback, switch inside the agent | {statistics.median(recorded) * 1000:.1f} | "
        f"{max(recorded) * 1000:.1f} | {len(recorded)} | < 1 s |"
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--switches", type=int, default=40)
    parser.add_argument("--rollbacks", type=int, default=6)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="verger-bench-"))
    try:
        result = asyncio.run(measure(args, folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    text = table(args, result)
    out = ROOT / "bench" / "results" / "release.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
