"""Backup alerts: webhook messages for what a person must act on.

A CLI run sends and waits (bounded) for delivery before it exits; the agent
sends in the background. The same condition is not sent again while it
lasts: the caller passes what it already sent.
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from verger.backup.engines.base import Engine
from verger.backup.health import Finding
from verger.config.model import Notify
from verger.notify import BackupEvent, EventName, make_notifier

log = logging.getLogger("verger.backup")


def send(
    notify: Notify, engine: Engine, event: str, reason: str, wait: float = 20.0
) -> None:
    """Send one alert to every webhook and wait up to ``wait`` seconds for it."""
    context = engine.context
    notifier = make_notifier(notify)
    notifier.send(
        BackupEvent(cast(EventName, event), context.app, context.database, reason)
    )
    log.warning("Backup alert (%s): %s", event, reason)
    if wait > 0:
        asyncio.run(notifier.drain(wait))


def firing(findings: list[Finding]) -> dict[str, str]:
    """The alerts the findings raise: event name to the first reason for it."""
    alerts: dict[str, str] = {}
    for finding in findings:
        if finding.level == "fail" and finding.event:
            alerts.setdefault(finding.event, finding.message)
    return alerts
