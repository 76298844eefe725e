"""The dashboard's numbers, read from the metric store with the rules' own expressions.

Each tile is a rule expression evaluated now (p95 and error rate over the
same five minutes the latency and error-rate rules use; uptime as one minus
the error ratio over the SLO's 30 days). A chart evaluates the same
expression at steps across its range, with a window as long as a step, and
reads the store's five-minute rollups once a step is that long. A value
that cannot be known (no samples, no requests to divide by) is ``None``,
never 0.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from verger.config.types import format_duration
from verger.monitor.rules import REQUESTS, Evaluator, error_ratio, p95_latency, parse
from verger.monitor.store import ROLLUP, Matcher, MetricStore, Series

# The window of the rules the tiles share: error_rate_* and latency_* read 5m.
RULE_WINDOW = 300.0
SLO_WINDOW = "30d"
RANGES = {"1h": 3600.0, "6h": 6 * 3600.0, "24h": 86400.0, "7d": 7 * 86400.0}
RANGES["30d"] = 30 * 86400.0
POINTS = 120


def step_for(span: float) -> float:
    """Seconds between a chart's points: about POINTS of them, in whole tens."""
    return max(10.0, math.ceil(span / POINTS / 10) * 10)


@dataclass(frozen=True)
class Metric:
    """One number of the dashboard: how it is read, its unit, the rules it colours."""

    name: str
    title: str
    unit: str
    # A rate over a window (the expression takes the window) or a gauge read as is.
    expr: Callable[[str], str]
    per_environment: bool
    rules: tuple[str, ...] = ()
    gauge: str | None = None
    combine: str = "max"


def _gauge(name: str, combine: str) -> Callable[[str], str]:
    return lambda _window: f"{combine}({name})"


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric(
            "p95",
            "API response time (p95)",
            "seconds",
            p95_latency,
            True,
            ("latency_critical", "latency_high"),
        ),
        Metric(
            "error_rate",
            "Error rate",
            "ratio",
            error_ratio,
            True,
            # Rules on the error ratio itself; burn rates go to the alerts tile.
            ("error_rate_critical", "error_rate_high"),
        ),
        Metric(
            "throughput",
            "Requests",
            "per_second",
            lambda w: f"sum by (environment) (rate({REQUESTS}[{w}]))",
            True,
            ("api_down",),
        ),
        Metric(
            "database_latency",
            "Database latency (slowest query)",
            "seconds",
            _gauge("verger_postgres_slowest_query_seconds", "max"),
            False,
            ("slow_query", "connection_pool_exhausted"),
            gauge="verger_postgres_slowest_query_seconds",
        ),
        Metric(
            "cache_hit_rate",
            "Cache hit rate",
            "ratio",
            _gauge("verger_redis_hit_ratio", "avg"),
            False,
            gauge="verger_redis_hit_ratio",
            combine="avg",
        ),
        Metric(
            "queue_depth",
            "Queue depth",
            "count",
            _gauge("verger_redis_queue_length", "sum"),
            False,
            gauge="verger_redis_queue_length",
            combine="sum",
        ),
        Metric(
            "cpu",
            "CPU",
            "ratio",
            _gauge("verger_host_cpu_ratio", "max"),
            False,
            ("cpu_high",),
            gauge="verger_host_cpu_ratio",
        ),
    )
}


def _known(value: float) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else value


def _pick(result: object, environment: str | None) -> float | None:
    """The one number of a result: a scalar, or the vector's sample for the environment."""
    if isinstance(result, float):
        return _known(result)
    assert isinstance(result, list)
    values = [
        s.value
        for s in result
        if environment is None or s.labels.get("environment") == environment
    ]
    return _known(values[0]) if values else None


class Readings:
    """Tiles and charts of one metric store."""

    def __init__(self, store: MetricStore) -> None:
        self.store = store
        self.evaluator = Evaluator(store)

    def now(self, metric: Metric, environment: str, at: float) -> float | None:
        """The tile: the metric's expression over the rules' window at ``at``."""
        node = parse(metric.expr(format_duration(RULE_WINDOW)))
        env = environment if metric.per_environment else None
        return _pick(self.evaluator.instant(node, at), env)

    def uptime(self, environment: str, at: float) -> float | None:
        """Requests answered without a 5xx over the SLO window, as a fraction."""
        node = parse(error_ratio(SLO_WINDOW))
        errors = _pick(self.evaluator.instant(node, at), environment)
        return None if errors is None else 1.0 - errors

    def series(
        self, metric: Metric, environment: str, span: float, end: float
    ) -> tuple[float, list[tuple[float, float | None]]]:
        """The chart: (step, points) over ``span`` up to ``end``, oldest first."""
        step = step_for(span)
        times = [end - step * i for i in range(POINTS - 1, -1, -1)]
        times = [t for t in times if t > end - span]
        if metric.gauge is not None:
            return step, self._gauge(metric, times, step)
        window = max(RULE_WINDOW, step)
        node = parse(metric.expr(format_duration(window)))
        # Windows of several rollup buckets read the rollups: a rate needs
        # only each bucket's last counter value.
        store = _RollupView(self.store) if window >= 2 * ROLLUP else self.store
        evaluator = Evaluator(store)  # type: ignore[arg-type]
        return step, [
            (t, _pick(evaluator.instant(node, t), environment)) for t in times
        ]

    def _gauge(
        self, metric: Metric, times: Sequence[float], step: float
    ) -> list[tuple[float, float | None]]:
        assert metric.gauge is not None
        if not times:
            return []
        found = self.store.select(metric.gauge, [], times[0] - step, times[-1])
        return [(t, _combine(found, t - step, t, metric.combine)) for t in times]


def _combine(
    found: Sequence[Series], start: float, end: float, how: str
) -> float | None:
    """Each series' last sample in (start, end], combined across series."""
    lasts = []
    for series in found:
        index = bisect.bisect_right(series.times, end) - 1
        if index >= 0 and series.times[index] > start:
            value = series.values[index]
            if not math.isnan(value):
                lasts.append(value)
    if not lasts:
        return None
    if how == "sum":
        return sum(lasts)
    if how == "avg":
        return sum(lasts) / len(lasts)
    return max(lasts)


class _RollupView:
    """The metric store as the evaluator sees it, with every read from rollups."""

    def __init__(self, store: MetricStore) -> None:
        self.store = store

    def select(
        self,
        name: str | None,
        matchers: Sequence[Matcher],
        start: float,
        end: float,
        rollup: bool | None = None,
    ) -> list[Series]:
        return self.store.select(name, matchers, start, end, rollup=True)
