"""What every notifier offers: ``send`` an event now, deliver it in the background.

A deploy must never wait on a chat server, so ``send`` only schedules the
delivery (a task in the running event loop) and returns. The agent calls
``drain`` at shutdown to give deliveries in flight a bounded time to finish.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger("verger.notify")

EventName = Literal[
    "started",
    "succeeded",
    "failed",
    "rolled_back",
    "backup_failed",
    "backup_stale",
    "verify_failed",
    "archiving_failed",
    "drill_missed",
    "refresh_succeeded",
    "refresh_failed",
]
EVENTS: tuple[EventName, ...] = (
    "started",
    "succeeded",
    "failed",
    "rolled_back",
    "backup_failed",
    "backup_stale",
    "verify_failed",
    "archiving_failed",
    "drill_missed",
    "refresh_succeeded",
    "refresh_failed",
)


@dataclass(frozen=True)
class DeployEvent:
    """One moment in a deploy worth telling people about."""

    event: EventName
    app: str
    environment: str
    version: str
    deploy_id: int | str
    reason: str = ""
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "app": self.app,
            "environment": self.environment,
            "version": self.version,
            "reason": self.reason,
            "deploy_id": self.deploy_id,
            "at": self.at.isoformat(),
        }

    @property
    def ref(self) -> str:
        return f"deploy #{self.deploy_id}"

    def sentence(self) -> str:
        """The event as one line for a person, as chat messages show it."""
        where = f"{self.app} {self.version} to {self.environment}"
        text = {
            "started": f"Deploy #{self.deploy_id} of {where} started",
            "succeeded": f"Deploy #{self.deploy_id} of {where} succeeded",
            "failed": f"Deploy #{self.deploy_id} of {where} failed",
            "rolled_back": f"Deploy #{self.deploy_id} of {where} was rolled back",
        }[self.event]
        return f"{text}: {self.reason}" if self.reason else text


@dataclass(frozen=True)
class BackupEvent:
    """Something about a database's backups that a person must look at."""

    event: EventName
    app: str
    database: str
    reason: str
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def ref(self) -> str:
        return f"{self.database} backups"

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "app": self.app,
            "database": self.database,
            "reason": self.reason,
            "at": self.at.isoformat(),
        }

    def sentence(self) -> str:
        title = {
            "backup_failed": "A backup failed",
            "backup_stale": "No recent verified backup",
            "verify_failed": "A backup did not pass its restore test",
            "archiving_failed": "WAL archiving is failing",
            "drill_missed": "A recovery drill missed its target",
        }.get(self.event, self.event)
        return f"{title} for {self.app} {self.database}: {self.reason}"


@dataclass(frozen=True)
class StagingEvent:
    """How a refresh of the staging database from production ended."""

    event: EventName
    app: str
    database: str
    refresh_id: int
    reason: str
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def ref(self) -> str:
        return f"staging refresh #{self.refresh_id}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "app": self.app,
            "database": self.database,
            "refresh_id": self.refresh_id,
            "reason": self.reason,
            "at": self.at.isoformat(),
        }

    def sentence(self) -> str:
        word = "succeeded" if self.event == "refresh_succeeded" else "failed"
        return (
            f"Staging refresh #{self.refresh_id} of {self.app} {self.database} "
            f"{word}: {self.reason}"
        )


Event = DeployEvent | BackupEvent | StagingEvent


class Notifier(ABC):
    """Delivers deploy events somewhere, without ever holding up the caller."""

    kind: str = "notifier"

    def __init__(self, events: Collection[EventName] | None = None) -> None:
        self.events = frozenset(events) if events is not None else frozenset(EVENTS)
        # Strong references: the loop keeps only weak ones to its tasks.
        self._tasks: set[asyncio.Task[None]] = set()
        self._threads: set[threading.Thread] = set()

    def wants(self, event: Event) -> bool:
        return event.event in self.events

    def send(self, event: Event) -> None:
        """Schedule delivery of ``event`` and return at once; never raises."""
        if not self.wants(event):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._send_in_thread(event)
            return
        task = loop.create_task(self._guarded(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _send_in_thread(self, event: Event) -> None:
        # Called from plain synchronous code: deliver on a loop of its own.
        thread = threading.Thread(
            target=asyncio.run,
            args=(self._guarded(event),),
            name=f"verger-notify-{self.kind}",
            daemon=True,
        )
        self._threads.add(thread)
        thread.start()

    async def _guarded(self, event: Event) -> None:
        try:
            await self.deliver(event)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s could not deliver the %s event", self.kind, event.event)

    @abstractmethod
    async def deliver(self, event: Event) -> None:
        """Deliver one event, retrying as the backend sees fit; may be cancelled."""

    @property
    def pending(self) -> int:
        """Deliveries scheduled and not finished."""
        alive = {thread for thread in self._threads if thread.is_alive()}
        self._threads = alive
        return len(self._tasks) + len(alive)

    async def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for deliveries; cancel the rest.

        Returns True when everything was delivered or given up on in time.
        """
        deadline = time.monotonic() + timeout
        tasks = set(self._tasks)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=timeout)
            for task in late:
                task.cancel()
            if late:
                log.warning(
                    "%d %s deliveries still running after %.1fs; dropped them",
                    len(late),
                    self.kind,
                    timeout,
                )
        for thread in list(self._threads):
            left = max(0.0, deadline - time.monotonic())
            await asyncio.to_thread(thread.join, left)
        return self.pending == 0


def mask_url(url: str) -> str:
    """``url`` with its path, query and credentials hidden: tokens live there."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    hidden = parts.path not in ("", "/") or parts.query or parts.username
    path = "/***" if hidden else parts.path
    return urlunsplit((parts.scheme, f"{host}{port}", path, "", ""))
