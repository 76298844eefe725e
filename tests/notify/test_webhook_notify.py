"""Webhook notifications: Slack-shaped JSON, sent in the background, retried, masked."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from verger.config.model import Notify
from verger.notify import DeployEvent, WebhookNotifier, make_notifier, mask_url

FAST = (0.01, 0.02, 0.04)


@dataclass
class Receiver:
    """A local HTTP server that records each POST and answers as told."""

    server: ThreadingHTTPServer
    statuses: list[int] = field(default_factory=list)
    delay: float = 0.0
    received: list[dict[str, Any]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def wait_for(self, count: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.01)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A recording webhook receiver on a free loopback port, stopped afterwards."""
    state: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            recording = state["receiver"]
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length))
            recording.times.append(time.monotonic())
            recording.paths.append(self.path)
            recording.received.append(
                {"body": body, "content_type": self.headers.get("Content-Type")}
            )
            time.sleep(recording.delay)
            status = recording.statuses.pop(0) if recording.statuses else 200
            try:
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the sender gave up waiting, as the drain test means it to

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state["receiver"] = Receiver(server)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state["receiver"]
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def event(kind: str = "started", reason: str = "") -> DeployEvent:
    return DeployEvent(kind, "shop", "production", "v42", 7, reason)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_body_is_slack_text_plus_structured_fields(receiver: Receiver) -> None:
    """The POSTed JSON has Slack's text and verger's own fields."""

    async def main() -> None:
        notifier = WebhookNotifier(receiver.url())
        notifier.send(event("failed", "health check timed out after 60s"))
        assert await notifier.drain(5.0)

    asyncio.run(main())
    [delivery] = receiver.received
    body = delivery["body"]
    assert delivery["content_type"] == "application/json"
    assert body["text"] == (
        "Deploy #7 of shop v42 to production failed: health check timed out after 60s"
    )
    assert {k: body[k] for k in ("event", "app", "environment", "version")} == {
        "event": "failed",
        "app": "shop",
        "environment": "production",
        "version": "v42",
    }
    assert body["deploy_id"] == 7
    assert body["reason"] == "health check timed out after 60s"
    assert body["at"].endswith("+00:00")


def test_retries_with_backoff_then_succeeds(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """Two 500 answers are retried after 0.5 s then 1 s, and the third try lands."""
    receiver.statuses = [500, 500]
    caplog.set_level(logging.INFO, logger="verger.notify")

    async def main() -> None:
        notifier = WebhookNotifier(receiver.url())
        notifier.send(event())
        assert await notifier.drain(10.0)

    asyncio.run(main())
    assert len(receiver.received) == 3
    first_wait = receiver.times[1] - receiver.times[0]
    second_wait = receiver.times[2] - receiver.times[1]
    assert 0.45 <= first_wait < 0.9
    assert 0.95 <= second_wait < 1.6
    assert "Sent the started event to webhook" in caplog.text
    assert "Gave up" not in caplog.text


def test_gives_up_quietly_when_receiver_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With nothing listening, delivery gives up after its tries with one warning."""
    caplog.set_level(logging.DEBUG)
    url = f"http://127.0.0.1:{free_port()}/hook"

    async def main() -> None:
        notifier = WebhookNotifier(url, delays=FAST)
        notifier.send(event("rolled_back", "error rate 7.9% > 1%"))
        assert await notifier.drain(5.0)

    asyncio.run(main())
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert message.startswith("Gave up sending the rolled_back event of deploy #7")
    assert "after 4 tries" in message
    assert warnings[0].exc_info is None


def test_deadline_stops_retries() -> None:
    """No retry is waited for when it would end past the deadline."""

    async def main() -> float:
        notifier = WebhookNotifier(f"http://127.0.0.1:{free_port()}/", deadline=0.2)
        started = time.monotonic()
        notifier.send(event())
        assert await notifier.drain(5.0)
        return time.monotonic() - started

    assert asyncio.run(main()) < 0.4


def test_client_errors_are_not_retried(receiver: Receiver) -> None:
    """A 404 means a wrong URL: one try, no retries."""
    receiver.statuses = [404]

    async def main() -> None:
        notifier = WebhookNotifier(receiver.url(), delays=FAST)
        notifier.send(event())
        assert await notifier.drain(5.0)

    asyncio.run(main())
    assert len(receiver.received) == 1


def test_send_never_blocks_the_caller(receiver: Receiver) -> None:
    """send returns in well under 50 ms while the receiver takes a second to answer."""
    receiver.delay = 1.0

    async def main() -> tuple[float, bool]:
        notifier = WebhookNotifier(receiver.url())
        started = time.perf_counter()
        for kind in ("started", "succeeded"):
            notifier.send(event(kind))
        spent = time.perf_counter() - started
        assert notifier.pending == 2
        return spent, await notifier.drain(5.0)

    spent, drained = asyncio.run(main())
    assert spent < 0.05
    assert drained
    assert len(receiver.received) == 2


def test_drain_timeout_drops_late_deliveries(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """drain gives up on deliveries still running at its timeout and says so."""
    receiver.delay = 2.0

    async def main() -> bool:
        notifier = WebhookNotifier(receiver.url())
        notifier.send(event())
        return await notifier.drain(0.2)

    started = time.monotonic()
    assert asyncio.run(main()) is False
    assert time.monotonic() - started < 1.0
    assert "still running after 0.2s" in caplog.text


def test_events_filter(receiver: Receiver) -> None:
    """Each webhook gets only the events it lists; no list means all four."""
    notify = Notify.model_validate(
        {
            "webhooks": [
                {"url": receiver.url("/bad-news"), "events": ["failed", "rolled_back"]},
                receiver.url("/everything"),
            ]
        }
    )

    async def main() -> None:
        notifier = make_notifier(notify)
        for kind in ("started", "succeeded", "failed", "rolled_back"):
            notifier.send(event(kind))
        assert await notifier.drain(5.0)

    asyncio.run(main())
    events = [r["body"]["event"] for r in receiver.received]
    got = sorted(zip(receiver.paths, events, strict=True))
    assert [e for p, e in got if p == "/bad-news"] == ["failed", "rolled_back"]
    assert len([p for p, _ in got if p == "/everything"]) == 4


def test_url_token_masked_in_logs(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """No log line at any level shows the URL's path, where tokens live."""
    caplog.set_level(logging.DEBUG)
    receiver.statuses = [500, 500, 500, 500]
    url = receiver.url("/services/T000/B000/SECRETTOKEN")

    async def main() -> None:
        notifier = WebhookNotifier(url, delays=FAST)
        notifier.send(event("started"))  # four tries, all answered 500
        assert await notifier.drain(5.0)
        notifier.send(event("failed"))  # answered 200
        assert await notifier.drain(5.0)

    asyncio.run(main())
    assert len(receiver.received) == 5
    assert "Gave up" in caplog.text
    lines = [record.getMessage() for record in caplog.records]
    assert any("HTTP Request: POST" in line for line in lines)
    assert all("SECRETTOKEN" not in line for line in lines)
    masked = f"http://127.0.0.1:{receiver.server.server_port}/***"
    assert any(masked in line for line in lines)


def test_send_without_a_running_loop(receiver: Receiver) -> None:
    """Called from plain synchronous code, send still delivers in the background."""
    notifier = WebhookNotifier(receiver.url())
    started = time.perf_counter()
    notifier.send(event())
    assert time.perf_counter() - started < 0.05
    assert asyncio.run(notifier.drain(5.0))
    assert len(receiver.received) == 1


def test_no_webhooks_sends_nowhere() -> None:
    """A config without webhooks gives a notifier that accepts events and drops them."""

    async def main() -> bool:
        notifier = make_notifier(Notify())
        notifier.send(event())
        return await notifier.drain(1.0)

    assert asyncio.run(main())


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.slack.com/services/T0/B0/XYZ", "https://hooks.slack.com/***"),
        ("http://user:pw@127.0.0.1:9000/h?token=abc", "http://127.0.0.1:9000/***"),
        ("https://example.com/", "https://example.com/"),
        ("http://[::1]:8080/x", "http://[::1]:8080/***"),
    ],
)
def test_mask_url(url: str, shown: str) -> None:
    """Masking keeps scheme, host and port and hides path, query and credentials."""
    assert mask_url(url) == shown
