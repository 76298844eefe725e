"""What every source offers the monitor loop: a name, how often, and one collection.

A source returns readings (metric name, labels, value); the loop stamps them
with the collection's time and writes them to the store. A source that
cannot reach what it measures reports ``up{job, instance} 0`` rather than
nothing, so that a failed scrape is a target down, never zero traffic.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class Reading:
    """One value a source measured."""

    name: str
    labels: Mapping[str, str]
    value: float


def up(job: str, instance: str, ok: bool, **labels: str) -> Reading:
    """The ``up`` reading for one target: 1 when it answered, 0 when it did not."""
    return Reading("up", {"job": job, "instance": instance, **labels}, float(ok))


class Source(ABC):
    """One thing the monitor loop measures on an interval."""

    kind: ClassVar[str]

    def __init__(self, name: str, every: float) -> None:
        self.name = name
        self.every = every

    @abstractmethod
    async def collect(self, now: float) -> list[Reading]:
        """Measure once; raise only for a fault in verger itself."""

    async def close(self) -> None:
        """Release connections; the loop calls it once when the agent stops."""
        return None
