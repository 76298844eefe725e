"""The watch window: after a switch, read the router's counters and judge the release."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from verger.config import Watch
from verger.deploy.routers import Router, Stats

# An inconclusive verdict's reason; the promotion gate reads the counts back from it.
TOO_FEW = (
    "only {requests} requests in {seconds:.0f}s (at least {needed} needed to judge)"
)
_TOO_FEW = re.compile(r"only (\d+) requests in \d+s \(at least (\d+) needed to judge\)")


def too_few(reason: str) -> tuple[int, int] | None:
    """The requests seen and needed, from an inconclusive verdict's reason."""
    match = _TOO_FEW.fullmatch(reason)
    return (int(match.group(1)), int(match.group(2))) if match else None


@dataclass(frozen=True)
class Verdict:
    """How a watch window ended: passed, breached or inconclusive, and why."""

    outcome: str
    reason: str
    requests: int
    error_rate: float
    p95: float
    seconds: float

    @property
    def breached(self) -> bool:
        return self.outcome == "breached"


def judge(window: Stats, watch: Watch, seconds: float, final: bool) -> Verdict | None:
    """A verdict for the counters so far, or None while the window is still open."""
    rate, p95 = window.error_rate, window.quantile(0.95)
    figures = (window.requests, rate, p95, seconds)
    if window.requests >= watch.min_requests:
        if rate > watch.max_error_rate:
            reason = (
                f"error rate {rate:.1%} > {watch.max_error_rate:.1%} "
                f"over {window.requests} requests in {seconds:.0f}s"
            )
            return Verdict("breached", reason, *figures)
        if p95 > watch.max_p95:
            reason = (
                f"p95 latency {p95 * 1000:.0f}ms > {watch.max_p95 * 1000:.0f}ms "
                f"over {window.requests} requests in {seconds:.0f}s"
            )
            return Verdict("breached", reason, *figures)
    if not final:
        return None
    if window.requests < watch.min_requests:
        reason = TOO_FEW.format(
            requests=window.requests, seconds=seconds, needed=watch.min_requests
        )
        return Verdict("inconclusive", reason, *figures)
    reason = (
        f"error rate {rate:.1%}, p95 {p95 * 1000:.0f}ms over "
        f"{window.requests} requests in {seconds:.0f}s"
    )
    return Verdict("passed", reason, *figures)


async def watch_window(
    router: Router,
    watch: Watch,
    baseline: Stats,
    on_tick: Callable[[Stats, float], None] | None = None,
) -> Verdict:
    """Watch for ``watch.duration``; return as soon as a breach is seen."""
    started = time.monotonic()
    while True:
        await asyncio.sleep(min(watch.interval, watch.duration))
        elapsed = time.monotonic() - started
        window = (await router.stats()).since(baseline)
        if on_tick is not None:
            on_tick(window, elapsed)
        verdict = judge(window, watch, elapsed, final=elapsed >= watch.duration)
        if verdict is not None:
            return verdict
