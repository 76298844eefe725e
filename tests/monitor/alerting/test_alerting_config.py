"""The monitor section's alerting keys: accepted forms, and mistakes refused with file:line."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from verger.config import load_config
from verger.errors import ConfigError
from verger.monitor.alerting import make_dispatcher
from verger.monitor.alerting.routing import build_tree
from verger.state import open_store

HEAD = """\
app: shop
start: node server.js
environments:
  production:
    listen: 8080
monitor:
"""


def load(folder: Path, monitor: str) -> object:
    path = folder / "verger.yml"
    path.write_text(
        HEAD + textwrap.indent(textwrap.dedent(monitor), "  "), encoding="utf-8"
    )
    return load_config(path).config


def problems(folder: Path, monitor: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(folder, monitor)
    error = caught.value
    return error.problems or [error.message.split(": ", 1)[1]]


def test_the_example_receivers_load_and_route_by_tier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The example's page, email and ticket receivers load; the tiers route to them."""
    monkeypatch.setenv("PAGERDUTY_KEY", "k-123")
    config = load(
        tmp_path,
        """\
        receivers:
          page: {pagerduty: {routing_key: "${PAGERDUTY_KEY}"}}
          email: {smtp: smtp.example.com:587, to: oncall@example.org}
          ticket: {webhook: https://tickets.example/hooks/ops}
        maintenance:
          - name: sunday upgrade
            timezone: America/Chicago
            weekly: {days: [sun], start: "02:00"}
            duration: 2h
        """,
    )
    monitor = config.monitor  # type: ignore[attr-defined]
    assert monitor.receivers["page"].pagerduty.routing_key == "k-123"
    assert "k-123" not in repr(monitor.receivers["page"])
    assert monitor.receivers["email"].to == ["oncall@example.org"]
    tree = build_tree(monitor.route, monitor.receivers)
    for severity, receiver in (
        ("critical", "page"),
        ("high", "email"),
        ("medium", "ticket"),
    ):
        [node] = tree.route({"alertname": "x", "severity": severity})
        assert node.receiver == receiver
    store = open_store(".verger/state.db", tmp_path)
    assert sorted(make_dispatcher(config, store).receivers) == [
        "email",
        "page",
        "ticket",
    ]  # type: ignore[arg-type]
    store.close()


def test_missing_tier_receiver_falls_back_to_a_more_urgent_one(tmp_path: Path) -> None:
    """With only a page receiver, high alerts page too rather than reaching nobody."""
    config = load(
        tmp_path, "receivers:\n  page: {webhook: https://chat.example/hook}\n"
    )
    monitor = config.monitor  # type: ignore[attr-defined]
    tree = build_tree(monitor.route, monitor.receivers)
    for severity in ("critical", "high", "medium"):
        assert tree.route({"severity": severity})[0].receiver == "page"


def test_route_naming_an_unknown_receiver_is_refused_at_its_line(
    tmp_path: Path,
) -> None:
    """A route's receiver that is not defined is named with its key path and line.

    The line is that of ``routes:``: the loader finds keys, not list items,
    from a message's key path.
    """
    found = problems(
        tmp_path,
        """\
        receivers:
          email: {webhook: https://chat.example/hook}
        route:
          receiver: email
          routes:
            - match: {severity: critical}
              receiver: pager
        """,
    )
    assert found == [
        "verger.yml:11: monitor.route.routes.0.receiver: names 'pager', which is not "
        "under monitor.receivers (known: email)"
    ]


def test_receiver_mistakes_are_each_explained(tmp_path: Path) -> None:
    """Two kinds at once, smtp without to, a bad URL and a bad address are refused."""
    found = problems(
        tmp_path,
        """\
        receivers:
          both: {webhook: https://a.example/x, ticket: https://b.example/y}
          mail: {smtp: smtp.example.com:587}
          chat: {webhook: ftp://chat.example}
          post: {smtp: smtp.example.com, to: a@example.org}
        """,
    )
    text = "\n".join(found)
    assert "monitor.receivers.both: a receiver has exactly one of webhook:" in text
    assert "monitor.receivers.mail: an smtp: receiver needs to:" in text
    assert "monitor.receivers.chat.webhook: expected an http:// or https:// URL" in text
    assert "monitor.receivers.post.smtp: expected HOST:PORT" in text


def test_smtp_on_port_465_is_implicit_tls_unless_told_otherwise(
    tmp_path: Path,
) -> None:
    """Port 465 means TLS from the first byte; tls: false turns it off; 587 does not."""
    config: Any = load(
        tmp_path,
        """\
        receivers:
          smtps: {smtp: mail.example.org:465, to: a@example.org}
          plain465: {smtp: mail.example.org:465, to: a@example.org, tls: false}
          submission: {smtp: mail.example.org:587, to: a@example.org}
          forced: {smtp: mail.example.org:2465, to: a@example.org, tls: true}
        """,
    )
    wanted = {"smtps": True, "plain465": False, "submission": False, "forced": True}
    got = {n: r.implicit_tls for n, r in config.monitor.receivers.items()}
    assert got == wanted


def test_tls_keys_contradicting_or_misplaced_are_refused(tmp_path: Path) -> None:
    """tls with starttls, and ca_file on a webhook, are each refused with a reason."""
    found = problems(
        tmp_path,
        """\
        receivers:
          both: {smtp: mail.example.org:465, to: a@example.org, tls: true, starttls: true}
          hook: {webhook: https://a.example/x, ca_file: ca.pem}
        """,
    )
    text = "\n".join(found)
    assert "monitor.receivers.both: tls: true speaks TLS from the first byte" in text
    assert "monitor.receivers.hook: to, from, username, password, starttls" in text


def test_maintenance_mistakes_are_each_explained(tmp_path: Path) -> None:
    """An unknown time zone, an unknown day and a bad cron are refused with the forms accepted."""
    found = problems(
        tmp_path,
        """\
        maintenance:
          - {name: a, timezone: Mars/Olympus, cron: "0 2 * * *", duration: 1h}
          - {name: b, weekly: {days: [funday], start: "02:00"}, duration: 1h}
          - {name: c, cron: "every night", duration: 1h}
          - {name: d, duration: 1h}
        """,
    )
    text = "\n".join(found)
    assert "unknown time zone 'Mars/Olympus'" in text
    assert "unknown day 'fun'" in text
    assert "expected a cron expression" in text
    assert "exactly one of cron: or weekly:" in text


def test_unquoted_start_time_reads_as_a_time(tmp_path: Path) -> None:
    """weekly start: 22:00 unquoted (a YAML 1.1 number) still means 22:00."""
    config = load(
        tmp_path,
        "maintenance:\n  - {name: n, weekly: {days: [mon], start: 22:00}, duration: 4h}\n",
    )
    [window] = config.monitor.maintenance  # type: ignore[attr-defined]
    assert window.weekly.start == "22:00"
