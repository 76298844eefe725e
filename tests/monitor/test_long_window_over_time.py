"""*_over_time over long windows, read from rollups, agree with the raw samples."""

from __future__ import annotations

import math
import random

import pytest

from verger.monitor.rules import Evaluator, parse
from verger.monitor.rules.evaluate import Sample
from verger.monitor.store import BLOCK, MetricStore

# The agent starts 37 s into a five-minute bucket, as it would.
T0 = 1_800_000_037.0
STEP = 10.0
DAYS = 3
SERIES = {
    # Full-precision floats, as an app's own durations are.
    "app_latency_seconds": lambda rng, i: rng.uniform(0.001, 0.9),
    # Four decimals, as ratios read from /proc are.
    "host_cpu_ratio": lambda rng, i: round(rng.uniform(0.1, 0.9), 4),
    # A counter, so that its rollups keep firsts and resets too.
    "app_requests_total": lambda rng, i: float(3 * i + rng.randint(0, 2)),
}

Samples = dict[str, list[tuple[float, float]]]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[MetricStore, Samples]:
    """Three days of 10 s samples, written and compacted as the agent's loop does."""
    store = MetricStore(tmp_path_factory.mktemp("over_time") / "metrics.db")
    rng = random.Random(7)
    written: Samples = {name: [] for name in SERIES}
    batch: list[tuple[str, dict[str, str], float, float]] = []
    compacted = T0
    for i in range(int(DAYS * 86400 / STEP)):
        t = T0 + i * STEP
        for name, value in SERIES.items():
            v = value(rng, i)
            written[name].append((t, v))
            batch.append((name, {"environment": "production"}, t, v))
        if len(batch) >= 300:
            store.write(batch)
            batch = []
        if t - compacted >= BLOCK / 4:
            store.compact(t)
            compacted = t
    store.write(batch)
    return store, written


def _expected(function: str, values: list[float]) -> float:
    if function == "min_over_time":
        return min(values)
    if function == "max_over_time":
        return max(values)
    if function == "sum_over_time":
        return math.fsum(values)
    if function == "count_over_time":
        return float(len(values))
    if function == "avg_over_time":
        return math.fsum(values) / len(values)
    return values[-1]


FUNCTIONS = [
    "min_over_time",
    "max_over_time",
    "sum_over_time",
    "count_over_time",
    "avg_over_time",
    "last_over_time",
]
# Evaluated now (the newest bucket still in the head) and in the past, with
# window edges inside buckets and on their boundaries.
INSTANTS = [
    ("now", T0 + DAYS * 86400 - STEP + 3.0, "2d"),
    ("past", T0 + 2 * 86400 + 1234.0, "1d"),
    ("aligned", 1_800_000_000.0 + 2 * 86400 + 600.0, "36h"),
]


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize(("when", "t", "window"), INSTANTS)
def test_over_time_over_rollups_equals_the_raw_samples(
    recorded: tuple[MetricStore, Samples],
    function: str,
    when: str,
    t: float,
    window: str,
) -> None:
    """Each *_over_time function over a long window gives what the raw samples in it give."""
    store, written = recorded
    seconds = {"1d": 86400.0, "36h": 129600.0, "2d": 172800.0}[window]
    evaluator = Evaluator(store)
    for name, samples in written.items():
        inside = [v for ts, v in samples if t - seconds <= ts <= t]
        result = evaluator.instant(parse(f"{function}({name}[{window}])"), t)
        assert isinstance(result, list) and len(result) == 1, (when, result)
        sample = result[0]
        assert isinstance(sample, Sample)
        expected = _expected(function, inside)
        if function in ("min_over_time", "max_over_time", "count_over_time"):
            assert sample.value == expected, (when, name)
        else:
            assert sample.value == pytest.approx(expected, rel=1e-12), (when, name)


def test_count_over_time_over_rollups_counts_every_sample(
    recorded: tuple[MetricStore, Samples],
) -> None:
    """A day's count_over_time of 10 s samples is 8,640, not one per five-minute bucket."""
    store, _ = recorded
    t = T0 + 2 * 86400 + 1234.0
    result = Evaluator(store).instant(parse("count_over_time(host_cpu_ratio[1d])"), t)
    assert isinstance(result, list)
    assert [s.value for s in result] == [8640.0]
    assert result[0].labels == {"environment": "production"}


def test_last_over_time_over_rollups_keeps_the_name(
    recorded: tuple[MetricStore, Samples],
) -> None:
    """last_over_time over rollups keeps the metric name, as over raw samples."""
    store, written = recorded
    t = T0 + 2 * 86400 + 1234.0
    result = Evaluator(store).instant(parse("last_over_time(host_cpu_ratio[1d])"), t)
    assert isinstance(result, list) and len(result) == 1
    assert result[0].labels == {
        "__name__": "host_cpu_ratio",
        "environment": "production",
    }
    assert result[0].value == [v for ts, v in written["host_cpu_ratio"] if ts <= t][-1]
