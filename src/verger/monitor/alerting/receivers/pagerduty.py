"""PagerDuty Events v2: trigger on firing, resolve when the group clears.

The group's ``dedup_key`` makes PagerDuty keep one incident per group, so
a repeated trigger updates it rather than paging again. The routing key is
a secret: it is sent in the body and never logged.
"""

from __future__ import annotations

import socket
from typing import Any

from verger.config.alerting import Receiver as ReceiverConfig
from verger.monitor.alerting.notification import Notification, stamp
from verger.monitor.alerting.receivers.base import HttpReceiver

# PagerDuty's severities, from verger's tiers.
SEVERITY = {"critical": "critical", "high": "error", "medium": "warning"}
SUMMARY_LIMIT = 1024


class PagerDutyReceiver(HttpReceiver):
    """Triggers and resolves one PagerDuty alert per group."""

    kind = "pagerduty"

    def __init__(self, name: str, config: ReceiverConfig) -> None:
        assert config.pagerduty is not None
        super().__init__(name, config, config.pagerduty.url)
        self.routing_key = config.pagerduty.routing_key

    async def send(self, notification: Notification) -> None:
        await self.post(self.body(notification))

    def body(self, notification: Notification) -> dict[str, Any]:
        if not notification.firing:
            return {
                "routing_key": self.routing_key,
                "event_action": "resolve",
                "dedup_key": notification.dedup_key,
            }
        labels = notification.common_labels
        return {
            "routing_key": self.routing_key,
            "event_action": "trigger",
            "dedup_key": notification.dedup_key,
            "client": "verger",
            "payload": {
                "summary": notification.title[:SUMMARY_LIMIT],
                "source": labels.get("instance")
                or notification.app
                or socket.gethostname(),
                "severity": SEVERITY.get(notification.severity, "warning"),
                "timestamp": stamp(notification.at),
                "component": labels.get("environment", ""),
                "group": labels.get("alertname", ""),
                "class": notification.severity,
                "custom_details": {
                    "alerts": notification.lines(),
                    "firing": len(notification.firing),
                    "incident": notification.incident_id,
                    "group_labels": dict(notification.group_labels),
                },
            },
        }
