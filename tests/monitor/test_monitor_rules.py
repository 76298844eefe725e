"""The rule evaluator: states, for and keep_firing_for, no data, restarts, decisions."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from monitor_support import T0, RecordingSink, run_async

from verger.monitor.rules import ExprError, Rule, RuleEngine, default_rules, parse
from verger.monitor.rules.evaluate import Evaluator
from verger.monitor.store import MetricStore
from verger.state import open_store

REQ = "verger_requests_total"


def _traffic(
    store: MetricStore,
    start: float,
    end: float,
    rps: float,
    errors: float,
    env: str = "production",
    base: tuple[float, float] = (0.0, 0.0),
) -> tuple[float, float]:
    """Router counters every 10 s from start to end at rps requests/s, errors of them 5xx."""
    ok, bad = base
    t = start
    while t <= end:
        store.write(
            [
                (REQ, {"environment": env, "class": "2xx"}, t, ok),
                (REQ, {"environment": env, "class": "5xx"}, t, bad),
            ]
        )
        ok += rps * (1 - errors) * 10
        bad += rps * errors * 10
        t += 10
    return ok, bad


async def _run(engine: RuleEngine, start: float, end: float) -> None:
    t = start
    while t <= end:
        await engine.evaluate(t)
        t += 10


@run_async
async def test_error_rate_fires_at_once_keeps_firing_then_resolves_with_a_sentence(
    store: MetricStore, sink: RecordingSink, caplog: pytest.LogCaptureFixture
) -> None:
    """5% of requests failing over a minute fires on the first evaluation, says why,
    keeps firing two minutes after the errors stop, then resolves once."""
    rules = [r for r in default_rules() if r.name == "error_rate_critical"]
    engine = RuleEngine(rules, store, sink)
    counts = _traffic(store, T0, T0 + 300, rps=10, errors=0.0)
    counts = _traffic(store, T0 + 310, T0 + 600, rps=10, errors=0.079, base=counts)
    caplog.set_level(logging.INFO, "verger.monitor")
    await _run(engine, T0 + 300, T0 + 600)

    # The errors start after the sample at T0 + 310; by T0 + 350 they are
    # over 5% of the minute's requests, and the rule fires with no pending.
    assert sink.states("error_rate_critical")[0] == (T0 + 350, "firing")
    assert any(
        "rule error_rate_critical for production is firing: 5.27% > 5%" in m
        for m in caplog.messages
    )

    _traffic(store, T0 + 610, T0 + 1200, rps=10, errors=0.0, base=counts)
    await _run(engine, T0 + 610, T0 + 1200)
    assert sink.transitions("error_rate_critical") == ["firing", "resolved"]
    resolved = [s for s in sink.states("error_rate_critical") if s[1] == "resolved"]
    assert len(resolved) == 1
    assert T0 + 600 + 120 <= resolved[0][0] <= T0 + 600 + 60 + 120 + 10
    (alert,) = [
        a for _, alerts in sink.updates for a in alerts if a.state == "resolved"
    ]
    assert alert.labels["environment"] == "production"
    assert alert.labels["severity"] == "critical"
    assert alert.annotations["summary"] == "More than 5% of requests fail in production"


@run_async
async def test_flapping_target_never_fires_and_a_firing_one_does_not_flip(
    store: MetricStore, sink: RecordingSink
) -> None:
    """A target that flaps never outlasts for; once firing, keep_firing_for holds it."""
    rule = Rule("target_down", "up == 0", "high", for_=60, keep_firing_for=120)
    engine = RuleEngine([rule], store, sink)
    for i in range(60):
        store.write(
            [("up", {"job": "app", "instance": "a"}, T0 + 10 * i, float(i % 2))]
        )
        await engine.evaluate(T0 + 10 * i)
    assert "firing" not in sink.transitions("target_down")

    start = T0 + 600
    for i in range(12):  # down for two minutes: it fires
        store.write([("up", {"job": "app", "instance": "a"}, start + 10 * i, 0.0)])
        await engine.evaluate(start + 10 * i)
    start += 120
    for i in range(60):  # then flaps every 20 s for ten minutes
        up = float((i // 2) % 2)
        store.write([("up", {"job": "app", "instance": "a"}, start + 10 * i, up)])
        await engine.evaluate(start + 10 * i)
    after = [s for t, s in sink.states("target_down") if t >= T0 + 600]
    assert "firing" in after
    firing_from = after.index("firing")
    assert set(after[firing_from:]) == {"firing"}


@run_async
async def test_a_metric_that_disappears_raises_no_data(
    store: MetricStore, sink: RecordingSink
) -> None:
    """A series that stops getting samples raises no_data after five minutes, per series."""
    rules = [r for r in default_rules() if r.name in ("cpu_high", "no_data")]
    engine = RuleEngine(rules, store, sink)
    for i in range(30):
        store.write([("verger_host_cpu_ratio", {"host": "web1"}, T0 + 10 * i, 0.3)])
        await engine.evaluate(T0 + 10 * i)
    assert sink.transitions("no_data") == []

    await _run(engine, T0 + 300, T0 + 900)
    fired = [
        (now, a)
        for now, alerts in sink.updates
        for a in alerts
        if a.name == "no_data" and a.state == "firing"
    ]
    assert fired
    first_at, alert = fired[0]
    assert T0 + 290 + 300 <= first_at <= T0 + 290 + 310
    assert alert.labels["metric"] == "verger_host_cpu_ratio"
    assert alert.labels["host"] == "web1"


@run_async
async def test_fast_burn_pages_and_slow_errors_do_not(
    store: MetricStore, sink: RecordingSink
) -> None:
    """A 10x burn of a 99.9% budget does not page; a 20x burn for an hour does."""
    rules = [r for r in default_rules() if r.record or r.name == "slo_burn_fast"]
    engine = RuleEngine(rules, store, sink)
    counts = _traffic(store, T0, T0 + 3600, rps=10, errors=0.01)
    await _run(engine, T0 + 3000, T0 + 3600)
    assert "firing" not in sink.transitions("slo_burn_fast")

    _traffic(store, T0 + 3610, T0 + 7200, rps=10, errors=0.02, base=counts)
    await _run(engine, T0 + 3610, T0 + 7200)
    assert "firing" in sink.transitions("slo_burn_fast")


@run_async
async def test_p95_latency_from_the_router_histogram(
    store: MetricStore, sink: RecordingSink
) -> None:
    """histogram_quantile over the router's buckets fires latency_critical over 5 s."""
    rules = [r for r in default_rules() if r.name == "latency_critical"]
    engine = RuleEngine(rules, store, sink)
    bounds = ["0.1", "1", "5", "10", "+Inf"]
    for i in range(60):
        t = T0 + 10 * i
        # Each 10 s: 10 fast requests and 90 between 5 s and 10 s.
        counts = [10 * i, 10 * i, 10 * i, 100 * i, 100 * i]
        store.write(
            (
                "verger_request_duration_seconds_bucket",
                {"environment": "production", "le": le},
                t,
                float(c),
            )
            for le, c in zip(bounds, counts, strict=True)
        )
        await engine.evaluate(t)
    assert "firing" in sink.transitions("latency_critical")
    firing = [a for _, al in sink.updates for a in al if a.state == "firing"]
    assert 5 < (firing[-1].value or 0) < 10


@run_async
async def test_firing_alerts_survive_a_restart_and_clear_as_resolved(
    store: MetricStore, tmp_path: Path
) -> None:
    """A restarted evaluator keeps a firing alert firing, then resolves what cleared."""
    state = open_store(".verger/state.db", tmp_path)
    rule = Rule("cpu_high", "verger_host_cpu_ratio > 0.8", "high", for_=60)
    first = RecordingSink()
    engine = RuleEngine([rule], store, first, state)
    for i in range(10):
        store.write([("verger_host_cpu_ratio", {}, T0 + 10 * i, 0.95)])
        await engine.evaluate(T0 + 10 * i)
    assert first.transitions("cpu_high") == ["pending", "firing"]
    fired_at = first.updates[-1][1][0].fired_at

    again = RecordingSink()
    restarted = RuleEngine(
        [rule], store, again, open_store(".verger/state.db", tmp_path)
    )
    store.write([("verger_host_cpu_ratio", {}, T0 + 100, 0.95)])
    await restarted.evaluate(T0 + 100)
    (alert,) = again.updates[-1][1]
    assert alert.state == "firing" and alert.fired_at == fired_at

    later = RecordingSink()
    down_then_up = RuleEngine(
        [rule], store, later, open_store(".verger/state.db", tmp_path)
    )
    store.write([("verger_host_cpu_ratio", {}, T0 + 3600, 0.2)])
    await down_then_up.evaluate(T0 + 3600)
    assert later.transitions("cpu_high") == ["resolved"]
    assert open_store(".verger/state.db", tmp_path).alert_states() == []


@run_async
async def test_a_broken_rule_does_not_stop_the_others(
    store: MetricStore, sink: RecordingSink
) -> None:
    """A rule that fails at evaluation is reported; the rules after it still run."""
    broken = Rule("broken", "histogram_quantile(0.9, up) > 1 and 1 > bool 0", "high")
    good = Rule("always", "vector_like > 0", "medium")
    store.write([("vector_like", {}, T0, 1.0), ("up", {}, T0, 1.0)])
    engine = RuleEngine([broken, good], store, sink)
    await engine.evaluate(T0)
    assert "broken" in engine.errors
    assert sink.firing(T0) == {"always"}


def test_unreadable_expressions_are_refused_with_the_column() -> None:
    """A typo in an expression is an error naming where it is and what was expected."""
    with pytest.raises(ExprError, match="column 9"):
        parse("rate(up[5x]) > 1")
    with pytest.raises(ExprError, match="range selector"):
        parse("rate(up) > 1")
    with pytest.raises(ValueError, match="severity"):
        Rule("x", "up == 0", "urgent")


@run_async
async def test_a_firing_alert_whose_rule_was_removed_is_sent_resolved(
    store: MetricStore, tmp_path: Path
) -> None:
    """After a restart without its rule, a firing alert is sent resolved once, then forgotten."""
    state = open_store(".verger/state.db", tmp_path)
    rule = Rule("cpu_high", "verger_host_cpu_ratio > 0.8", "high")
    store.write([("verger_host_cpu_ratio", {}, T0, 0.95)])
    await RuleEngine([rule], store, RecordingSink(), state).evaluate(T0)

    sink = RecordingSink()
    other = Rule("memory_high", "verger_host_memory_used_ratio > 0.85", "high")
    engine = RuleEngine([other], store, sink, open_store(".verger/state.db", tmp_path))
    await engine.evaluate(T0 + 60)
    await engine.evaluate(T0 + 70)
    assert sink.states("cpu_high") == [(T0 + 60, "resolved")]
    assert open_store(".verger/state.db", tmp_path).alert_states() == []


def test_an_aggregation_without_by_folds_every_series_into_one(
    store: MetricStore,
) -> None:
    """sum(x) with neither by nor without gives one series, as in PromQL."""
    store.write(
        [
            ("verger_redis_queue_length", {"key": "outbox"}, T0, 3.0),
            ("verger_redis_queue_length", {"key": "retry"}, T0, 4.0),
        ]
    )
    evaluator = Evaluator(store)
    folded = evaluator.instant(parse("sum(verger_redis_queue_length)"), T0)
    kept = evaluator.instant(parse("sum without () (verger_redis_queue_length)"), T0)
    assert isinstance(folded, list) and isinstance(kept, list)
    assert [(s.labels, s.value) for s in folded] == [({}, 7.0)]
    assert sorted(s.value for s in kept) == [3.0, 4.0]


@run_async
async def test_a_handful_of_failed_requests_never_pages(
    store: MetricStore, sink: RecordingSink
) -> None:
    """Two requests, both failing, fire neither the error rate nor a burn rate:
    the traffic floor keeps a router's lone 503 before a first release from paging."""
    rules = [r for r in default_rules() if not r.name.startswith("no_data")]
    engine = RuleEngine(rules, store, sink)
    _traffic(store, T0, T0 + 300, rps=0.0, errors=0.0)
    _traffic(store, T0 + 310, T0 + 600, rps=0.0, errors=0.0, base=(0.0, 2.0))
    await _run(engine, T0 + 10, T0 + 600)
    fired = {
        name
        for name in ("error_rate_critical", "slo_burn_fast", "slo_burn_slow")
        if "firing" in sink.transitions(name)
    }
    assert fired == set()
