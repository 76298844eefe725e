"""The monitor: section's sources and rules keys: forms accepted, mistakes refused."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from verger.config import load_config
from verger.errors import ConfigError

BASE = """\
app: shop
start: node server.js
databases:
  production: postgresql://postgres@127.0.0.1:5432/shop
environments:
  production:
    listen: 18080
"""


def _load(tmp_path: Path, monitor: str) -> object:
    path = tmp_path / "verger.yml"
    path.write_text(
        BASE + "monitor:\n" + textwrap.indent(textwrap.dedent(monitor), "  ")
    )
    return load_config(path).config.monitor


def test_short_forms_and_defaults(tmp_path: Path) -> None:
    """Plain scrape URLs and plain business SQL are accepted; rules default to 'default'."""
    monitor = _load(
        tmp_path,
        """\
        scrape:
          - http://127.0.0.1:9100/metrics
          - {url: http://127.0.0.1:9200/metrics, every: 30s}
        business:
          messages_sent: "select count(*) from messages"
        probes:
          - {name: api, http: "GET https://api.example.com/health", status: 200,
             contains: ok, max_latency: 500ms, tls_days: 14}
          - {name: db, tcp: "127.0.0.1:5432"}
        heartbeats:
          nightly_report: {every: 1d}
        slo: {availability: 99.95%}
        """,
    )
    assert monitor.interval == 10.0 and monitor.retention == 30 * 86400
    assert monitor.scrape[0].url.endswith(":9100/metrics")
    assert monitor.scrape[1].every == 30.0
    assert monitor.business["messages_sent"].every == 60.0
    assert monitor.probes[0].max_latency == 0.5
    assert monitor.heartbeats["nightly_report"].every == 86400
    assert monitor.rules == ["default"]
    assert abs(monitor.slo.availability - 0.9995) < 1e-12


def test_own_rules_are_read_with_for_and_keep_firing_for(tmp_path: Path) -> None:
    """A rule list mixes 'default' and rules with expr, for, keep_firing_for, labels."""
    monitor = _load(
        tmp_path,
        """\
        rules:
          - default
          - name: queue_backlog
            expr: verger_redis_queue_length > 1000
            for: 5m
            keep_firing_for: 2m
            severity: medium
            labels: {team: sms}
        """,
    )
    rule = monitor.rules[1].rule()
    assert (rule.for_, rule.keep_firing_for, rule.labels) == (300, 120, {"team": "sms"})


@pytest.mark.parametrize(
    ("monitor", "expected"),
    [
        ("rules:\n  - {name: x, expr: 'rate(up[5x]) > 1'}\n", "column 9"),
        ("rules:\n  - {name: x, expr: 'up == 0', severity: urgent}\n", "critical"),
        ("probes:\n  - {name: api, http: 'GET /health'}\n", "METHOD URL"),
        ("probes:\n  - {name: api, tcp: db:5432, status: 200}\n", "http: probes"),
        ("scrape:\n  - 127.0.0.1:9100/metrics\n", "http://"),
        ("interval: 100ms\n", "at least 1s"),
        ("redis: {url: 'http://x'}\n", "redis://"),
        ("postgres: {database: reporting}\n", "not under databases:"),
    ],
)
def test_mistakes_are_refused_with_what_is_accepted(
    tmp_path: Path, monitor: str, expected: str
) -> None:
    """Each mistake in monitor: is a config error that says what is accepted."""
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, monitor)
    text = caught.value.message + " ".join(caught.value.problems)
    assert expected in text
