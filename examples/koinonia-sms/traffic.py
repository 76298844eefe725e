"""Steady user traffic against koinonia-sms, counting every failed request.

Each connection is one thread with one keep-alive HTTP/1.1 connection that
creates a church, adds members, reads them back and sends messages. A request
that meets a connection error, a reset, a timeout or a 5xx answer counts as
failed and is never retried. An idle connection that the server closed is
noticed before it is reused and counted under ``reconnects``.

From Python, in a background thread::

    traffic = Traffic("http://127.0.0.1:8080", connections=4, rate=40)
    traffic.start()
    ...                       # release, switch, watch window
    summary = traffic.stop()  # {"sent": 812, "failed": 0, "versions": {...}, ...}

From a shell (prints the summary as JSON; exits 1 if any request failed)::

    python traffic.py http://127.0.0.1:8080 --connections 4 --rate 40 --duration 30
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import select
import signal
import sys
import threading
import time
import urllib.parse
from collections import Counter
from typing import Any

MAX_MEMBERS = 25  # per church, so that sending a message stays cheap


class Tally:
    """What the workers saw, shared between them under one lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started = time.monotonic()
        self.sent = 0
        self.failures: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.versions: Counter[str] = Counter()
        self.first_seen: dict[str, float] = {}
        self.reconnects = 0
        self.latencies: list[float] = []
        self.errors: list[str] = []

    def answered(self, status: int, version: str, seconds: float, what: str) -> None:
        with self.lock:
            self.sent += 1
            self.statuses[str(status)] += 1
            self.versions[version] += 1
            self.first_seen.setdefault(
                version, round(time.monotonic() - self.started, 3)
            )
            self.latencies.append(seconds)
            if status >= 500:
                self.failed("5xx", f"{what}: {status}")

    def unanswered(self, kind: str, what: str) -> None:
        with self.lock:
            self.sent += 1
            self.failed(kind, what)

    def failed(self, kind: str, what: str) -> None:
        self.failures[kind] += 1
        if len(self.errors) < 10 and what not in self.errors:
            self.errors.append(what)

    def summary(self) -> dict[str, Any]:
        with self.lock:
            latencies = sorted(self.latencies)
            seconds = time.monotonic() - self.started
            return {
                "seconds": round(seconds, 2),
                "sent": self.sent,
                "failed": sum(self.failures.values()),
                "failures": dict(self.failures),
                "statuses": dict(self.statuses),
                "versions": dict(self.versions),
                "first_seen": dict(self.first_seen),
                "reconnects": self.reconnects,
                "rate": round(self.sent / seconds, 1) if seconds else 0.0,
                "latency_ms": {
                    "p50": percentile(latencies, 0.50),
                    "p95": percentile(latencies, 0.95),
                    "max": percentile(latencies, 1.0),
                },
                "errors": list(self.errors),
            }


def percentile(ordered: list[float], fraction: float) -> float | None:
    if not ordered:
        return None
    index = min(len(ordered) - 1, int(fraction * len(ordered)))
    return round(ordered[index] * 1000, 1)


def failure_kind(exc: Exception) -> str:
    """``refused`` (nothing listens), ``timeout`` or ``disconnected`` (reset, EOF)."""
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "disconnected"


class Worker(threading.Thread):
    """One keep-alive connection acting as one user of the API."""

    def __init__(self, traffic: Traffic, number: int) -> None:
        super().__init__(name=f"traffic-{number}", daemon=True)
        self.traffic = traffic
        self.number = number
        self.conn = http.client.HTTPConnection(
            traffic.host, traffic.port, timeout=traffic.timeout
        )
        self.church: int | None = None
        self.members = 0
        self.message: int | None = None
        self.phones = 0

    def run(self) -> None:
        pause = self.traffic.connections / self.traffic.rate if self.traffic.rate else 0
        due = time.monotonic() + random.uniform(0, pause)
        while not self.traffic.stopping.wait(max(0.0, due - time.monotonic())):
            self.step()
            # Keep the pace steady; after a slow answer, resume rather than burst.
            due = max(due + pause, time.monotonic())
        self.conn.close()

    def step(self) -> None:
        method, path, body = self.choose()
        answer = self.request(method, path, body)
        if answer is None:
            return
        if path == "/churches":
            self.church, self.members = answer.get("id"), 0
        elif path.endswith("/members") and method == "POST":
            self.members += 1
        elif path.endswith("/messages"):
            self.message = answer.get("id")

    def choose(self) -> tuple[str, str, Any]:
        church = f"/churches/{self.church}"
        roll = random.random()
        if self.church is None or (roll < 0.25 and self.members >= MAX_MEMBERS):
            return "POST", "/churches", {"name": f"Traffic Church {self.number}"}
        if roll < 0.25 or self.members == 0:
            self.phones += 1
            phone = f"+1555{self.number:03d}{self.phones:06d}"
            member = {"name": f"Member {self.phones}", "phone": phone}
            return "POST", f"{church}/members", member
        if roll < 0.35:
            return "POST", f"{church}/messages", {"body": "Choir practice at 7"}
        if roll < 0.45 and self.message is not None:
            return "GET", f"/messages/{self.message}", None
        if roll < 0.7:
            return "GET", f"{church}/members", None
        return "GET", church, None

    def request(self, method: str, path: str, body: Any) -> dict[str, Any] | None:
        """Send one request; return its JSON answer if it succeeded, else None."""
        tally = self.traffic.tally
        what = f"{method} {path}"
        self.drop_if_closed()
        payload = None if body is None else json.dumps(body)
        headers = {"Content-Type": "application/json", "User-Agent": "koinonia-traffic"}
        started = time.monotonic()
        try:
            self.conn.request(method, path, body=payload, headers=headers)
            response = self.conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.conn.close()
            tally.unanswered(failure_kind(exc), f"{what}: {exc!r}")
            return None

        version = response.getheader("X-App-Version") or "unknown"
        tally.answered(response.status, version, time.monotonic() - started, what)
        if response.status >= 300:
            return None
        try:
            answer = json.loads(data)
        except ValueError:
            return None
        return answer if isinstance(answer, dict) else None

    def drop_if_closed(self) -> None:
        # An idle keep-alive socket that is readable has been closed by the server
        # (or holds bytes nobody asked for): open a new connection before sending.
        sock = self.conn.sock
        if sock is None:
            return
        readable, _, _ = select.select([sock], [], [], 0)
        if readable:
            self.conn.close()
            with self.traffic.tally.lock:
                self.traffic.tally.reconnects += 1


class Traffic:
    """Steady traffic from ``connections`` threads at about ``rate`` requests a second.

    ``rate`` 0 sends as fast as the answers come. ``duration`` (seconds) stops
    the traffic by itself; otherwise it runs until ``stop()``.
    """

    def __init__(
        self,
        base_url: str,
        connections: int = 4,
        rate: float = 40.0,
        duration: float | None = None,
        timeout: float = 5.0,
    ) -> None:
        url = urllib.parse.urlsplit(base_url)
        if url.scheme != "http" or not url.hostname:
            raise ValueError(
                f"expected a URL such as http://127.0.0.1:8080: {base_url!r}"
            )
        if connections < 1 or rate < 0:
            raise ValueError("connections must be at least 1 and rate at least 0")
        self.base_url = base_url
        self.host, self.port = url.hostname, url.port or 80
        self.connections, self.rate = connections, rate
        self.duration, self.timeout = duration, timeout
        self.stopping = threading.Event()
        self.tally = Tally()
        self.workers: list[Worker] = []
        self.timer: threading.Timer | None = None

    def start(self) -> Traffic:
        self.tally = Tally()
        self.workers = [Worker(self, n) for n in range(self.connections)]
        for worker in self.workers:
            worker.start()
        if self.duration is not None:
            self.timer = threading.Timer(self.duration, self.stopping.set)
            self.timer.daemon = True
            self.timer.start()
        return self

    def summary(self) -> dict[str, Any]:
        """The counts so far; safe to call while the traffic runs."""
        setup = {"base_url": self.base_url, "connections": self.connections}
        return setup | self.tally.summary()

    def wait(self) -> dict[str, Any]:
        """Block until the duration ends or stop() is called, then summarise."""
        for worker in self.workers:
            while worker.is_alive():
                worker.join(0.2)
        return self.summary()

    def stop(self) -> dict[str, Any]:
        """Stop sending, let requests in flight finish, and return the summary."""
        self.stopping.set()
        if self.timer is not None:
            self.timer.cancel()
        for worker in self.workers:
            worker.join(self.timeout + 1)
        return self.summary()

    def __enter__(self) -> Traffic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_url", help="such as http://127.0.0.1:8080")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--rate", type=float, default=40.0, help="requests/s, 0: max")
    parser.add_argument("--duration", type=float, help="seconds; default: until ^C")
    parser.add_argument("--timeout", type=float, default=5.0, help="per request")
    args = parser.parse_args(argv)

    traffic = Traffic(
        args.base_url, args.connections, args.rate, args.duration, args.timeout
    )
    signal.signal(signal.SIGTERM, lambda *_: traffic.stopping.set())
    traffic.start()
    try:
        summary = traffic.wait()
    except KeyboardInterrupt:
        summary = traffic.stop()
    print(json.dumps(summary, indent=2))
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
