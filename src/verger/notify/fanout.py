"""One notifier that passes each event to several others."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from verger.notify.base import Event, Notifier


class FanOut(Notifier):
    """Sends every event to each of its notifiers; each applies its own filter."""

    kind = "fan-out"

    def __init__(self, notifiers: Sequence[Notifier]) -> None:
        super().__init__()
        self.notifiers = list(notifiers)

    def send(self, event: Event) -> None:
        for notifier in self.notifiers:
            notifier.send(event)

    async def deliver(self, event: Event) -> None:
        await asyncio.gather(
            *(n.deliver(event) for n in self.notifiers if n.wants(event))
        )

    @property
    def pending(self) -> int:
        return sum(notifier.pending for notifier in self.notifiers)

    async def drain(self, timeout: float) -> bool:
        done = await asyncio.gather(*(n.drain(timeout) for n in self.notifiers))
        return all(done)
