"""Each receiver's wire format against a local recording server: Slack, PagerDuty, ticket, SMTP."""

from __future__ import annotations

import asyncio
import datetime
import email
import ipaddress
import logging
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
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
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

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


@dataclass
class Certificates:
    """A throwaway private CA and a server certificate it signed for 127.0.0.1."""

    ca_file: Path
    server: ssl.SSLContext


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("verger test CA"))
        .issuer_name(_name("verger test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    loopback = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
    server = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([loopback]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, chain = tmp_path / "ca.pem", tmp_path / "server.pem"
    ca_file.write_bytes(_pem(ca))
    chain.write_bytes(
        _pem(server)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(chain)
    return Certificates(ca_file, context)


def _tls_mailbox(certificates: Certificates, *, implicit: bool) -> Iterator[Mailbox]:
    """An aiosmtpd server speaking TLS from the first byte, or requiring STARTTLS."""
    box = Mailbox(port=_free_port())
    tls: dict[str, Any] = (
        {"ssl_context": certificates.server}
        if implicit
        else {"tls_context": certificates.server, "require_starttls": True}
    )
    controller = Controller(_Handler(box), hostname="127.0.0.1", port=box.port, **tls)
    controller.start()
    yield box
    controller.stop()


@pytest.fixture
def smtps_mailbox(certificates: Certificates) -> Iterator[Mailbox]:
    yield from _tls_mailbox(certificates, implicit=True)


@pytest.fixture
def starttls_mailbox(certificates: Certificates) -> Iterator[Mailbox]:
    yield from _tls_mailbox(certificates, implicit=False)


def _send_one(store: Store, settings: AlertingSection) -> None:
    async def main() -> None:
        await step(dispatcher(store, settings), [alert("cpu_busy", "high")], T0)

    asyncio.run(main())


def test_email_over_implicit_tls_trusts_the_ca_in_ca_file(
    store: Store, smtps_mailbox: Mailbox, certificates: Certificates
) -> None:
    """tls: true speaks TLS from the first byte and trusts a private CA from ca_file."""
    settings = _email_section(
        smtps_mailbox, tls=True, ca_file=str(certificates.ca_file)
    )
    _send_one(store, settings)
    [message] = smtps_mailbox.messages
    assert message["Subject"].startswith("[FIRING:1] shop: cpu_busy")


def test_email_over_implicit_tls_refuses_an_untrusted_certificate_once(
    store: Store,
    smtps_mailbox: Mailbox,
    certificates: Certificates,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without ca_file the private CA is not trusted: one try, nothing sent, a hint."""
    with caplog.at_level(logging.INFO):
        _send_one(store, _email_section(smtps_mailbox, tls=True))
    assert smtps_mailbox.messages == []
    assert "is not trusted" in caplog.text and "set ca_file" in caplog.text
    assert "after 1 try" in caplog.text


def test_email_starttls_checks_the_certificate_against_ca_file(
    store: Store, starttls_mailbox: Mailbox, certificates: Certificates
) -> None:
    """STARTTLS upgrades with the same ca_file, so a server that requires it gets mail."""
    settings = _email_section(
        starttls_mailbox, starttls=True, ca_file=str(certificates.ca_file)
    )
    _send_one(store, settings)
    assert len(starttls_mailbox.messages) == 1


def test_email_with_a_missing_ca_file_is_not_retried(
    store: Store, mailbox: Mailbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A ca_file that cannot be read fails once with its path, before connecting."""
    missing = tmp_path / "nowhere.pem"
    with caplog.at_level(logging.INFO):
        _send_one(store, _email_section(mailbox, ca_file=str(missing)))
    assert mailbox.messages == []
    assert f"cannot read ca_file {missing}" in caplog.text
    assert "after 1 try" in caplog.text


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
