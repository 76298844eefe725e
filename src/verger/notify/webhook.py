"""JSON webhooks: a body Slack shows as a message, with verger's fields beside it.

Each delivery is POSTed in the background and retried with exponential
backoff on network errors, 408, 429 and 5xx answers, until it succeeds, the
tries run out or the deadline passes; then one sentence is logged. The URL's
path is never logged, since chat services put their token there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection, Sequence
from typing import Any

import httpx

from verger.notify.base import Event, EventName, Notifier, log, mask_url

DELAYS = (0.5, 1.0, 2.0, 4.0)
DEADLINE = 30.0
TIMEOUT = 5.0
_RETRY_STATUS = frozenset({408, 429})


class WebhookNotifier(Notifier):
    """POSTs each wanted deploy event as JSON to one URL."""

    kind = "webhook"

    def __init__(
        self,
        url: str,
        events: Collection[EventName] | None = None,
        *,
        delays: Sequence[float] = DELAYS,
        deadline: float = DEADLINE,
        timeout: float = TIMEOUT,
    ) -> None:
        super().__init__(events)
        self.url = url
        self.shown = mask_url(url)
        self.delays = tuple(delays)
        self.deadline = deadline
        self.timeout = timeout
        hide_in_http_logs(url)

    def body(self, event: Event) -> dict[str, Any]:
        """Slack reads ``text``; other receivers read the structured fields."""
        return {"text": event.sentence(), **event.to_dict()}

    async def deliver(self, event: Event) -> None:
        body = self.body(event)
        started = time.monotonic()
        tries = 0
        reason = ""
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            for delay in (*self.delays, None):
                tries += 1
                reason, retry = await self._post(client, body)
                if not reason:
                    log.info("Sent the %s event to webhook %s", event.event, self.shown)
                    return
                spent = time.monotonic() - started
                if not retry or delay is None or spent + delay > self.deadline:
                    break
                log.debug("Webhook %s: %s; retrying in %gs", self.shown, reason, delay)
                await asyncio.sleep(delay)
        log.warning(
            "Gave up sending the %s event of %s to webhook %s after %d %s in %.1fs: %s",
            event.event,
            event.ref,
            self.shown,
            tries,
            "try" if tries == 1 else "tries",
            time.monotonic() - started,
            reason,
        )

    async def _post(
        self, client: httpx.AsyncClient, body: dict[str, Any]
    ) -> tuple[str, bool]:
        """One POST: an empty reason on success, else why and whether to retry."""
        try:
            response = await client.post(self.url, json=body)
        except httpx.HTTPError as exc:
            return self._scrub(str(exc)) or type(exc).__name__, True
        if response.is_success:
            return "", True
        status = response.status_code
        retry = status >= 500 or status in _RETRY_STATUS
        return f"HTTP {status} {response.reason_phrase}".strip(), retry

    def _scrub(self, text: str) -> str:
        return text.replace(self.url, self.shown)


class _MaskUrls(logging.Filter):
    """Replaces webhook URLs in httpx's own request log lines with masked ones."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and self.secrets:
            record.args = tuple(self._mask(arg) for arg in record.args)
        return True

    def _mask(self, arg: object) -> object:
        if isinstance(arg, httpx.URL | str) and str(arg) in self.secrets:
            return mask_url(str(arg))
        return arg


_FILTER = _MaskUrls()
logging.getLogger("httpx").addFilter(_FILTER)


def hide_in_http_logs(url: str) -> None:
    """Keep ``url`` (a secret: tokens live in it) out of httpx's request logs."""
    _FILTER.secrets.add(url)
    with contextlib.suppress(httpx.InvalidURL):
        _FILTER.secrets.add(str(httpx.URL(url)))
