"""A generic ticket webhook: one ticket per group, opened once and closed on resolve.

Each POST carries ``action`` (``open``, ``update`` or ``close``) and ``key``,
the group's identity, so the ticket system finds the ticket to change.
Repeats of unchanged news are not sent: a ticket does not need reminding.
"""

from __future__ import annotations

from verger.config.alerting import Receiver as ReceiverConfig
from verger.monitor.alerting.notification import Notification
from verger.monitor.alerting.receivers.base import HttpReceiver


class TicketReceiver(HttpReceiver):
    """Opens, updates and closes one ticket per group."""

    kind = "ticket"
    reminds = False

    def __init__(self, name: str, config: ReceiverConfig) -> None:
        assert config.ticket is not None
        super().__init__(name, config, config.ticket)

    async def send(self, notification: Notification) -> None:
        if not notification.firing:
            action = "close"
        elif notification.first:
            action = "open"
        else:
            action = "update"
        body = {
            "action": action,
            "key": notification.dedup_key,
            "title": notification.title,
            "description": notification.text(),
            "severity": notification.severity,
            **notification.to_dict(),
        }
        await self.post(body)

    def wants(self, notification: Notification) -> bool:
        if notification.reason == "resolved":
            # A ticket that was opened is closed, whatever send_resolved says.
            return True
        return super().wants(notification)
