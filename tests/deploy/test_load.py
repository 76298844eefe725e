"""Switches and rollbacks through the agent under concurrent keep-alive load."""

from __future__ import annotations

import threading
import time
from http.client import HTTPConnection

import pytest
from conftest import Project, Traffic, config_text

FAST = dict(
    health="{path: /health, interval: 50ms, timeout: 1s, healthy_after: 1, start_timeout: 5s}",
    watch="{duration: 1s, max_error_rate: 5%, max_p95: 2s, interval: 100ms}",
    smoke="[]",
    keep_previous="1h",
)


@pytest.mark.parametrize("router", ["builtin", "haproxy"])
def test_twenty_switches_and_rollbacks_fail_no_request(
    project: Project, router: str
) -> None:
    """Over 24 deploys and rollbacks with 8 keep-alive clients, no request fails."""
    project.write_config(config_text(project.ports, router=router, **FAST))
    project.run("up", check=True)
    project.run(
        "deploy", "staging", str(project.source("v0")), "--version", "v0", check=True
    )
    with Traffic(project.ports["staging"], clients=8) as traffic:
        for number in range(1, 13):
            version = f"v{number}"
            project.run(
                "deploy", "staging", str(project.source(version)), "--version", version,
                check=True,
            )  # fmt: skip
            project.run("rollback", "staging", check=True)
            project.run("rollback", "staging", "--to", version, check=True)
        time.sleep(0.3)
    assert traffic.failed == [], traffic.failed[:5]
    assert traffic.sent > 500
    history = project.json("history", "staging", "--limit", "100")
    assert sum(1 for d in history if d["status"] == "succeeded") == 37
    assert project.get("staging")[1] == "v12"


def slow_request(port: int, seconds: float, result: dict[str, object]) -> None:
    conn = HTTPConnection("127.0.0.1", port, timeout=60)
    started = time.monotonic()
    try:
        conn.request("GET", f"/slow?seconds={seconds}")
        response = conn.getresponse()
        response.read()
        result.update(status=response.status, version=response.getheader("X-Version"))
    except OSError as exc:
        result.update(error=repr(exc))
    finally:
        result["seconds"] = time.monotonic() - started
        conn.close()


@pytest.mark.parametrize("router", ["builtin", "haproxy"])
def test_ten_second_request_in_flight_during_a_switch_completes(
    project: Project, router: str
) -> None:
    """A 10 s request sent to blue before the switch finishes there; blue stops after it."""
    settings = {**FAST, "keep_previous": "0s"}
    text = config_text(project.ports, router=router, **settings)
    project.write_config(text.replace("drain_timeout: 5s", "drain_timeout: 15s"))
    project.run("up", check=True)
    project.run(
        "deploy", "staging", str(project.source("v1")), "--version", "v1", check=True
    )
    result: dict[str, object] = {}
    slow = threading.Thread(
        target=slow_request, args=(project.ports["staging"], 10, result)
    )
    slow.start()
    time.sleep(0.5)
    project.run(
        "deploy", "staging", str(project.source("v2")), "--version", "v2", check=True
    )
    assert project.get("staging")[1] == "v2"
    slow.join(30)
    assert result.get("status") == 200 and result.get("version") == "v1", result


def test_drain_timeout_is_logged_with_the_requests_cut(project: Project) -> None:
    """When drain_timeout passes with a request in flight, the agent logs the count cut."""
    settings = {**FAST, "keep_previous": "0s"}
    project.write_config(
        config_text(project.ports, **settings).replace(
            "drain_timeout: 5s", "drain_timeout: 1s"
        )
    )
    project.run("up", check=True)
    project.run(
        "deploy", "staging", str(project.source("v1")), "--version", "v1", check=True
    )
    result: dict[str, object] = {}
    slow = threading.Thread(
        target=slow_request, args=(project.ports["staging"], 8, result)
    )
    slow.start()
    time.sleep(0.5)
    project.run(
        "deploy", "staging", str(project.source("v2")), "--version", "v2", check=True
    )
    slow.join(30)
    log = (project.root / ".verger" / "agent.log").read_text()
    assert "Drain timeout of 1s passed with 1 requests in flight on staging v1" in log
    assert "error" in result or result.get("status", 200) >= 500
