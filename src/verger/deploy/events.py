"""The stream of what a deploy does, for the CLI to follow while it runs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

log = logging.getLogger("verger.deploy")


class Events:
    """An append-only list of a deploy's events that followers can wait on."""

    def __init__(self, deploy_id: int) -> None:
        self.deploy_id = deploy_id
        self.items: list[dict[str, Any]] = []
        self.done = False
        self._changed = asyncio.Condition()

    def emit(self, kind: str, message: str, **data: Any) -> None:
        """Add an event; ``say`` events are decisions and are logged as sentences."""
        event = {"kind": kind, "message": message, "at": time.time(), **data}
        self.items.append(event)
        if message:
            log.info("Deploy #%d: %s", self.deploy_id, message)
        asyncio.get_running_loop().create_task(self._notify())

    def finish(self, **result: Any) -> None:
        self.emit("result", "", **result)
        self.done = True

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_after(
        self, index: int, timeout: float = 15.0
    ) -> list[dict[str, Any]]:
        """Events after ``index``, waiting up to ``timeout`` for one to come."""
        if len(self.items) > index or self.done:
            return self.items[index:]
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait_for(
                        lambda: len(self.items) > index or self.done
                    ),
                    timeout,
                )
        return self.items[index:]
