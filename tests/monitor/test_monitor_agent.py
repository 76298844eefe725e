"""The real agent monitoring a real release: router metrics stored, a dead scrape target."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from verger.state import open_store

APP = Path(__file__).parent.parent / "support" / "app" / "app.py"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Project:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.dead = _free_port()
        self.endpoint = _free_port()

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "verger", "-c", str(self.root / "verger.yml"), *args],
            capture_output=True, text=True, timeout=120, cwd=self.root,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(f"verger {args} failed:\n{done.stdout}\n{done.stderr}")
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self.run("--json", *args).stdout)


@pytest.fixture
def project() -> Iterator[_Project]:
    # A short folder: the router's Unix socket path must stay under 108 bytes.
    tmp_path = Path(tempfile.mkdtemp(prefix="vmon-"))
    proj = _Project(tmp_path)
    (tmp_path / "src").mkdir()
    shutil.copy(APP, tmp_path / "src" / "app.py")
    (tmp_path / "verger.yml").write_text(
        f"""\
app: monitored
start: {sys.executable} app.py
health: {{path: /health, interval: 100ms, timeout: 1s, healthy_after: 2, start_timeout: 10s}}
watch: {{duration: 1s, interval: 100ms}}
environments:
  production:
    listen: 127.0.0.1:{proj.port}
monitor:
  interval: 1s
  listen: 127.0.0.1:{proj.endpoint}
  heartbeats:
    nightly: {{every: 1d}}
  scrape:
    - {{url: "http://127.0.0.1:{proj.dead}/metrics", timeout: 500ms}}
"""
    )
    yield proj
    proj.run("down", check=False)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(entry / "cwd").startswith(str(tmp_path)):
                    os.kill(int(entry.name), signal.SIGKILL)
    shutil.rmtree(tmp_path, ignore_errors=True)


def _wait(check: Any, seconds: float = 30) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.5)


def test_agent_stores_router_metrics_and_flags_the_dead_target(
    project: _Project,
) -> None:
    """The agent stores router requests, flags a dead scrape, serves /metrics and beats."""
    project.run("up")
    project.run("deploy", "production", str(project.root / "src"), "--version", "v1")
    for _ in range(20):
        urllib.request.urlopen(f"http://127.0.0.1:{project.port}/", timeout=5).read()

    def requests() -> float:
        series = project.json(
            "monitor", "query", 'verger_requests_total{class="2xx"}', "--since", "5m"
        )
        return max((s["values"][-1] for s in series), default=0.0)

    assert _wait(lambda: requests() >= 20)

    ups = project.json("monitor", "query", 'up{job="app"}', "--since", "5m")
    assert ups and set(ups[0]["values"]) == {0.0}

    def target_down() -> str:
        rules = project.json("monitor", "rules")
        state = next(r["state"] for r in rules if r["key"] == "target_down")
        return "" if state == "ok" else str(state)

    assert "1 pending" in _wait(target_down)
    base = f"http://127.0.0.1:{project.endpoint}"
    text = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
    families = {f.name for f in text_string_to_metric_families(text)}
    assert {"verger_requests_total", "up", "verger_host_cpu_ratio"} <= families

    request = urllib.request.Request(f"{base}/heartbeat/nightly", method="POST")
    assert urllib.request.urlopen(request, timeout=5).status == 200
    with pytest.raises(urllib.error.HTTPError) as unknown:
        urllib.request.urlopen(f"{base}/heartbeat/weekly", timeout=5)
    assert unknown.value.code == 404
    state = open_store(".verger/state.db", project.root)
    assert "nightly" in state.heartbeats()
    state.close()

    log = (project.root / ".verger" / "agent.log").read_text()
    assert "failed (ConnectError" in log or "failed (ConnectError: " in log, log[-2000:]


class _Recorder:
    """A local webhook receiver that records every JSON body it is sent."""

    def __init__(self) -> None:
        import http.server
        import threading

        received: list[dict[str, Any]] = []
        self.received = received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received.append(json.loads(self.rfile.read(length) or b"{}"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_firing_rule_reaches_the_webhook_receiver_through_the_agent(
    project: _Project,
) -> None:
    """A rule the agent evaluates fires and its notification reaches a webhook once."""
    recorder = _Recorder()
    try:
        config = project.root / "verger.yml"
        config.write_text(
            config.read_text()
            + f"""\
  rules:
    - name: app_scrape_failing
      expr: up{{job="app"}} == 0
      for: 2s
      severity: critical
      annotations: {{summary: "the app's metrics cannot be read"}}
  receivers:
    page: {{webhook: "{recorder.url}"}}
"""
        )
        project.run("up")
        assert _wait(lambda: recorder.received, 45), "no notification arrived"
        time.sleep(3)
        firing = [
            body for body in recorder.received if "app_scrape_failing" in str(body)
        ]
        assert len(firing) == 1, recorder.received
        assert "firing" in json.dumps(firing[0]).lower()
    finally:
        recorder.close()
