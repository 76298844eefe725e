"""What the monitor tests share: a recording sink, a clock origin, sync wrappers."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from verger.monitor import Alert, AlertState

T0 = 1_800_000_000.0


def run_async(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """A coroutine test run to completion in its own event loop."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


class RecordingSink:
    """Keeps every update the evaluator sent, in order."""

    def __init__(self) -> None:
        self.updates: list[tuple[float, list[Alert]]] = []

    async def update(self, alerts: Sequence[Alert], now: float) -> None:
        self.updates.append((now, list(alerts)))

    def states(self, name: str) -> list[tuple[float, str]]:
        """(time, state) of the named rule's alerts in every update that had one."""
        return [
            (now, str(a.state))
            for now, alerts in self.updates
            for a in alerts
            if a.name == name
        ]

    def transitions(self, name: str) -> list[str]:
        """The named rule's states with repeats folded: pending, firing, resolved."""
        out: list[str] = []
        for _, state in self.states(name):
            if not out or out[-1] != state:
                out.append(state)
        return out

    def firing(self, now: float) -> set[str]:
        for at, alerts in self.updates:
            if at == now:
                return {a.name for a in alerts if a.state == AlertState.FIRING}
        return set()
