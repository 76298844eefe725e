"""Receivers, one module per kind, chosen by the key each receiver's config has."""

from __future__ import annotations

from collections.abc import Mapping

from verger.config.alerting import Receiver as ReceiverConfig
from verger.monitor.alerting.receivers.base import (
    AlertReceiver,
    DeliveryFailed,
    HttpReceiver,
)
from verger.monitor.alerting.receivers.email import EmailReceiver
from verger.monitor.alerting.receivers.pagerduty import PagerDutyReceiver
from verger.monitor.alerting.receivers.ticket import TicketReceiver
from verger.monitor.alerting.receivers.webhook import WebhookReceiver

KINDS: dict[str, type[AlertReceiver]] = {
    "webhook": WebhookReceiver,
    "ticket": TicketReceiver,
    "pagerduty": PagerDutyReceiver,
    "smtp": EmailReceiver,
}


def make_receivers(configs: Mapping[str, ReceiverConfig]) -> dict[str, AlertReceiver]:
    """One receiver per configured name."""
    return {name: KINDS[config.kind](name, config) for name, config in configs.items()}


__all__ = [
    "KINDS",
    "AlertReceiver",
    "DeliveryFailed",
    "EmailReceiver",
    "HttpReceiver",
    "PagerDutyReceiver",
    "TicketReceiver",
    "WebhookReceiver",
    "make_receivers",
]
