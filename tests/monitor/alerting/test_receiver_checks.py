"""verger check on alerting: receivers configured and reachable, secrets kept out."""

from __future__ import annotations

import socket
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from verger.checks import Check, run_checks


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def listener() -> Iterator[int]:
    """A real socket listening on a loopback port, closed afterwards."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def config(folder: Path, monitor: str) -> Path:
    path = folder / "verger.yml"
    head = "app: shop\nstart: python3 -m http.server $PORT\n"
    head += f"environments:\n  staging:\n    listen: {closed_port()}\n"
    path.write_text(head + textwrap.dedent(monitor), encoding="utf-8")
    return path


def receivers(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks if c.name.startswith("receiver")}


def test_reachable_and_unreachable_receivers(tmp_path: Path, listener: int) -> None:
    """A receiver whose host accepts TCP is ok; one that refuses warns, with no secret shown."""
    down = closed_port()
    path = config(
        tmp_path,
        f"""\
        monitor:
          receivers:
            page: {{pagerduty: {{routing_key: K3Y, url: "http://127.0.0.1:{listener}/v2/enqueue"}}}}
            email: {{smtp: "127.0.0.1:{down}", to: ops@example.org, password: PA55}}
            chat: {{webhook: "http://127.0.0.1:{down}/services/T0/SECRET"}}
        """,
    )
    found = receivers(run_checks(path))
    assert found["receiver.page"].status == "ok"
    assert found["receiver.email"].status == "warn"
    assert f"127.0.0.1:{down}" in found["receiver.email"].message
    chat = found["receiver.chat"]
    assert chat.status == "warn" and chat.severity == "warning"
    assert "SECRET" not in chat.message and "/***" in chat.message
    text = " ".join(c.message + c.hint for c in found.values())
    assert "K3Y" not in text and "PA55" not in text


def test_monitor_without_receivers_warns(tmp_path: Path) -> None:
    """A monitor: section with no receivers warns that alerts reach nobody."""
    found = receivers(run_checks(config(tmp_path, "monitor: {}\n")))
    assert found["receivers"].status == "warn"
    assert "alerts reach nobody" in found["receivers"].message
    without = receivers(run_checks(config(tmp_path, "")))
    assert without["receivers"].status == "skip"
