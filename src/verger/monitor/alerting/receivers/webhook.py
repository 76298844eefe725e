"""A JSON webhook: Slack shows ``text``; other tools read the structured fields."""

from __future__ import annotations

from verger.config.alerting import Receiver as ReceiverConfig
from verger.monitor.alerting.notification import Notification
from verger.monitor.alerting.receivers.base import HttpReceiver


class WebhookReceiver(HttpReceiver):
    """POSTs every notification of its groups, firing, repeated and resolved."""

    kind = "webhook"

    def __init__(self, name: str, config: ReceiverConfig) -> None:
        assert config.webhook is not None
        super().__init__(name, config, config.webhook)

    async def send(self, notification: Notification) -> None:
        await self.post({"text": notification.text(), **notification.to_dict()})
