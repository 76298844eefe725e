"""Evaluating a rule expression against the metric store at one instant.

The semantics follow Prometheus 2 so that an exported rule fires when
verger's does: an instant selector takes each series' newest sample in the
five minutes up to the instant; a range selector takes the samples with
``t - range <= sample <= t``; ``rate`` and ``increase`` extrapolate to the
window's edges the way Prometheus does; binary operators match series on
all labels but the name.

As in Prometheus, a series' first sample is where its counting starts: a
counter first seen at 6 does not count those 6 (a series is not assumed to
start from 0, so that an exported rule means the same), while one first
seen at 0, as verger's router reports every class, counts all that follows.
Windows over six hours read five-minute rollups; there a counter's increase
is rebuilt from each bucket's first value, last value and resets, so it is
the increase of the raw samples, give or take the bucket at each edge of
the window, and an exported rule over the same samples gives the same.
The ``*_over_time`` functions there take the min, max, sum and count of
each bucket wholly inside the window and read the part-covered buckets at
its edges raw, so they give what the raw samples give.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

from verger.monitor.rules.expr import (
    Aggregate,
    Binary,
    Call,
    ExprError,
    Negate,
    Node,
    Number,
    Selector,
)
from verger.monitor.store import ROLLUP, MetricStore, Series

LOOKBACK = 300.0
# Range selectors over longer windows than this read five-minute rollups.
ROLLUP_WINDOW = 6 * 3600.0

_SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


@dataclass(frozen=True)
class Sample:
    """One element of an instant vector."""

    labels: dict[str, str]
    value: float


Vector = list[Sample]
Value = float | Vector


def _key(
    labels: dict[str, str],
    on: tuple[str, ...] | None = None,
    ignoring: tuple[str, ...] = (),
) -> tuple[tuple[str, str], ...]:
    if on is not None:
        return tuple(sorted((k, v) for k, v in labels.items() if k in on))
    skip = {"__name__", *ignoring}
    return tuple(sorted((k, v) for k, v in labels.items() if k not in skip))


def _without_name(labels: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if k != "__name__"}


class Evaluator:
    """Evaluates expression trees against one store."""

    def __init__(self, store: MetricStore) -> None:
        self.store = store

    def instant(self, node: Node, t: float) -> Value:
        """The value of ``node`` at time ``t``: a number or an instant vector."""
        if isinstance(node, Number):
            return node.value
        if isinstance(node, Selector):
            if node.range is not None:
                raise ExprError("a range selector needs a function such as rate()")
            return self._select(node, t)
        if isinstance(node, Negate):
            inner = self.instant(node.expr, t)
            if isinstance(inner, float):
                return -inner
            return [Sample(_without_name(s.labels), -s.value) for s in inner]
        if isinstance(node, Call):
            return self._call(node, t)
        if isinstance(node, Aggregate):
            return self._aggregate(node, t)
        return self._binary(node, t)

    def _select(self, node: Selector, t: float) -> Vector:
        out = []
        for series in self.store.select(
            node.name, node.matchers, t - LOOKBACK, t, rollup=False
        ):
            labels = {"__name__": series.name, **series.labels}
            out.append(Sample(labels, series.values[-1]))
        return out

    def _range(self, node: Selector, t: float) -> list[Series]:
        window = node.range or 0.0
        # Long windows read rollups, which keep what a rate needs of each bucket.
        return self.store.select(
            node.name, node.matchers, t - window, t, rollup=window > ROLLUP_WINDOW
        )

    def _call(self, node: Call, t: float) -> Value:
        name = node.function
        if name == "histogram_quantile":
            q = node.args[0]
            assert isinstance(q, Number)
            return _quantiles(q.value, self._vector(node.args[1], t))
        if name == "abs":
            return [
                Sample(_without_name(s.labels), abs(s.value))
                for s in self._vector(node.args[0], t)
            ]
        if name == "absent":
            return _absent(node.args[0], bool(self._vector(node.args[0], t)))
        selector = node.args[0]
        assert isinstance(selector, Selector)
        series = self._range(selector, t)
        if name == "absent_over_time":
            return _absent(selector, bool(series))
        window = selector.range or 0.0
        over = _OVER_TIME.get(name)
        if over is not None:
            return self._over_time(selector, series, t - window, t, name)
        out = []
        for s in series:
            value = _extrapolated(s, t - window, t, name == "rate")
            if value is not None:
                out.append(Sample(dict(s.labels), value))
        return out

    def _over_time(
        self,
        selector: Selector,
        series: list[Series],
        start: float,
        end: float,
        name: str,
    ) -> Vector:
        rolled = all(s.buckets is not None for s in series)
        if end - start > ROLLUP_WINDOW and rolled:
            summaries = self._from_rollups(selector, series, start, end)
        else:
            summaries = _summaries(series)
        keep_name = name == "last_over_time"
        out = []
        for s, summary in summaries.values():
            labels = {"__name__": s.name, **s.labels} if keep_name else dict(s.labels)
            out.append(Sample(labels, _OVER_TIME[name](summary)))
        return out

    def _from_rollups(
        self, selector: Selector, series: list[Series], start: float, end: float
    ) -> dict[_SeriesKey, tuple[Series, _Summary]]:
        """Each series' summary over the window from whole buckets and raw edges.

        The buckets wholly inside the window give their min, max, sum and
        count; the samples of the part-covered buckets at each edge are read
        raw (a few minutes at most), so the summary is the raw samples'. Past
        raw retention the samples at the window's opening are gone and only
        its whole buckets count.
        """
        opened = math.ceil(start / ROLLUP) * ROLLUP
        # The bucket ending last before ``end`` may still be filling in the head.
        closed = math.floor(end / ROLLUP) * ROLLUP - ROLLUP
        if closed < opened:
            return _summaries(
                self.store.select(
                    selector.name, selector.matchers, start, end, rollup=False
                )
            )
        opening = self.store.select(
            selector.name, selector.matchers, start, opened, rollup=False
        )
        closing = self.store.select(
            selector.name, selector.matchers, closed, end, rollup=False
        )
        parts: dict[_SeriesKey, list[_Summary | None]] = {}
        found: dict[_SeriesKey, Series] = {}
        for s in opening:
            values = [v for t, v in zip(s.times, s.values, strict=True) if t < opened]
            _add(parts, found, s, _Summary.of(values))
        for s in series:
            _add(parts, found, s, _Summary.of_buckets(s, opened + ROLLUP, closed))
        for s in closing:
            _add(parts, found, s, _Summary.of(s.values))
        out = {}
        for key, summaries in parts.items():
            merged = _Summary.merge(summaries)
            if merged is not None:
                out[key] = (found[key], merged)
        return out

    def _vector(self, node: Node, t: float) -> Vector:
        value = self.instant(node, t)
        if isinstance(value, float):
            raise ExprError("expected a vector, found a number")
        return value

    def _aggregate(self, node: Aggregate, t: float) -> Vector:
        groups: dict[tuple[tuple[str, str], ...], list[float]] = {}
        for s in self._vector(node.expr, t):
            if node.by is not None:
                key = tuple(sorted((k, v) for k, v in s.labels.items() if k in node.by))
            elif node.without is None:
                # As in PromQL, a bare aggregation folds every series into one.
                key = ()
            else:
                drop = {"__name__", *node.without}
                key = tuple(
                    sorted((k, v) for k, v in s.labels.items() if k not in drop)
                )
            groups.setdefault(key, []).append(s.value)
        reduce = _AGGREGATIONS[node.op]
        return [Sample(dict(key), reduce(values)) for key, values in groups.items()]

    def _binary(self, node: Binary, t: float) -> Value:
        left = self.instant(node.left, t)
        right = self.instant(node.right, t)
        if node.op in ("and", "or", "unless"):
            if isinstance(left, float) or isinstance(right, float):
                raise ExprError(f"{node.op} takes two vectors")
            return _set_op(node, left, right)
        compare = node.op in _COMPARE
        apply = _COMPARE.get(node.op) or _ARITHMETIC[node.op]
        if isinstance(left, float) and isinstance(right, float):
            if compare and not node.bool:
                raise ExprError("comparing two numbers needs 'bool'")
            return float(apply(left, right))
        if isinstance(left, float) or isinstance(right, float):
            return _with_scalar(node, left, right, apply, compare)
        return _one_to_one(node, left, right, apply, compare)


def _with_scalar(
    node: Binary,
    left: Value,
    right: Value,
    apply: Callable[[float, float], float | bool],
    compare: bool,
) -> Vector:
    vector = left if not isinstance(left, float) else right
    assert not isinstance(vector, float)
    out = []
    for s in vector:
        a, b = (s.value, right) if isinstance(right, float) else (left, s.value)
        assert isinstance(a, float) and isinstance(b, float)
        result = apply(a, b)
        if compare and not node.bool:
            if result:
                out.append(s)
        else:
            out.append(Sample(_without_name(s.labels), float(result)))
    return out


def _one_to_one(
    node: Binary,
    left: Vector,
    right: Vector,
    apply: Callable[[float, float], float | bool],
    compare: bool,
) -> Vector:
    ignoring = node.ignoring or ()
    by_key = {_key(s.labels, node.on, ignoring): s for s in right}
    out = []
    for s in left:
        other = by_key.get(_key(s.labels, node.on, ignoring))
        if other is None:
            continue
        result = apply(s.value, other.value)
        if compare and not node.bool:
            if result:
                out.append(s)
        else:
            labels = _without_name(s.labels)
            if node.on is not None:
                labels = {k: v for k, v in labels.items() if k in node.on}
            out.append(Sample(labels, float(result)))
    return out


def _set_op(node: Binary, left: Vector, right: Vector) -> Vector:
    ignoring = node.ignoring or ()
    right_keys = {_key(s.labels, node.on, ignoring) for s in right}
    if node.op == "and":
        return [s for s in left if _key(s.labels, node.on, ignoring) in right_keys]
    if node.op == "unless":
        return [s for s in left if _key(s.labels, node.on, ignoring) not in right_keys]
    left_keys = {_key(s.labels, node.on, ignoring) for s in left}
    extra = [s for s in right if _key(s.labels, node.on, ignoring) not in left_keys]
    return [*left, *extra]


def _absent(node: Node, present: bool) -> Vector:
    if present:
        return []
    labels: dict[str, str] = {}
    if isinstance(node, Selector):
        labels = {m.label: m.value for m in node.matchers if m.op == "="}
        labels.pop("__name__", None)
    return [Sample(labels, 1.0)]


def _extrapolated(
    s: Series, start: float, end: float, per_second: bool
) -> float | None:
    """Prometheus's extrapolated increase (or rate) of a counter over a window."""
    times, values = (s.times, s.values) if s.buckets is None else _counted(s, start)
    if len(times) < 2:
        return None
    result = values[-1] - values[0]
    for previous, current in itertools.pairwise(values):
        if current < previous:
            result += previous
    sampled = times[-1] - times[0]
    if sampled <= 0:
        return None
    average = sampled / (len(times) - 1)
    threshold = average * 1.1
    to_start = times[0] - start
    to_end = end - times[-1]
    if to_start >= threshold:
        to_start = average / 2
    if result > 0 and values[0] >= 0:
        to_zero = sampled * (values[0] / result)
        to_start = min(to_start, to_zero)
    if to_end >= threshold:
        to_end = average / 2
    factor = (sampled + to_start + to_end) / sampled
    if per_second:
        factor /= end - start
    return result * factor


def _counted(s: Series, start: float) -> tuple[list[float], list[float]]:
    """A counter read from rollups as points whose increase is the raw samples'.

    The first bucket wholly inside the window adds its first value at its
    opening, so that a rise inside it counts; each point after that carries
    the resets seen so far, between buckets and inside them, so the points
    never drop and their last minus their first is the whole increase.
    """
    assert s.buckets is not None
    firsts, resets = s.buckets.firsts, s.buckets.resets
    opened = math.ceil(s.times[0] / ROLLUP) * ROLLUP - ROLLUP
    times, values = [s.times[0]], [s.values[0]]
    if opened >= start:
        times, values = [opened, s.times[0]], [firsts[0], s.values[0] + resets[0]]
    carried = values[-1] - s.values[0]
    for i in range(1, len(s.times)):
        if firsts[i] < s.values[i - 1]:
            carried += s.values[i - 1]
        carried += resets[i]
        times.append(s.times[i])
        values.append(s.values[i] + carried)
    return times, values


def _quantiles(q: float, vector: Vector) -> Vector:
    groups: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
    for s in vector:
        if "le" not in s.labels:
            continue
        key = tuple(
            sorted((k, v) for k, v in s.labels.items() if k not in ("le", "__name__"))
        )
        groups.setdefault(key, []).append((_bound(s.labels["le"]), s.value))
    return [
        Sample(dict(key), _bucket_quantile(q, sorted(buckets)))
        for key, buckets in groups.items()
    ]


def _bound(text: str) -> float:
    return math.inf if text in ("+Inf", "Inf", "inf") else float(text)


def _bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus's histogram_quantile over cumulative (upper bound, count) buckets."""
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    if len(buckets) < 2 or buckets[-1][0] != math.inf:
        return math.nan
    counts = []
    highest = 0.0
    for _, count in buckets:
        highest = max(highest, count)
        counts.append(highest)
    total = counts[-1]
    if total == 0 or math.isnan(total):
        return math.nan
    rank = q * total
    index = next(i for i, c in enumerate(counts) if c >= rank)
    if index == len(buckets) - 1:
        return buckets[-2][0]
    upper = buckets[index][0]
    if index == 0 and upper <= 0:
        return upper
    lower = 0.0 if index == 0 else buckets[index - 1][0]
    below = 0.0 if index == 0 else counts[index - 1]
    count = counts[index] - below
    return lower + (upper - lower) * ((rank - below) / count)


@dataclass(frozen=True)
class _Summary:
    """What the ``*_over_time`` functions need of a series' samples in a window."""

    low: float
    high: float
    total: float
    count: float
    last: float

    @staticmethod
    def of(values: list[float]) -> _Summary | None:
        if not values:
            return None
        return _Summary(
            min(values), max(values), sum(values), float(len(values)), values[-1]
        )

    @staticmethod
    def of_buckets(s: Series, first: float, last: float) -> _Summary | None:
        """The summary of the rollup buckets ending from ``first`` to ``last``."""
        b = s.buckets
        assert b is not None
        inside = [i for i, t in enumerate(s.times) if first <= t <= last]
        if not inside:
            return None
        return _Summary(
            min(b.lows[i] for i in inside),
            max(b.highs[i] for i in inside),
            math.fsum(b.sums[i] for i in inside),
            sum(b.counts[i] for i in inside),
            s.values[inside[-1]],
        )

    @staticmethod
    def merge(parts: list[_Summary | None]) -> _Summary | None:
        """One summary of the summaries of consecutive spans, oldest first."""
        found = [p for p in parts if p is not None]
        if not found:
            return None
        return _Summary(
            min(p.low for p in found),
            max(p.high for p in found),
            math.fsum(p.total for p in found),
            sum(p.count for p in found),
            found[-1].last,
        )


def _summaries(series: list[Series]) -> dict[_SeriesKey, tuple[Series, _Summary]]:
    """Each series' summary of the raw samples it holds."""
    out = {}
    for s in series:
        summary = _Summary.of(s.values)
        if summary is not None:
            out[(s.name, _key(s.labels))] = (s, summary)
    return out


def _add(
    parts: dict[_SeriesKey, list[_Summary | None]],
    found: dict[_SeriesKey, Series],
    s: Series,
    summary: _Summary | None,
) -> None:
    key = (s.name, _key(s.labels))
    parts.setdefault(key, []).append(summary)
    found.setdefault(key, s)


_OVER_TIME: dict[str, Callable[[_Summary], float]] = {
    "avg_over_time": lambda s: s.total / s.count,
    "min_over_time": lambda s: s.low,
    "max_over_time": lambda s: s.high,
    "sum_over_time": lambda s: s.total,
    "last_over_time": lambda s: s.last,
    "count_over_time": lambda s: s.count,
}

_AGGREGATIONS: dict[str, Callable[[list[float]], float]] = {
    "sum": sum,
    "avg": lambda v: sum(v) / len(v),
    "min": min,
    "max": max,
    "count": lambda v: float(len(v)),
}


def _divide(a: float, b: float) -> float:
    if b == 0:
        return math.nan if a == 0 or math.isnan(a) else math.copysign(math.inf, a)
    return a / b


_ARITHMETIC: dict[str, Callable[[float, float], float]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": _divide,
}

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
}
