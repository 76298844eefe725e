"""Export: Prometheus accepts verger's rules and fires the same alerts at the same steps."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from verger.monitor.export import export
from verger.monitor.rules import Rule, default_rules

pytestmark = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool (Debian's prometheus) is missing"
)


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("export")
    # A rule of the user's whose annotation prints the value, as Go would.
    own = Rule(
        "error_ratio_seen",
        "verger:error_ratio:rate5m > 0.05",
        "high",
        annotations={"summary": "ratio {{ $value }} in {{ $labels.environment }}"},
    )
    asyncio.run(export([*default_rules(), own], folder, 10.0))
    return folder


def test_promtool_accepts_the_rules(exported: Path) -> None:
    """promtool check rules accepts every exported recording and alerting rule."""
    done = _promtool("check", "rules", "rules.yml", cwd=exported)
    assert done.returncode == 0, done.stdout + done.stderr
    count = len(
        yaml.safe_load((exported / "rules.yml").read_text())["groups"][0]["rules"]
    )
    assert f"SUCCESS: {count} rules found" in done.stdout


def test_prometheus_fires_what_verger_fires_at_every_step(exported: Path) -> None:
    """promtool test rules passes on tests whose expected alerts verger's evaluator chose."""
    tests = yaml.safe_load((exported / "rules.test.yml").read_text())
    fired = {
        case["alertname"]
        for test in tests["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert {
        "api_down", "error_rate_critical", "error_rate_high", "latency_critical",
        "latency_high", "cpu_high", "memory_high", "disk_almost_full", "target_down",
        "deploy_failed", "no_data", "probe_failed", "heartbeat_missed",
        "slo_burn_fast", "slo_burn_slow", "slo_budget_burn", "error_ratio_seen",
    } <= fired  # fmt: skip
    done = _promtool("test", "rules", "rules.test.yml", cwd=exported)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_would_catch_a_different_step(exported: Path, tmp_path: Path) -> None:
    """Moving one expected alert by one step makes promtool fail, so the check has teeth."""
    for name in ("rules.yml", "rules.test.yml"):
        shutil.copy(exported / name, tmp_path / name)
    tests = yaml.safe_load((tmp_path / "rules.test.yml").read_text())
    cases = tests["tests"][0]["alert_rule_test"]
    first = next(i for i, c in enumerate(cases) if c["exp_alerts"])
    same = [
        i for i, c in enumerate(cases) if c["alertname"] == cases[first]["alertname"]
    ]
    before = same[same.index(first) - 1]
    cases[before]["exp_alerts"] = cases[first]["exp_alerts"]
    (tmp_path / "rules.test.yml").write_text(yaml.safe_dump(tests))
    done = _promtool("test", "rules", "rules.test.yml", cwd=tmp_path)
    assert done.returncode != 0


def test_alertmanager_routes_each_tier() -> None:
    """The Alertmanager stub routes critical to page, high to email, medium to ticket."""
    from verger.monitor.export import alertmanager_config

    routes = alertmanager_config()["route"]["routes"]
    assert [(r["matchers"][0], r["receiver"]) for r in routes] == [
        ("severity=critical", "page"),
        ("severity=high", "email"),
        ("severity=medium", "ticket"),
    ]
