"""Telling people about deploys: notifiers chosen by the config's notify: section.

``make_notifier(config.notify)`` gives one notifier that fans out to every
configured webhook; ``send`` returns at once and ``drain`` flushes at
shutdown::

    notifier = make_notifier(loaded.config.notify)
    notifier.send(DeployEvent("started", "shop", "staging", "v42", 7))
    await notifier.drain(5.0)
"""

from verger.config.model import Notify
from verger.notify.base import (
    EVENTS,
    BackupEvent,
    DeployEvent,
    Event,
    EventName,
    Notifier,
    StagingEvent,
    mask_url,
)
from verger.notify.fanout import FanOut
from verger.notify.webhook import WebhookNotifier


def make_notifier(notify: Notify) -> Notifier:
    """One notifier over every webhook in the config (none: sends nowhere)."""
    return FanOut([WebhookNotifier(hook.url, hook.events) for hook in notify.webhooks])


__all__ = [
    "EVENTS",
    "BackupEvent",
    "DeployEvent",
    "Event",
    "EventName",
    "FanOut",
    "Notifier",
    "StagingEvent",
    "WebhookNotifier",
    "make_notifier",
    "mask_url",
]
