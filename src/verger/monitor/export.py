"""Export to Prometheus and Alertmanager: the same rules, and tests that prove it.

``verger monitor export DIR`` writes:

- ``rules.yml``: verger's rules as one Prometheus rule group (recording
  rules first, evaluated at the monitor's interval);
- ``alertmanager.yml``: a route per tier (critical to ``page``, high to
  ``email``, medium to ``ticket``) and the inhibitions verger uses, with
  receivers to fill in;
- ``rules.test.yml``: promtool unit tests. Their series are scenarios
  (a burst of errors, slow requests, a busy host, a flapping target, a
  metric that stops) and their expected alerts are what verger's own
  evaluator fires on those series at each step, so ``promtool test rules``
  passing means Prometheus fires the same alerts at the same steps.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from verger.config.types import format_duration
from verger.monitor.alert import AlertState
from verger.monitor.rules import Rule, RuleEngine
from verger.monitor.store import MetricStore

GROUP = "verger"


def _yaml() -> YAML:
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.width = 4096
    return yaml


def dump(data: Any) -> str:
    stream = io.StringIO()
    _yaml().dump(data, stream)
    return stream.getvalue()


def rule_groups(rules: Sequence[Rule], interval: float) -> dict[str, Any]:
    """Prometheus's rule file for ``rules``, as data."""
    out: list[dict[str, Any]] = []
    for rule in rules:
        if rule.record:
            entry: dict[str, Any] = {"record": rule.name, "expr": rule.expr}
            if rule.labels:
                entry["labels"] = dict(rule.labels)
        else:
            entry = {"alert": rule.name, "expr": rule.expr}
            if rule.for_:
                entry["for"] = format_duration(rule.for_)
            if rule.keep_firing_for:
                entry["keep_firing_for"] = format_duration(rule.keep_firing_for)
            entry["labels"] = {**rule.labels, "severity": rule.severity}
            if rule.annotations:
                entry["annotations"] = dict(rule.annotations)
        out.append(entry)
    return {
        "groups": [{"name": GROUP, "interval": format_duration(interval), "rules": out}]
    }


# Rules a critical twin silences while it fires, in the same environment.
TWINS = {
    "error_rate_critical": "error_rate_high",
    "latency_critical": "latency_high",
}


def alertmanager_config() -> dict[str, Any]:
    """An Alertmanager config: one route per tier and verger's inhibitions."""
    receivers = [
        {
            "name": "page",
            "pagerduty_configs": [{"routing_key": "<PagerDuty routing key>"}],
        },
        {
            "name": "email",
            "email_configs": [
                {
                    "to": "<on-call address>",
                    "smarthost": "<smtp host:587>",
                    "from": "<sender>",
                }
            ],
        },
        {"name": "ticket", "webhook_configs": [{"url": "<ticket webhook URL>"}]},
    ]
    inhibit = [
        {
            "source_matchers": [f"alertname={source}"],
            "target_matchers": [f"alertname={target}"],
            "equal": ["environment"],
        }
        for source, target in TWINS.items()
    ]
    inhibit.append(
        {
            "source_matchers": ["alertname=api_down"],
            "target_matchers": ['alertname=~"error_rate_.*|latency_.*|slo_.*"'],
            "equal": ["environment"],
        }
    )
    return {
        "route": {
            "receiver": "ticket",
            "group_by": ["alertname", "environment"],
            "group_wait": "2s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": [
                {
                    "matchers": ["severity=critical"],
                    "receiver": "page",
                    "repeat_interval": "1h",
                },
                {"matchers": ["severity=high"], "receiver": "email"},
                {
                    "matchers": ["severity=medium"],
                    "receiver": "ticket",
                    "repeat_interval": "24h",
                },
            ],
        },
        "inhibit_rules": inhibit,
        "receivers": receivers,
    }


@dataclass(frozen=True)
class Scenario:
    """Series sampled every ``step`` seconds from time 0, and when to look at alerts."""

    name: str
    step: float
    series: dict[str, list[float | None]]
    eval_times: list[float]


def _counter(rates: Sequence[tuple[int, float]], step: float) -> list[float | None]:
    """A counter sampled every step: (how many steps, increase per second) runs."""
    values: list[float | None] = [0.0]
    total = 0.0
    for steps, per_second in rates:
        for _ in range(steps):
            total += per_second * step
            values.append(round(total, 6))
    return values


def _runs(*runs: tuple[int, float | None]) -> list[float | None]:
    return [value for count, value in runs for _ in range(count)]


def _histogram(
    env: str, runs: Sequence[tuple[int, dict[str, float]]], step: float
) -> dict[str, list[float | None]]:
    bounds = ["0.1", "0.5", "1", "2.5", "5", "10", "+Inf"]
    out = {}
    for bound in bounds:
        rates = [
            (steps, sum(r for b, r in per_bucket.items() if _le(b, bound)))
            for steps, per_bucket in runs
        ]
        name = f'verger_request_duration_seconds_bucket{{environment="{env}",le="{bound}"}}'
        out[name] = _counter(rates, step)
    return out


def _le(bucket: str, bound: str) -> bool:
    def value(text: str) -> float:
        return float("inf") if text == "+Inf" else float(text)

    return value(bucket) <= value(bound)


def scenarios() -> list[Scenario]:
    """Series that make each default rule fire and stop, one minute apart."""
    m = 60.0
    prod = 'environment="production"'
    stage = 'environment="staging"'
    errors = Scenario(
        "errors",
        m,
        {
            f'verger_requests_total{{{prod},class="2xx"}}': _counter(
                [(20, 10), (20, 9), (40, 10)], m
            ),
            f'verger_requests_total{{{prod},class="5xx"}}': _counter(
                [(20, 0), (20, 1), (40, 0)], m
            ),
            f'verger_requests_total{{{stage},class="2xx"}}': _counter([(80, 0)], m),
        },
        [float(t * m) for t in range(0, 81, 5)],
    )
    api_down = Scenario(
        "api_down",
        m,
        {
            f'verger_requests_total{{{prod},class="2xx"}}': _counter(
                [(15, 5), (15, 0), (10, 5)], m
            ),
        },
        [float(t * m) for t in range(0, 41, 5)],
    )
    slow = Scenario(
        "latency",
        m,
        _histogram(
            "production",
            [
                (10, {"0.1": 10}),
                (15, {"0.1": 1, "2.5": 9}),
                (15, {"0.1": 1, "10": 9}),
                (15, {"0.1": 10}),
            ],
            m,
        ),
        [float(t * m) for t in range(0, 56, 5)],
    )
    host = Scenario(
        "host",
        m,
        {
            'verger_host_cpu_ratio{host="web1"}': _runs(
                (5, 0.3), (15, 0.93), (10, 0.4)
            ),
            'verger_host_memory_used_ratio{host="web1"}': _runs((10, 0.5), (20, 0.9)),
            'verger_host_disk_free_ratio{mount="/"}': _runs((10, 0.2), (20, 0.03)),
            'verger_last_deploy_failed{environment="production"}': _runs(
                (10, 0), (10, 1), (10, 0)
            ),
            'verger_probe_success{probe="api"}': _runs((5, 1), (10, 0), (15, 1)),
            'verger_heartbeat_late{heartbeat="nightly"}': _runs((20, 0), (10, 1)),
        },
        [float(t * m) for t in range(0, 30, 2)],
    )
    flap = Scenario(
        "flapping",
        m,
        {
            'up{job="app",instance="a:9100"}': _runs(
                (3, 1), *[(1, 0), (1, 1)] * 5, (5, 0), *[(1, 1), (1, 0)] * 3, (10, 1)
            ),
        },
        [float(t * m) for t in range(0, 34)],
    )
    gone = Scenario(
        "no_data",
        m,
        {
            'verger_host_cpu_ratio{host="web1"}': _runs((15, 0.2)),
            'verger_host_cpu_ratio{host="web2"}': _runs((40, 0.2)),
        },
        [float(t * m) for t in range(0, 40, 2)],
    )
    return [errors, api_down, slow, host, flap, gone]


def _series_line(name: str) -> tuple[str, dict[str, str]]:
    metric, _, rest = name.partition("{")
    labels: dict[str, str] = {}
    for part in rest.rstrip("}").split(","):
        if part:
            key, _, value = part.partition("=")
            labels[key] = value.strip('"')
    return metric, labels


def _values_text(values: Sequence[float | None]) -> str:
    return " ".join("_" if v is None else f"{v:g}" for v in values)


async def expected_alerts(
    rules: Sequence[Rule], scenario: Scenario, interval: float
) -> dict[float, list[dict[str, Any]]]:
    """Verger's firing alerts at each of the scenario's eval times."""
    with tempfile.TemporaryDirectory() as folder:
        store = MetricStore(Path(folder) / "metrics.db")
        try:
            samples = []
            for name, values in scenario.series.items():
                metric, labels = _series_line(name)
                for i, value in enumerate(values):
                    if value is not None:
                        samples.append((metric, labels, i * scenario.step, value))
            store.write(samples)
            engine = RuleEngine(rules, store)
            wanted = set(scenario.eval_times)
            out: dict[float, list[dict[str, Any]]] = {}
            t = 0.0
            while t <= max(scenario.eval_times):
                alerts = await engine.evaluate(t)
                if t in wanted:
                    out[t] = [
                        {
                            "alertname": a.name,
                            "labels": dict(a.labels),
                            "annotations": dict(a.annotations),
                        }
                        for a in alerts
                        if a.state == AlertState.FIRING
                    ]
                t += interval
            return out
        finally:
            store.close()


async def unit_tests(
    rules: Sequence[Rule], interval: float, rule_file: str = "rules.yml"
) -> dict[str, Any]:
    """promtool's unit test file: every scenario, with the alerts verger fires."""
    names = sorted({r.name for r in rules if not r.record})
    tests = []
    for scenario in scenarios():
        expected = await expected_alerts(rules, scenario, interval)
        cases = []
        for t in scenario.eval_times:
            firing = expected[t]
            for name in names:
                alerts = [a for a in firing if a["alertname"] == name]
                cases.append(
                    {
                        "eval_time": format_duration(t) if t else "0s",
                        "alertname": name,
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    k: v
                                    for k, v in a["labels"].items()
                                    if k != "alertname"
                                },
                                "exp_annotations": a["annotations"],
                            }
                            for a in sorted(
                                alerts, key=lambda a: sorted(a["labels"].items())
                            )
                        ],
                    }
                )
        tests.append(
            {
                "name": scenario.name,
                "interval": format_duration(scenario.step),
                "input_series": [
                    {"series": name, "values": _values_text(values)}
                    for name, values in scenario.series.items()
                ],
                "alert_rule_test": cases,
            }
        )
    return {
        "rule_files": [rule_file],
        "evaluation_interval": format_duration(interval),
        "tests": tests,
    }


async def export(
    rules: Sequence[Rule],
    folder: Path,
    interval: float,
    progress: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Write rules.yml, alertmanager.yml and rules.test.yml into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "rules.yml": rule_groups(rules, interval),
        "alertmanager.yml": alertmanager_config(),
        # promtool evaluates every step; a minute keeps the tests quick.
        "rules.test.yml": await unit_tests(rules, 60.0),
    }
    written = []
    for index, (name, data) in enumerate(files.items(), 1):
        path = folder / name
        path.write_text(dump(data), encoding="utf-8")
        written.append(path)
        if progress is not None:
            progress(index, len(files))
    return written
