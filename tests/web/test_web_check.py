"""'verger check' on the dashboard: its port, and a warning when it leaves loopback."""

from __future__ import annotations

import socket
from pathlib import Path

from verger.checks import Check, run_checks


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _dashboard_checks(root: Path, listen: str) -> dict[str, Check]:
    (root / "verger.yml").write_text(
        f"""\
app: shop
start: python app.py
environments:
  production:
    listen: 127.0.0.1:{_free_port()}
dashboard:
  listen: {listen}
"""
    )
    return {c.name: c for c in run_checks(root / "verger.yml") if "dashboard" in c.name}


def test_a_loopback_dashboard_on_a_free_port_passes(tmp_path: Path) -> None:
    """On 127.0.0.1 and a free port both dashboard checks are ok."""
    port = _free_port()
    checks = _dashboard_checks(tmp_path, f"127.0.0.1:{port}")
    assert checks["dashboard.port"].status == "ok"
    assert checks["dashboard.listen"].status == "ok"


def test_a_dashboard_on_every_address_is_a_warning_naming_tls(tmp_path: Path) -> None:
    """listen on 0.0.0.0 warns to keep it on loopback or put it behind TLS."""
    checks = _dashboard_checks(tmp_path, f"0.0.0.0:{_free_port()}")
    reach = checks["dashboard.listen"]
    assert reach.status == "warn" and reach.severity == "warning"
    assert "plain HTTP" in reach.message
    assert "TLS" in reach.hint and "127.0.0.1" in reach.hint


def test_a_dashboard_port_another_program_listens_on_fails(tmp_path: Path) -> None:
    """A listening socket on the port fails the check, saying the URL would be refused."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        checks = _dashboard_checks(tmp_path, f"127.0.0.1:{port}")
    taken = checks["dashboard.port"]
    assert taken.status == "fail"
    assert "is taken by another process" in taken.message
    assert "dashboard.listen" in taken.hint


def test_without_a_dashboard_the_check_is_skipped(tmp_path: Path) -> None:
    """No dashboard: section, no dashboard check beyond a skip."""
    (tmp_path / "verger.yml").write_text(
        "app: shop\nstart: python app.py\nenvironments:\n"
        f"  production:\n    listen: 127.0.0.1:{_free_port()}\n"
    )
    found = [c for c in run_checks(tmp_path / "verger.yml") if c.name == "dashboard"]
    assert [c.status for c in found] == ["skip"]
