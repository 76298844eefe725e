"""Rates over long windows, read from five-minute rollups, agree with the raw samples."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from verger.monitor.rules import Evaluator, error_ratio, parse
from verger.monitor.rules.evaluate import Sample
from verger.monitor.store import BLOCK, ROLLUP, Matcher, MetricStore, Series

# The agent starts 37 s into a five-minute bucket, as it would.
T0 = 1_800_000_037.0
STEP = 10.0
FIVE_XX = 'verger_requests_total{class="5xx"}'


class _Raw:
    """The store as the evaluator sees it with every read from raw samples."""

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
        return self.store.select(name, matchers, start, end, rollup=False)


def _record(
    store: MetricStore, seconds: float, counters: dict[str, Callable[[int], float]]
) -> None:
    """Write each class's counter every 10 s and compact as the agent's loop does."""
    compacted = T0
    batch: list[tuple[str, dict[str, str], float, float]] = []
    for i in range(int(seconds / STEP)):
        t = T0 + i * STEP
        labels = {"environment": "production"}
        for name, value in counters.items():
            batch.append(
                ("verger_requests_total", {**labels, "class": name}, t, value(i))
            )
        if len(batch) >= 60:
            store.write(batch)
            batch = []
        if t - compacted >= BLOCK / 4:
            store.compact(t)
            compacted = t
    store.write(batch)


def _burst(i: int) -> float:
    """503s for 30 s right after the start: 0, 6, 82, 85, then flat."""
    return (0.0, 6.0, 82.0)[i] if i < 3 else 85.0


def _value(evaluator: Evaluator, expr: str, t: float) -> float:
    result = evaluator.instant(parse(expr), t)
    assert isinstance(result, list) and len(result) == 1, result
    sample = result[0]
    assert isinstance(sample, Sample)
    return sample.value


@pytest.fixture
def burst_store(tmp_path: Path) -> MetricStore:
    store = MetricStore(tmp_path / "metrics.db")
    _record(store, 20 * 3600, {"2xx": lambda i: 5.0 * i, "5xx": _burst})
    return store


@pytest.mark.parametrize("window", ["1d", "7d", "30d"])
def test_a_burst_in_a_new_series_first_bucket_counts_over_long_windows(
    burst_store: MetricStore, window: str
) -> None:
    """85 errors in a counter's first 30 s show in increase() and rate() over 1d-30d."""
    now = T0 + 20 * 3600
    rolled, raw = Evaluator(burst_store), Evaluator(_Raw(burst_store))  # type: ignore[arg-type]

    # The raw samples' last is 10 s old and extrapolated to now: within 1%.
    increase = _value(rolled, f"increase({FIVE_XX}[{window}])", now)
    raw_increase = _value(raw, f"increase({FIVE_XX}[{window}])", now)
    assert increase == pytest.approx(raw_increase, rel=0.01)
    assert increase == pytest.approx(85.0, rel=0.01)

    rate = _value(rolled, f"rate({FIVE_XX}[{window}])", now)
    raw_rate = _value(raw, f"rate({FIVE_XX}[{window}])", now)
    assert rate == pytest.approx(raw_rate, rel=0.01)
    burst_store.close()


def test_the_error_ratio_over_three_days_matches_the_raw_samples(
    burst_store: MetricStore,
) -> None:
    """The 3-day error ratio of slo_budget_burn sees the burst the raw samples show."""
    now = T0 + 20 * 3600
    expr = error_ratio("3d")
    rolled = _value(Evaluator(burst_store), expr, now)
    raw = _value(Evaluator(_Raw(burst_store)), expr, now)  # type: ignore[arg-type]
    assert rolled > 0
    # Requests run at 0.5/s: 72,000 in 20 h, of which 85 failed.
    assert rolled == pytest.approx(85 / (85 + 36_000), rel=0.02)
    assert rolled == pytest.approx(raw, rel=0.02)
    burst_store.close()


def test_the_last_hour_still_reads_raw_samples(burst_store: MetricStore) -> None:
    """An hour after the burst, rate over [1h] reads the raw samples and sees it."""
    rate = _value(Evaluator(burst_store), f"rate({FIVE_XX}[1h])", T0 + 3000)
    assert rate == pytest.approx(85 / 3600, rel=0.1)
    burst_store.close()


def _crashing(i: int) -> float:
    """A process that fails 90 requests, restarts and fails 3 more, in one bucket."""
    before = (0.0, 40.0, 90.0)
    return before[i] if i < 3 else (0.0, 3.0)[i - 3] if i < 5 else 3.0


def _restarting(i: int) -> float:
    """A steady counter whose process restarts every two hours."""
    return 2.0 * (i % 720)


def test_resets_inside_and_between_buckets_count_over_rollups(tmp_path: Path) -> None:
    """Increases before a restart, inside one bucket or across many, are not lost."""
    store = MetricStore(tmp_path / "metrics.db")
    _record(store, 20 * 3600, {"5xx": _crashing, "2xx": _restarting})
    now = T0 + 20 * 3600
    rolled, raw = Evaluator(store), Evaluator(_Raw(store))  # type: ignore[arg-type]

    assert _value(rolled, f"increase({FIVE_XX}[1d])", now) == pytest.approx(93.0)

    total = 'increase(verger_requests_total{class="2xx"}[1d])'
    # Every bucket at an edge of the window is worth 60 requests at most.
    assert _value(rolled, total, now) == pytest.approx(_value(raw, total, now), abs=60)
    assert _value(rolled, total, now) == pytest.approx(2.0 * 7199, rel=0.01)
    store.close()


def test_rollups_keep_each_buckets_first_value_and_resets(tmp_path: Path) -> None:
    """A rollup read gives each bucket's last value at its end, its first and resets."""
    store = MetricStore(tmp_path / "metrics.db")
    _record(store, 7 * 3600, {"5xx": _crashing})
    (series,) = store.select("verger_requests_total", [], T0, T0 + 7 * 3600)
    assert series.buckets is not None
    assert series.times[0] == (T0 // ROLLUP + 1) * ROLLUP
    assert (series.values[0], series.buckets.firsts[0]) == (3.0, 0.0)
    assert series.buckets.resets[:2] == [90.0, 0.0]
    store.close()


def test_a_gauges_rollups_keep_only_last_values(tmp_path: Path) -> None:
    """A block whose samples keep falling is a gauge's: no first values, no resets."""
    store = MetricStore(tmp_path / "metrics.db")
    _record(store, 7 * 3600, {"5xx": lambda i: float(i % 3)})
    (series,) = store.select("verger_requests_total", [], T0, T0 + 7 * 3600)
    assert series.buckets is not None
    assert series.buckets.firsts == series.values
    assert set(series.buckets.resets) == {0.0}
    store.close()


def test_samples_written_late_read_in_time_order_from_rollups(tmp_path: Path) -> None:
    """A sample written after its span was packed joins the rollups in time order."""
    store = MetricStore(tmp_path / "metrics.db")
    _record(store, 13 * 3600, {"2xx": lambda i: float(i)})
    at = T0 + 3600
    store.write([("late_total", {}, at, 2.0), ("late_total", {}, T0 + 13 * 3600, 3.0)])
    store.compact(T0 + 13 * 3600)
    # Its span is packed already: this one goes to a block of its own.
    store.write([("late_total", {}, at - 3000, 1.0)])
    store.compact(T0 + 13 * 3600)
    (series,) = store.select("late_total", [], T0, T0 + 13 * 3600)
    assert series.times == sorted(series.times) and len(series.times) == 3
    assert series.values == [1.0, 2.0, 3.0]
    store.close()
