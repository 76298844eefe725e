"""Heartbeats: cron jobs report in with ``verger monitor heartbeat NAME``; silence is late."""

from __future__ import annotations

from collections.abc import Mapping

from verger.config.sources import Heartbeat
from verger.monitor.sources.base import Reading, Source
from verger.state import Store


class HeartbeatSource(Source):
    """``verger_heartbeat_late`` is 1 once a job is silent for longer than every + grace.

    A heartbeat that never reported in counts from when monitoring started,
    so a job that never runs is late after one period rather than never.
    """

    kind = "heartbeat"

    def __init__(
        self, state: Store, heartbeats: Mapping[str, Heartbeat], every: float
    ) -> None:
        super().__init__("heartbeats", every)
        self.state = state
        self.heartbeats = dict(heartbeats)
        self.started: float | None = None

    async def collect(self, now: float) -> list[Reading]:
        if self.started is None:
            self.started = now
        seen = self.state.heartbeats()
        readings = []
        for name, beat in self.heartbeats.items():
            labels = {"heartbeat": name}
            last = seen.get(name)
            age = now - (last if last is not None else self.started)
            if last is not None:
                readings.append(Reading("verger_heartbeat_age_seconds", labels, age))
            late = age > beat.every + beat.grace
            readings.append(Reading("verger_heartbeat_late", labels, float(late)))
        return readings
