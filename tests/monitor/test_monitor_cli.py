"""verger monitor commands: export, rules, query and heartbeat, and their errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CONFIG = """\
app: clitest
start: python3 app.py
environments:
  production:
    listen: 127.0.0.1:{port}
monitor:
  heartbeats:
    nightly: {{every: 1d}}
  rules:
    - default
    - {{name: queue_backlog, expr: 'verger_redis_queue_length > 1000', for: 5m,
       severity: medium}}
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "verger.yml").write_text(CONFIG.format(port=18998))
    return tmp_path


def _verger(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "verger", "-c", str(folder / "verger.yml"), *args],
        capture_output=True, text=True, timeout=60, cwd=folder,
    )  # fmt: skip


def test_rules_lists_defaults_and_own_rules(folder: Path) -> None:
    """monitor rules lists the default tiers, the config's own rules and no-data rules."""
    done = _verger(folder, "--json", "monitor", "rules")
    assert done.returncode == 0, done.stderr
    rules = {r["key"]: r for r in json.loads(done.stdout)}
    assert rules["queue_backlog"]["severity"] == "medium"
    assert rules["queue_backlog"]["for"] == "5m"
    assert rules["api_down"]["state"] == "ok"
    assert 'no_data{metric="verger_redis_queue_length"}' in rules


def test_query_before_any_metric_says_how_to_start(folder: Path) -> None:
    """monitor query with no metric store yet fails with one line and a hint."""
    done = _verger(folder, "monitor", "query", "up")
    assert done.returncode == 1
    assert "there is no metric store yet" in done.stderr
    assert "Traceback" not in done.stderr


def test_heartbeat_names_are_checked(folder: Path) -> None:
    """monitor heartbeat records a known heartbeat and refuses an unknown one."""
    assert _verger(folder, "monitor", "heartbeat", "nightly").returncode == 0
    done = _verger(folder, "monitor", "heartbeat", "weekly")
    assert done.returncode == 1
    assert "known: nightly" in done.stderr


def test_export_writes_three_files(folder: Path) -> None:
    """monitor export writes rules, an Alertmanager config and promtool tests."""
    done = _verger(folder, "--json", "monitor", "export", str(folder / "prom"))
    assert done.returncode == 0, done.stderr
    names = sorted(Path(p).name for p in json.loads(done.stdout)["files"])
    assert names == ["alertmanager.yml", "rules.test.yml", "rules.yml"]
    assert "queue_backlog" in (folder / "prom" / "rules.yml").read_text()
