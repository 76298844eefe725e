"""The real agent serving the dashboard, and 'verger dashboard' printing its URL."""

from __future__ import annotations

import contextlib
import http.cookiejar
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

from verger.config import load_config
from verger.config.starter import starter_text
from verger.errors import ConfigError

APP = Path(__file__).parent.parent / "support" / "app" / "app.py"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Project:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.board = _free_port()

    def write(self, dashboard: bool = True) -> None:
        section = f"dashboard:\n  listen: 127.0.0.1:{self.board}\n" if dashboard else ""
        (self.root / "verger.yml").write_text(
            f"""\
app: watched
start: {sys.executable} app.py
health: {{path: /health, interval: 100ms, timeout: 1s, healthy_after: 2, start_timeout: 10s}}
watch: {{duration: 1s, interval: 100ms}}
environments:
  production:
    listen: 127.0.0.1:{self.port}
monitor:
  interval: 1s
{section}"""
        )

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "verger", "-c", str(self.root / "verger.yml"), *args],
            capture_output=True, text=True, timeout=120, cwd=self.root,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(f"verger {args} failed:\n{done.stdout}\n{done.stderr}")
        return done


@pytest.fixture
def project() -> Iterator[_Project]:
    # A short folder: the router's Unix socket path must stay under 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="vweb-"))
    proj = _Project(root)
    (root / "src").mkdir()
    shutil.copy(APP, root / "src" / "app.py")
    proj.write()
    yield proj
    proj.run("down", check=False)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(entry / "cwd").startswith(str(root)):
                    os.kill(int(entry.name), signal.SIGKILL)
    shutil.rmtree(root, ignore_errors=True)


def _wait(check: Any, seconds: float = 30) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.5)


def test_the_agent_serves_the_dashboard_at_the_url_verger_dashboard_prints(
    project: _Project,
) -> None:
    """'verger dashboard' prints a URL that opens the page and the API, live data in it."""
    stopped = project.run("dashboard", check=False)
    # As every command that needs the agent: exit code 3.
    assert stopped.returncode == 3
    assert "the agent is not running" in stopped.stderr
    assert "verger up" in stopped.stderr

    project.run("up")
    project.run("deploy", "production", str(project.root / "src"), "--version", "v7")
    printed = json.loads(project.run("--json", "dashboard").stdout)
    assert printed["url"].startswith(f"http://127.0.0.1:{project.board}/?token=")
    human = project.run("dashboard").stdout.strip()
    assert human == printed["url"]

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(printed["url"], timeout=10) as page:
        assert page.url == f"http://127.0.0.1:{project.board}/"
        assert "/static/dashboard.js" in page.read().decode()
    base = f"http://127.0.0.1:{project.board}/api/v1"
    releases = json.loads(opener.open(f"{base}/releases", timeout=10).read())
    assert releases["releases"][0]["version"] == "v7"

    for _ in range(30):
        urllib.request.urlopen(f"http://127.0.0.1:{project.port}/", timeout=5).read()

    def throughput() -> Any:
        summary = json.loads(opener.open(f"{base}/summary", timeout=10).read())
        return summary["tiles"]["throughput"]["value"]

    assert _wait(throughput), "the router's requests never reached the dashboard"

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{base}/summary", timeout=10)
    assert refused.value.code == 401

    # The token is kept in the state folder: the same URL after a restart.
    project.run("down")
    project.run("up")
    again = json.loads(project.run("--json", "dashboard").stdout)
    assert again["url"] == printed["url"]


def test_verger_dashboard_without_a_dashboard_section_says_how_to_add_one(
    project: _Project,
) -> None:
    """With no dashboard: section, 'verger dashboard' fails in one line with the fix."""
    project.write(dashboard=False)
    done = project.run("dashboard", check=False)
    assert done.returncode != 0
    assert "there is no dashboard in verger.yml" in done.stderr
    assert "dashboard: {listen: 127.0.0.1:9300}" in done.stderr
    assert "Traceback" not in done.stderr


@contextlib.contextmanager
def _squatter(port: int) -> Iterator[subprocess.Popen[bytes]]:
    """Another program serving HTTP on ``port``: it listens and answers."""
    squatter = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert _wait(lambda: _answers(port), 10), "http.server did not start"
        yield squatter
    finally:
        squatter.kill()
        squatter.wait(10)


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):
            return True
    except (OSError, urllib.error.HTTPError):
        return False


def test_a_port_another_program_serves_gets_no_url_until_the_agent_takes_it(
    project: _Project,
) -> None:
    """With http.server on the port, up warns, dashboard refuses; freed, the agent listens."""
    with _squatter(project.board):
        up = project.run("up")
        assert f"port {project.board} is taken by another program" in up.stderr
        assert "the agent tries again by itself" in up.stderr
        done = project.run("dashboard", check=False)
        assert done.returncode == 1
        assert f"does not listen on 127.0.0.1:{project.board}" in done.stderr
        assert "token" not in done.stdout + done.stderr
        status = json.loads(project.run("--json", "status").stdout)
        assert "is taken" in status["dashboard_problem"]
        checks = json.loads(project.run("--json", "check", check=False).stdout)
        port = next(c for c in checks if c["name"] == "dashboard.port")
        assert port["status"] == "fail" and "is taken" in port["message"]

    # Freed, the port is the agent's at its next try (every 15 s).
    assert _wait(lambda: project.run("dashboard", check=False).returncode == 0, 40)
    printed = json.loads(project.run("--json", "dashboard").stdout)
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(printed["url"], timeout=10) as page:
        assert "/static/dashboard.js" in page.read().decode()
    log = (project.root / ".verger" / "agent.log").read_text()
    assert "The dashboard cannot listen on" in log
    assert f"The dashboard listens on 127.0.0.1:{project.board} now" in log
    assert project.run("up").stderr.count("dashboard") == 0
    checks = json.loads(project.run("--json", "check", check=False).stdout)
    port = next(c for c in checks if c["name"] == "dashboard.port")
    assert port["status"] == "ok" and "verger's agent" in port["message"]


def test_dashboard_listen_must_not_share_a_port(tmp_path: Path) -> None:
    """dashboard.listen on an environment's or monitor.listen's port is refused up front."""
    (tmp_path / "verger.yml").write_text(
        """\
app: shop
start: python app.py
environments:
  production:
    listen: 127.0.0.1:8080
monitor:
  listen: 127.0.0.1:9300
dashboard:
  listen: 8080
"""
    )
    with pytest.raises(ConfigError) as refused:
        load_config(str(tmp_path / "verger.yml"))
    said = " ".join([refused.value.message, *refused.value.problems])
    assert "verger.yml:9: dashboard.listen" in said
    assert "uses port 8080, already used by environments.production" in said
    text = (tmp_path / "verger.yml").read_text().replace("listen: 8080", "listen: 9300")
    (tmp_path / "verger.yml").write_text(text)
    with pytest.raises(ConfigError) as again:
        load_config(str(tmp_path / "verger.yml"))
    said = " ".join([again.value.message, *again.value.problems])
    assert "uses port 9300, already used by monitor.listen" in said


def test_the_starter_config_names_the_dashboard_and_still_loads(tmp_path: Path) -> None:
    """'verger init' writes a commented dashboard: section; uncommented it loads."""
    text = starter_text(tmp_path)
    assert "#dashboard:\n#  listen: 127.0.0.1:9300" in text
    opened = text.replace("#dashboard:\n#  listen:", "dashboard:\n  listen:")
    (tmp_path / "verger.yml").write_text(opened)
    loaded = load_config(str(tmp_path / "verger.yml"))
    assert loaded.config.dashboard is not None
    assert loaded.config.dashboard.listen == "127.0.0.1:9300"
