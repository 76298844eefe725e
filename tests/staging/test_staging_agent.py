"""After the swap, staging's live release is redeployed through the agent, unseen by users."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from http.client import HTTPConnection
from pathlib import Path

APP = Path(__file__).parent.parent / "support" / "app" / "app.py"
VERGER = [sys.executable, "-m", "verger"]


def verger(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VERGER, "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=config.parent,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _traffic(port: int, stop: threading.Event, failures: list[str]) -> None:
    while not stop.is_set():
        conn = HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/")
            response = conn.getresponse()
            response.read()
            if response.status >= 500:
                failures.append(f"HTTP {response.status}")
        except OSError as exc:
            failures.append(str(exc))
        finally:
            conn.close()
        time.sleep(0.01)


def test_refresh_redeploys_the_live_release_without_a_failed_request(site):
    """The live version is redeployed blue-green with smoke tests while users see no error."""
    source = site.folder / "src"
    source.mkdir()
    shutil.copy(APP, source / "app.py")
    site.head = [
        "app: testapp",
        f"start: {sys.executable} app.py",
        "health: {path: /health, interval: 100ms, timeout: 1s, healthy_after: 2,"
        " start_timeout: 5s}",
        "smoke: [{http: GET /smoke}]",
        "watch: {duration: 1s, max_error_rate: 5%, max_p95: 1s, interval: 100ms}",
        "keep_previous: 30s",
    ]
    config = site.write_config()
    try:
        assert verger(config, "up").returncode == 0
        deployed = verger(config, "deploy", "staging", str(source), "--version", "v1")
        assert deployed.returncode == 0, deployed.stderr
        stop, failures = threading.Event(), []
        users = threading.Thread(target=_traffic, args=(site.port, stop, failures))
        users.start()
        try:
            done = verger(config, "--json", "staging", "refresh", "--snapshot")
        finally:
            stop.set()
            users.join()
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["restart"] == (
            "Redeployed v1 to staging; its smoke tests passed."
        )
        assert failures == []
        history = json.loads(verger(config, "--json", "history", "staging").stdout)
        assert len(history) == 2
    finally:
        verger(config, "down")
