"""Delivering one notification: tries with backoff until it arrives or time runs out."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from verger.monitor.alerting.notification import Notification
from verger.monitor.alerting.receivers import AlertReceiver, DeliveryFailed

log = logging.getLogger("verger.monitor.alerting")

DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0)
DEADLINE = 60.0


async def deliver(
    receiver: AlertReceiver,
    notification: Notification,
    delays: Sequence[float] = DELAYS,
    deadline: float = DEADLINE,
) -> bool:
    """Send ``notification``, retrying what may succeed later; True once it arrived.

    A try that fails with a permanent answer (a 4xx, a refused login) is not
    repeated. Each outcome is logged as one sentence without secrets.
    """
    started = time.monotonic()
    tries = 0
    reason = ""
    for delay in (*delays, None):
        tries += 1
        try:
            await receiver.send(notification)
        except DeliveryFailed as exc:
            reason = exc.reason
            spent = time.monotonic() - started
            if not exc.retry or delay is None or spent + delay > deadline:
                break
            log.debug("%s: %s; retrying in %gs", receiver.describe(), reason, delay)
            await asyncio.sleep(delay)
            continue
        log.info(
            "Sent %s to %s (%s%s)",
            notification.title,
            receiver.describe(),
            notification.reason,
            f", after {tries} tries" if tries > 1 else "",
        )
        return True
    log.warning(
        "Could not send %s to %s after %d %s in %.1fs: %s; the next group interval "
        "tries again",
        notification.title,
        receiver.describe(),
        tries,
        "try" if tries == 1 else "tries",
        time.monotonic() - started,
        reason,
    )
    return False
