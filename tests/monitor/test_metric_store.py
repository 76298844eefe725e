"""The metric store: exact round trips, blocks, rollups, retention, restarts."""

from __future__ import annotations

import math
import random
from pathlib import Path

from verger.monitor.store import BLOCK, Matcher, MetricStore, codec

T0 = 1_800_000_000.0


def test_codec_gives_back_the_same_floats() -> None:
    """Every kind of value (counters, decimals, noisy floats, NaN) decodes exactly."""
    rng = random.Random(7)
    times = [T0 + 10 * i + rng.choice([0, 0, 0.001]) for i in range(360)]
    columns = [
        [float(i * 17) for i in range(360)],
        [round(rng.uniform(0, 100), 1) for _ in range(360)],
        [rng.random() * 1e-3 for _ in range(360)],
        [math.nan if i % 7 == 0 else math.inf for i in range(360)],
    ]
    got_times, got = codec.decode(codec.encode(times, columns))
    assert got_times == [round(t * 1000) / 1000 for t in times]
    assert got[:3] == columns[:3]
    assert [math.isnan(v) for v in got[3]] == [math.isnan(v) for v in columns[3]]


def test_regular_counters_cost_under_a_byte_a_sample() -> None:
    """An hour of a 10-second counter packs into a few hundred bytes at most."""
    times = [T0 + 10 * i for i in range(360)]
    values = [float(i * 3 + i % 5) for i in range(360)]
    assert len(codec.encode(times, [values])) < 360


def test_samples_survive_compaction_and_a_reopen(tmp_path: Path) -> None:
    """Samples read the same from the head, from packed blocks and after a restart."""
    path = tmp_path / "metrics.db"
    store = MetricStore(path)
    samples = [
        ("http_requests_total", {"env": env}, T0 + 10 * i, float(i))
        for i in range(1000)
        for env in ("staging", "production")
    ]
    store.write(samples)
    before = store.select("http_requests_total", [], T0, T0 + 10_000, rollup=False)
    assert store.compact(T0 + 86_400) == 2000
    store.close()

    store = MetricStore(path)
    after = store.select(
        "http_requests_total",
        [Matcher("env", "=", "production")],
        T0,
        T0 + 10_000,
        rollup=False,
    )
    assert len(after) == 1
    assert after[0].values == [float(i) for i in range(1000)]
    assert [s.values for s in before if s.labels["env"] == "production"] == [
        after[0].values
    ]
    store.close()


def test_long_ranges_read_five_minute_rollups(tmp_path: Path) -> None:
    """A query over a day reads one point per five minutes: each bucket's last value."""
    store = MetricStore(tmp_path / "metrics.db")
    store.write(("cpu", {}, T0 + 10 * i, float(i)) for i in range(8640))
    store.compact(T0 + 86400 + BLOCK)
    (series,) = store.select("cpu", [], T0, T0 + 86400)
    assert 280 <= len(series.times) <= 290
    assert series.values[1] - series.values[0] == 30.0
    store.close()


def test_retention_drops_old_raw_blocks(tmp_path: Path) -> None:
    """Raw blocks older than the retention are deleted; rollups stay longer."""
    store = MetricStore(tmp_path / "metrics.db", retention=86400.0)
    store.write(("cpu", {}, T0 + 10 * i, 1.0) for i in range(720))
    store.compact(T0 + 3 * 86400)
    assert store.select("cpu", [], T0, T0 + 7200, rollup=False) == []
    assert store.select("cpu", [], T0, T0 + 7200, rollup=True)[0].values
    store.close()


def test_regex_and_negative_matchers_pick_series(tmp_path: Path) -> None:
    """Selectors filter series by =, !=, =~ and !~ on labels and on __name__."""
    store = MetricStore(tmp_path / "metrics.db")
    store.write(("req", {"class": c}, T0, 1.0) for c in ("2xx", "4xx", "5xx"))
    picked = store.select("req", [Matcher("class", "=~", "[45]xx")], T0 - 1, T0)
    assert sorted(s.labels["class"] for s in picked) == ["4xx", "5xx"]
    picked = store.select(
        None,
        [Matcher("__name__", "=", "req"), Matcher("class", "!~", "5..")],
        T0 - 1,
        T0,
    )
    assert sorted(s.labels["class"] for s in picked) == ["2xx", "4xx"]
    store.close()
