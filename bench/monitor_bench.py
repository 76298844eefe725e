"""Benchmark of the monitor in the real agent: detection latency, CPU and memory.

Each run starts a fresh project of the example app (examples/koinonia-sms,
staging and production on free ports) with the demo's verger.yml plus a
``monitor:`` section that keeps every default (intervals, rules, routing)
and names one webhook receiver, ``page``: a local HTTP server of this script
that records when each notification arrives. Every tier reaches it (high
and medium fall back to ``page`` when it is the only receiver). Before the
agent starts, ``--history`` seconds of clean router history (three days by
default, the longest window of the default rules) are stored, so that the
rules see what they would see on a system that has been running; with
``--history 0`` the store is new. v1 is released as in the demo, under light
traffic in both environments, then:

- steady: the agent's CPU (utime + stime from /proc over ``--steady``
  seconds, as % of one core) and RSS (sampled each second; peak is the
  kernel's high-water mark), and the same for each router, which runs in a
  process of its own;
- killed: the live staging release gets SIGKILL; the agent starts it again.
  Recorded: how long it took, how many requests failed, and any alert within
  ``--quiet`` seconds (none is expected for a blip the agent heals);
- errors and killed-for-good, at once, one per environment: a FAULT file
  switches the live production release to answering 500, and the staging
  release gets SIGKILL with FAULT crash-at-start, so it cannot start again
  and staging answers 502. For each: seconds until the webhook receives the
  first page (a critical alert), and the first alert of any tier.

Every figure is the median over ``--runs`` runs; the table is printed and
written to bench/results/monitor.md.

    python bench/monitor_bench.py --runs 3
    python bench/monitor_bench.py --runs 1    # quick: about three and a half minutes
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "examples" / "koinonia-sms"
sys.path.insert(0, str(APP))

from traffic import Traffic  # noqa: E402

from verger.deploy.routers.stats import BOUNDS, CLASSES  # noqa: E402
from verger.monitor.store import MetricStore  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
STEP = 10.0  # the default monitor interval
BUCKETS = "verger_request_duration_seconds_bucket"
DETECT_TARGET = 15.0
CPU_TARGET = 3.0
RSS_TARGET = 150.0


def _bound(text: str) -> float:
    return float("inf") if text == "+Inf" else float(text)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the webhook receiver ---------------------------------------------------


Found = tuple[float, str] | None
"""Seconds from a fault to the first matching notification, and its alerts."""


@dataclass
class Arrival:
    at: float
    body: dict[str, Any]

    def firing_in(self, environment: str, severity: str | None = None) -> list[str]:
        """Names of the firing alerts of ``environment`` this notification carries."""
        return [
            labels.get("alertname", "?")
            for alert in self.body.get("alerts", [])
            for labels in [alert.get("labels", {})]
            if alert.get("status") == "firing"
            and labels.get("environment") == environment
            and severity in (None, labels.get("severity"))
        ]


class Webhook:
    """A local HTTP server that records every POST with the time it arrived."""

    def __init__(self) -> None:
        self.arrivals: list[Arrival] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                at = time.time()
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                with outer.lock:
                    outer.arrivals.append(Arrival(at, body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_firing(
        self,
        environment: str,
        since: float,
        timeout: float,
        severity: str | None = None,
    ) -> Found:
        """Seconds from ``since`` to the first firing alert of ``environment``."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.first_firing(environment, since, severity)
            if found is not None or time.monotonic() >= deadline:
                return found
            time.sleep(0.05)

    def first_firing(
        self, environment: str, since: float, severity: str | None = None
    ) -> Found:
        with self.lock:
            for arrival in self.arrivals:
                names = arrival.firing_in(environment, severity)
                if arrival.at >= since and names:
                    return arrival.at - since, ",".join(sorted(set(names)))
        return None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- the project ------------------------------------------------------------


class Project:
    """A temp copy of the example app, its verger.yml on free ports, and the CLI."""

    def __init__(self, folder: Path, webhook: str) -> None:
        self.folder = folder
        self.project = folder / "koinonia-sms"
        self.config = self.project / "verger.yml"
        self.ports = {"staging": free_port(), "production": free_port()}
        shutil.copytree(
            APP, self.project, ignore=shutil.ignore_patterns("__pycache__", ".verger")
        )
        text = self.config.read_text()
        text = text.replace("127.0.0.1:8081", f"127.0.0.1:{self.ports['staging']}")
        text = text.replace("127.0.0.1:8080", f"127.0.0.1:{self.ports['production']}")
        # Every monitor setting left at its default; only where alerts go is said.
        text += f"\nmonitor:\n  receivers:\n    page:\n      webhook: {webhook}\n"
        self.config.write_text(text)

    def seed(self, seconds: float, rates: dict[str, float]) -> None:
        """Store ``seconds`` of clean router history, as if the agent had run that long.

        The default rules read windows of up to three days; in a store a few
        minutes old, a handful of errors is a large share of every window and
        alerts come sooner than they would on a system that has been running.
        The series are the router source's own, so the agent's first readings
        continue them (a counter that starts again from zero counts as a reset).
        """
        store = MetricStore(self.project / ".verger" / "metrics.db", 30 * 86400.0)
        now = time.time()
        bounds = [*(f"{b:g}" for b in BOUNDS), "+Inf"]
        samples: list[tuple[str, dict[str, str], float, float]] = []
        try:
            for step in range(int(seconds // STEP), 0, -1):
                at = now - step * STEP
                if len(samples) > 50_000:
                    store.write(samples)
                    store.compact(at)
                    samples = []
                for environment, rate in rates.items():
                    total = rate * (seconds - step * STEP)
                    for name in CLASSES:
                        labels = {"environment": environment, "class": name}
                        value = total if name == "2xx" else 0.0
                        samples.append(("verger_requests_total", labels, at, value))
                    for bound in bounds:
                        # Every request answered within 25 ms: the demo's usual.
                        value = total if _bound(bound) >= 0.025 else 0.0
                        labels = {"environment": environment, "le": bound}
                        samples.append((BUCKETS, labels, at, value))
            store.write(samples)
            store.compact(now)
        finally:
            store.close()

    def verger(self, *args: str, timeout: float = 180) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "verger", "-c", str(self.config), *args],
            text=True,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise SystemExit(
                f"bench: 'verger {' '.join(args)}' failed: "
                f"{(done.stderr or done.stdout).strip()}"
            )
        return done.stdout

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.verger("--json", "status"))
        return result

    def pids(self) -> dict[str, int]:
        """The agent's pid, each router's and each live release's."""
        status = self.status()
        pids = {"agent": int(status["agent"]["pid"])}
        for env in status["environments"]:
            if env["router"]["pid"]:
                pids[f"router {env['environment']}"] = int(env["router"]["pid"])
            if env["live"] and env["live"]["pid"]:
                pids[f"live {env['environment']}"] = int(env["live"]["pid"])
        return pids

    def status_of(self, environment: str) -> dict[str, Any]:
        found: dict[str, Any] = next(
            e for e in self.status()["environments"] if e["environment"] == environment
        )
        return found

    def live(self, environment: str) -> bool:
        """Whether the agent says a release is live and running in ``environment``."""
        live = self.status_of(environment)["live"]
        return bool(live and live["running"])

    def source(self, version: str) -> Path:
        folder = self.folder / "sources" / version
        shutil.copytree(
            APP, folder, ignore=shutil.ignore_patterns("__pycache__", ".verger")
        )
        (folder / "verger.yml").unlink()
        return folder

    def url(self, environment: str) -> str:
        return f"http://127.0.0.1:{self.ports[environment]}"


def answers(port: int, path: str = "/health") -> int | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return None
    finally:
        conn.close()


def wait_for(what: str, test: Any, timeout: float) -> float:
    """Seconds until ``test()`` is true; gives up with a message after ``timeout``."""
    started = time.monotonic()
    while not test():
        if time.monotonic() - started > timeout:
            raise SystemExit(f"bench: {what} did not happen within {timeout:g}s")
        time.sleep(0.05)
    return time.monotonic() - started


# -- /proc ------------------------------------------------------------------


def app_process(pid: int) -> int:
    """The process that serves: ``pid`` or its deepest child (start: runs in a shell)."""
    while True:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if not children:
            return pid
        pid = int(children[0])


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (fields 14 and 15 of /proc/PID/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def memory_mb(pid: int) -> tuple[float, float]:
    """(RSS now, peak RSS) of ``pid`` in MB, from /proc/PID/status."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


@dataclass
class Usage:
    cpu_percent: float
    rss_steady: float
    rss_peak: float


def measure(pids: dict[str, int], seconds: float) -> dict[str, Usage]:
    """CPU % of one core and RSS of each process over ``seconds``."""
    start_cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
    samples: dict[str, list[float]] = {name: [] for name in pids}
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        for name, pid in pids.items():
            samples[name].append(memory_mb(pid)[0])
        time.sleep(1.0)
    elapsed = time.monotonic() - started
    return {
        name: Usage(
            100 * (cpu_seconds(pid) - start_cpu[name]) / elapsed,
            statistics.median(samples[name]),
            memory_mb(pid)[1],
        )
        for name, pid in pids.items()
    }


# -- one run ----------------------------------------------------------------


@dataclass
class RunResult:
    usage: dict[str, Usage] = field(default_factory=dict)
    false_alarms: list[str] = field(default_factory=list)
    errors: Found = None
    errors_any: Found = None
    restart_s: float = 0.0
    restart_failed: int = 0
    killed: Found = None
    down: Found = None
    down_any: Found = None


@dataclass
class Demo:
    """One agent serving the example app, its webhook and its users."""

    project: Project
    webhook: Webhook
    staging: Traffic
    production: Traffic

    def alarms(self) -> list[str]:
        """Every firing alert received so far, as ``name (environment)``."""
        return [
            f"{name} ({environment})"
            for arrival in self.webhook.arrivals
            for environment in ("staging", "production")
            for name in arrival.firing_in(environment)
        ]

    def release_folder(self, environment: str) -> Path:
        return Path(
            os.readlink(f"/proc/{self.project.pids()[f'live {environment}']}/cwd")
        )


@contextlib.contextmanager
def running_demo(args: argparse.Namespace) -> Iterator[Demo]:
    """A fresh project with v1 live in staging and production under traffic."""
    folder = Path(tempfile.mkdtemp(prefix="vmb-"))
    webhook = Webhook()
    project = Project(folder, webhook.url)
    staging = Traffic(project.url("staging"), connections=1, rate=args.rate / 2)
    production = Traffic(project.url("production"), connections=2, rate=args.rate)
    try:
        if args.history:
            rates = {"production": args.rate, "staging": args.rate / 2}
            project.seed(args.history, rates)
        project.verger("up")
        release_v1(project, staging)
        production.start()
        yield Demo(project, webhook, staging, production)
    finally:
        for traffic in (staging, production):
            if traffic.workers:
                traffic.stop()
        try:
            project.verger("down", timeout=60)
        finally:
            webhook.close()
            if args.keep:
                print(f"bench: kept {folder}", file=sys.stderr)
            else:
                shutil.rmtree(folder, ignore_errors=True)


def release_v1(project: Project, staging: Traffic) -> None:
    """Release v1; staging's traffic starts once it serves, so its window passes."""
    command = subprocess.Popen(
        [sys.executable, "-m", "verger", "-c", str(project.config), "release",
         str(project.source("v1")), "--version", "v1", "--yes"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    # Asked of the agent, not of the router: the router's 503s before a release
    # is live count as errors, and would page before the bench begins.
    wait_for(
        "v1 live in staging",
        lambda: project.live("staging") or command.poll() is not None,
        180,
    )
    staging.start()
    output, _ = command.communicate(timeout=300)
    if command.returncode != 0:
        raise SystemExit(f"bench: releasing v1 failed:\n{output}")


def one_run(args: argparse.Namespace, number: int) -> RunResult:
    """Steady, then the kill the agent heals, then both lasting faults at once.

    Each lasting fault is in an environment of its own, so that each has an
    alert group of its own: a group that has just sent waits its group
    interval (5 minutes) before it sends again.
    """
    result = RunResult()
    with running_demo(args) as demo:
        pids = demo.project.pids()
        watched = {k: v for k, v in pids.items() if not k.startswith("live")}
        say(number, f"steady: measuring {', '.join(watched)} for {args.steady:g}s")
        result.usage = measure(watched, args.steady)
        result.false_alarms = demo.alarms()

        say(
            number, "killed: staging's live release gets SIGKILL; the agent restarts it"
        )
        result.restart_s, result.restart_failed, result.killed = kill_and_restart(
            demo, app_process(pids["live staging"]), args.quiet
        )

        say(number, "errors in production; staging killed and unable to start")
        fault = demo.release_folder("production") / "FAULT"
        (demo.release_folder("staging") / "FAULT").write_text("crash-at-start\n")
        live = app_process(demo.project.pids()["live staging"])
        since = time.time()
        fault.write_text("errors-when-live\n")
        os.kill(live, signal.SIGKILL)
        webhook = demo.webhook
        page = "critical"
        result.errors = webhook.wait_firing(
            "production", since, args.alert_timeout, page
        )
        fault.unlink()
        result.errors_any = webhook.first_firing("production", since)
        if result.killed is None:  # else staging's group has just sent
            left = max(0.0, args.alert_timeout - (time.time() - since))
            result.down = webhook.wait_firing("staging", since, left, page)
            result.down_any = webhook.first_firing("staging", since)
    return result


def kill_and_restart(demo: Demo, pid: int, quiet: float) -> tuple[float, int, Found]:
    """SIGKILL ``pid``; how long until staging serves again, failures, any alert."""
    # The release's own port, not the router's: polling through the router
    # would add 502s of its own to the error rate the rules read.
    port = int(demo.project.status_of("staging")["live"]["port"])
    failed_before = demo.staging.summary()["failed"]
    since = time.time()
    os.kill(pid, signal.SIGKILL)
    wait_for("staging failing", lambda: answers(port) != 200, 10)
    wait_for("staging serving again", lambda: answers(port) == 200, 60)
    restored = time.time() - since
    alert = demo.webhook.wait_firing("staging", since, quiet)
    failed = demo.staging.summary()["failed"] - failed_before
    return restored, failed, alert


def say(number: int, text: str) -> None:
    print(f"[run {number}] {text}", file=sys.stderr, flush=True)


# -- the table --------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values)


def latency_row(
    name: str, found: list[Found], timeout: float
) -> tuple[str, str, str, str]:
    """A detection row: median seconds to the webhook and the alerts that came."""
    target = f"< {DETECT_TARGET:g} s"
    if not found:
        return name, "not measured: its alert group had just sent", target, "-"
    times = [f[0] for f in found if f is not None]
    alerts = ", ".join(sorted({f[1] for f in found if f is not None}))
    if len(times) < len(found):
        missing = len(found) - len(times)
        figure = f"no alert within {timeout:g} s in {missing} of {len(found)} runs"
        if times:
            figure += f"; {median(times):.1f} s ({alerts}) in the others"
        return name, figure, target, "missed"
    spread = f" ({min(times):.1f}-{max(times):.1f})" if len(times) > 1 else ""
    met = "met" if median(times) < DETECT_TARGET else "missed"
    return name, f"{median(times):.1f} s{spread}, alert {alerts}", target, met


def restart_row(results: list[RunResult], timeout: float) -> tuple[str, str, str, str]:
    """The kill the agent heals: time to serve again, failures, and any alert."""
    restart = [r.restart_s for r in results]
    failed = median([float(r.restart_failed) for r in results])
    alerted = [r.killed for r in results if r.killed is not None]
    figure = (
        f"serving again after {median(restart):.1f} s, {failed:.0f} requests failed; "
    )
    if alerted:
        names = ", ".join(sorted({a[1] for a in alerted}))
        figure += (
            f"alert in {median([a[0] for a in alerted]):.1f} s ({names}) "
            f"in {len(alerted)} of {len(results)} runs"
        )
    else:
        figure += f"no alert within {timeout:g} s"
    met = "met" if median(restart) < DETECT_TARGET else "missed"
    return (
        "killed: staging release SIGKILLed, the agent starts it again",
        figure,
        f"serving again < {DETECT_TARGET:g} s",
        met,
    )


def table(results: list[RunResult], args: argparse.Namespace) -> str:
    alarms = sorted({a for r in results for a in r.false_alarms})
    false_alarms = median([float(len(r.false_alarms)) for r in results])
    rows = [
        latency_row(
            "errors: live production release answers 500 -> first page (critical)",
            [r.errors for r in results],
            args.alert_timeout,
        ),
        latency_row(
            "errors -> first alert of any tier",
            [r.errors_any for r in results],
            args.alert_timeout,
        ),
        latency_row(
            "killed, stays down: staging release SIGKILLed, cannot start "
            "again -> first page (critical)",
            [r.down for r in results if r.killed is None],
            args.alert_timeout,
        ),
        latency_row(
            "killed, stays down -> first alert of any tier",
            [r.down_any for r in results if r.killed is None],
            args.alert_timeout,
        ),
        restart_row(results, args.quiet),
        (
            "alerts before any fault (release v1, then steady traffic)",
            f"{false_alarms:.0f}" + (f": {', '.join(alarms)}" if alarms else ""),
            "0",
            "met" if not alarms else "missed",
        ),
    ]
    for name in results[0].usage:
        cpu = median([r.usage[name].cpu_percent for r in results])
        steady = median([r.usage[name].rss_steady for r in results])
        peak = median([r.usage[name].rss_peak for r in results])
        if name == "agent":
            rows.append(
                ("agent CPU, % of one core", f"{cpu:.2f} %", f"< {CPU_TARGET:g} %",
                 "met" if cpu < CPU_TARGET else "missed")
            )  # fmt: skip
            rows.append(
                ("agent RSS, steady / peak", f"{steady:.0f} / {peak:.0f} MB",
                 f"< {RSS_TARGET:g} MB", "met" if peak < RSS_TARGET else "missed")
            )  # fmt: skip
        else:
            rows.append(
                (f"{name} (own process): CPU, RSS steady / peak",
                 f"{cpu:.2f} %, {steady:.0f} / {peak:.0f} MB", "-", "-")
            )  # fmt: skip
    command = (
        f"python bench/monitor_bench.py --runs {args.runs} --steady {args.steady:g} "
        f"--rate {args.rate:g} --history {args.history:g}"
    )
    history = (
        f"{args.history:g} s of clean router history stored before each agent starts"
        if args.history
        else "a new metric store (its windows hold only the minutes of the run)"
    )
    lines = [
        "# Monitor benchmark",
        "",
        f"`{command}`; medians of {len(results)} runs (range in brackets). The "
        "real agent with default monitor intervals and rules, the example app "
        f"in staging and production under {args.rate:g} + {args.rate / 2:g} "
        f"requests/s; {history}; CPU over {args.steady:g} s of steady monitoring.",
        "",
        "| measure | result | target | |",
        "|---|---|---|---|",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steady", type=float, default=60, help="seconds of CPU")
    parser.add_argument("--rate", type=float, default=10, help="production req/s")
    parser.add_argument(
        "--history",
        type=float,
        default=3 * 86400,
        help="seconds of clean router history stored before the agent starts",
    )
    parser.add_argument(
        "--quiet",
        type=float,
        default=20,
        help="seconds to watch for an alert after a kill the agent heals",
    )
    parser.add_argument(
        "--alert-timeout", type=float, default=120, help="seconds to wait for an alert"
    )
    parser.add_argument("--keep", action="store_true", help="keep the run folders")
    args = parser.parse_args()

    results = [one_run(args, n + 1) for n in range(args.runs)]
    text = table(results, args)
    print(text)
    out = ROOT / "bench" / "results" / "monitor.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
