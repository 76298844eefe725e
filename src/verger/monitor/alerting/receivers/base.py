"""What every receiver offers: one attempt at delivering one notification.

The dispatcher retries; a receiver only says, by raising ``DeliveryFailed``,
why an attempt failed and whether another could succeed. Secrets (routing
keys, passwords, the paths of webhook URLs) never appear in its messages.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import httpx

from verger.config.alerting import Receiver as ReceiverConfig
from verger.monitor.alerting.notification import Notification
from verger.notify import mask_url
from verger.notify.webhook import hide_in_http_logs

_RETRY_STATUS = frozenset({408, 429})


class DeliveryFailed(Exception):
    """One attempt failed: ``reason`` for the log, ``retry`` if another may succeed."""

    def __init__(self, reason: str, *, retry: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry


class AlertReceiver(ABC):
    """A named destination for notifications, of one kind."""

    kind: str = "receiver"
    reminds: bool = True
    """Whether a repeat of unchanged news is worth sending (a ticket: no)."""

    def __init__(self, name: str, config: ReceiverConfig) -> None:
        self.name = name
        self.config = config
        self.send_resolved = config.send_resolved
        self.timeout = config.timeout

    @abstractmethod
    async def send(self, notification: Notification) -> None:
        """Deliver once; raise ``DeliveryFailed`` when it did not arrive."""

    def describe(self) -> str:
        """The receiver for a log line, with no secret in it."""
        return f"{self.kind} receiver {self.name}"

    def wants(self, notification: Notification) -> bool:
        """Whether this receiver is sent ``notification`` at all."""
        if notification.reason == "resolved":
            return self.send_resolved
        return self.reminds or notification.reason != "repeat"


class HttpReceiver(AlertReceiver):
    """A receiver that POSTs JSON to one URL."""

    def __init__(self, name: str, config: ReceiverConfig, url: str) -> None:
        super().__init__(name, config)
        self.url = url
        self.shown = mask_url(url)
        hide_in_http_logs(url)

    def describe(self) -> str:
        return f"{self.kind} receiver {self.name} ({self.shown})"

    async def post(self, body: dict[str, Any]) -> httpx.Response:
        """POST ``body``; a failure that a later try could fix is marked retryable."""
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.post(self.url, json=body)
        except httpx.HTTPError as exc:
            reason = str(exc).replace(self.url, self.shown) or type(exc).__name__
            raise DeliveryFailed(reason, retry=True) from exc
        if response.is_success:
            return response
        status = response.status_code
        raise DeliveryFailed(
            f"HTTP {status} {response.reason_phrase}".strip(),
            retry=status >= 500 or status in _RETRY_STATUS,
        )
