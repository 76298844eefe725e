"""Request counters that every router keeps, and the figures the watch window reads.

A router counts requests by status class and keeps a cumulative latency
histogram with fixed bounds. The watch window takes two snapshots and reads
the difference: its error rate and its 95th percentile.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

# Upper bounds in seconds; the last bucket is everything slower.
BOUNDS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


@dataclass
class Stats:
    """Cumulative counts since a router started."""

    requests: int = 0
    classes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CLASSES, 0))
    # Requests the router itself failed: upstream unreachable, reset or timed out.
    router_errors: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BOUNDS) + 1))
    started: float = 0.0

    def record(
        self, status: int, seconds: float, *, router_error: bool = False
    ) -> None:
        self.requests += 1
        name = f"{status // 100}xx"
        if name in self.classes:
            self.classes[name] += 1
        if router_error:
            self.router_errors += 1
        self.buckets[bisect.bisect_left(BOUNDS, seconds)] += 1

    def since(self, older: Stats) -> Stats:
        """The requests counted after ``older`` was taken."""
        if older.started != self.started or older.requests > self.requests:
            # The router restarted in between: everything it has now is new.
            return self
        return Stats(
            requests=self.requests - older.requests,
            classes={
                k: self.classes.get(k, 0) - older.classes.get(k, 0) for k in CLASSES
            },
            router_errors=self.router_errors - older.router_errors,
            buckets=[a - b for a, b in zip(self.buckets, older.buckets, strict=True)],
            started=self.started,
        )

    @property
    def errors(self) -> int:
        """Answers that count against the error rate: 5xx, including the router's own."""
        return self.classes.get("5xx", 0)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def quantile(self, q: float) -> float:
        """The q-th quantile in seconds, interpolated inside its histogram bucket."""
        total = sum(self.buckets)
        if total == 0:
            return 0.0
        rank = q * total
        running = 0
        for index, count in enumerate(self.buckets):
            if count and running + count >= rank:
                if index == len(BOUNDS):
                    return float("inf")
                lower = BOUNDS[index - 1] if index else 0.0
                share = (rank - running) / count
                return lower + (BOUNDS[index] - lower) * share
            running += count
        return float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "classes": dict(self.classes),
            "router_errors": self.router_errors,
            "buckets": list(self.buckets),
            "bounds": list(BOUNDS),
            "started": self.started,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Stats:
        return cls(
            requests=int(data["requests"]),
            classes={k: int(data["classes"].get(k, 0)) for k in CLASSES},
            router_errors=int(data.get("router_errors", 0)),
            buckets=[int(n) for n in data["buckets"]],
            started=float(data.get("started", 0.0)),
        )
