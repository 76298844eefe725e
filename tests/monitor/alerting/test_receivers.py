"""Each receiver's wire format against a local recording server: Slack, PagerDuty, ticket, SMTP."""

from __future__ import annotations

import asyncio
import email
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from alerting_fakes import (
    T0,
    alert,
    dispatcher,
    recording_server,
    resolved,
    section,
    step,
)

from verger.config.alerting import AlertingSection
from verger.state import Store


def test_webhook_body_is_slack_text_plus_alert_fields(store: Store) -> None:
    """A webhook gets Slack's text and the structured group and alert fields."""

    async def main() -> None:
        async with recording_server() as rec:
            d = dispatcher(store, section(rec, route={"group_wait": "0s"}))
            busy = alert("cpu_busy", "high", instance="web1")
            await step(d, [busy], T0)
            [body] = rec.bodies("/email")
            assert body["text"].splitlines() == [
                "[FIRING:1] shop: cpu_busy environment=production",
                "- firing: cpu_busy",
            ]
            assert body["status"] == "firing" and body["reason"] == "new"
            assert body["group_labels"] == {
                "alertname": "cpu_busy",
                "environment": "production",
            }
            [sent] = body["alerts"]
            assert sent["labels"]["instance"] == "web1"
            assert sent["fingerprint"] == busy.fingerprint
            assert sent["fired_at"].endswith("+00:00")
            assert body["common_labels"]["severity"] == "high"

    asyncio.run(main())


def test_pagerduty_triggers_and_resolves_one_dedup_key(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """PagerDuty gets trigger then resolve with one dedup_key; the routing key is never logged."""

    async def main() -> None:
        async with recording_server(ok=202) as rec:
            d = dispatcher(store, section(rec, route={"group_wait": "0s"}))
            down = alert("api_down", "critical")
            await step(d, [down], T0)
            await step(d, [resolved(down, T0 + 400)], T0 + 400)
            trigger, resolve = rec.bodies("/page")
            assert trigger["routing_key"] == "R0UT1NGKEY"
            assert trigger["event_action"] == "trigger"
            assert trigger["payload"]["severity"] == "critical"
            assert trigger["payload"]["summary"].startswith("[FIRING:1] shop: api_down")
            assert trigger["payload"]["source"] == "shop"
            assert trigger["payload"]["custom_details"]["incident"] == 1
            assert resolve == {
                "routing_key": "R0UT1NGKEY",
                "event_action": "resolve",
                "dedup_key": trigger["dedup_key"],
            }
            assert trigger["dedup_key"].startswith("verger-")

    with caplog.at_level(logging.DEBUG):
        asyncio.run(main())
    assert "Sent [FIRING:1] shop: api_down" in caplog.text
    assert "R0UT1NGKEY" not in caplog.text


def test_pagerduty_maps_high_to_error(store: Store) -> None:
    """A high alert routed to PagerDuty is sent with PagerDuty's error severity."""

    async def main() -> None:
        async with recording_server(ok=202) as rec:
            route = {"receiver": "page", "group_wait": "0s", "routes": []}
            d = dispatcher(store, section(rec, route=route))
            await step(d, [alert("cpu_busy", "high")], T0)
            [trigger] = rec.bodies("/page")
            assert trigger["payload"]["severity"] == "error"

    asyncio.run(main())


def test_ticket_opens_once_updates_on_change_and_closes(store: Store) -> None:
    """A ticket is opened once per group, updated when alerts change, closed on resolve."""

    async def main() -> None:
        async with recording_server() as rec:
            route = {
                "group_wait": "0s",
                "group_interval": "1m",
                "repeat_interval": "5m",
            }
            d = dispatcher(store, section(rec, route=route))
            first = alert("slow_query", "medium", query="q1")
            second = alert("slow_query", "medium", query="q2")
            await step(d, [first], T0)
            for offset in range(60, 1200, 60):
                await step(d, [first, second], T0 + offset)
            await step(
                d, [resolved(first, T0 + 1200), resolved(second, T0 + 1200)], T0 + 1200
            )
            tickets = rec.bodies("/ticket")
            assert [t["action"] for t in tickets] == ["open", "update", "close"]
            assert len({t["key"] for t in tickets}) == 1
            assert tickets[0]["title"].startswith("[FIRING:1] shop: slow_query")

    asyncio.run(main())


@dataclass
class Mailbox:
    """What a local SMTP server accepted, and answers to give first."""

    port: int = 0
    messages: list[Message] = field(default_factory=list)
    recipients: list[list[str]] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)


class _Handler:
    def __init__(self, box: Mailbox) -> None:
        self.box = box

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.box.answers:
            return self.box.answers.pop(0)
        self.box.recipients.append(list(envelope.rcpt_tos))
        self.box.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    """An aiosmtpd server on loopback that records each message; LOGIN with ops/s3cret."""
    box = Mailbox(port=_free_port())

    def authenticate(
        server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        login, password = _text(data.login), _text(data.password)
        box.logins.append((login, password))
        # Not handled: aiosmtpd answers 535 itself on failure.
        return AuthResult(success=(login, password) == ("ops", "s3cret"), handled=False)

    controller = Controller(
        _Handler(box),
        hostname="127.0.0.1",
        port=box.port,
        authenticator=authenticate,
        auth_require_tls=False,
    )
    controller.start()
    yield box
    controller.stop()


def _email_section(box: Mailbox, **extra: Any) -> AlertingSection:
    receiver = {
        "smtp": f"127.0.0.1:{box.port}",
        "to": "oncall@example.org, lead@example.org",
        "from": "verger@example.org",
        **extra,
    }
    return AlertingSection.model_validate(
        {"receivers": {"email": receiver}, "route": {"group_wait": "0s"}}
    )


def test_email_is_sent_over_smtp_with_a_login(
    store: Store, mailbox: Mailbox, caplog: pytest.LogCaptureFixture
) -> None:
    """SMTP logs in and mails every address with the title as subject; no password logged."""

    async def main() -> None:
        d = dispatcher(
            store, _email_section(mailbox, username="ops", password="s3cret")
        )
        busy = alert("cpu_busy", "high")
        await step(d, [busy], T0)
        await step(d, [resolved(busy, T0 + 400)], T0 + 400)

    with caplog.at_level(logging.DEBUG):
        asyncio.run(main())
    firing, cleared = mailbox.messages
    assert mailbox.logins == [("ops", "s3cret"), ("ops", "s3cret")]
    assert mailbox.recipients[0] == ["oncall@example.org", "lead@example.org"]
    assert firing["Subject"] == "[FIRING:1] shop: cpu_busy environment=production"
    assert firing["From"] == "verger@example.org"
    assert "- firing: cpu_busy" in firing.get_payload()
    assert cleared["Subject"].startswith("[RESOLVED:1]")
    assert firing["X-Verger-Group"] == cleared["X-Verger-Group"]
    assert firing["References"] == cleared["References"]
    assert "s3cret" not in caplog.text


def test_email_temporary_refusal_is_retried_to_one_message(
    store: Store, mailbox: Mailbox
) -> None:
    """A 451 answer is retried and the message arrives exactly once."""
    mailbox.answers = ["451 try again later", "451 try again later"]

    async def main() -> None:
        d = dispatcher(store, _email_section(mailbox))
        for offset in range(0, 600, 10):
            await step(d, [alert("cpu_busy", "high")], T0 + offset)

    asyncio.run(main())
    assert len(mailbox.messages) == 1


def test_email_bad_login_is_not_retried(
    store: Store, mailbox: Mailbox, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused login is permanent: one try, a logged reason, no message."""

    async def main() -> None:
        d = dispatcher(store, _email_section(mailbox, username="ops", password="wrong"))
        await step(d, [alert("cpu_busy", "high")], T0)

    with caplog.at_level(logging.INFO):
        asyncio.run(main())
    assert mailbox.messages == [] and mailbox.logins
    assert "Could not send" in caplog.text and "after 1 try" in caplog.text
    assert "SMTP 535" in caplog.text
    assert "wrong" not in caplog.text


def test_email_requiring_starttls_refuses_a_plain_server(
    store: Store, mailbox: Mailbox, caplog: pytest.LogCaptureFixture
) -> None:
    """With starttls: true, a server that does not offer it gets nothing, and the log says why."""

    async def main() -> None:
        d = dispatcher(store, _email_section(mailbox, starttls=True))
        await step(d, [alert("cpu_busy", "high")], T0)

    with caplog.at_level(logging.INFO):
        asyncio.run(main())
    assert mailbox.messages == []
    assert "does not offer STARTTLS" in caplog.text


def test_send_resolved_false_sends_no_resolved_notice_but_closes_tickets(
    store: Store,
) -> None:
    """send_resolved: false drops a webhook's resolved notice; a ticket still closes."""

    async def main() -> None:
        async with recording_server() as rec:
            settings = AlertingSection.model_validate(
                {
                    "receivers": {
                        "email": {"webhook": rec.url("/email"), "send_resolved": False},
                        "ticket": {
                            "ticket": rec.url("/ticket"),
                            "send_resolved": False,
                        },
                    },
                    "route": {"group_wait": "0s"},
                }
            )
            d = dispatcher(store, settings)
            busy, slow = alert("cpu_busy", "high"), alert("slow_query", "medium")
            await step(d, [busy, slow], T0)
            await step(
                d, [resolved(busy, T0 + 400), resolved(slow, T0 + 400)], T0 + 400
            )
            await step(d, [busy], T0 + 800)
            assert [b["status"] for b in rec.bodies("/email")] == ["firing", "firing"]
            assert [b["action"] for b in rec.bodies("/ticket")] == ["open", "close"]

    asyncio.run(main())
