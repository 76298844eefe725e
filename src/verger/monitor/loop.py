"""The agent's monitor loop: collect the sources that are due, store, evaluate the rules.

Every ``interval`` the loop collects each source whose own ``every`` has
passed (all at once, each bounded by a timeout), writes the readings
stamped with the tick's time, evaluates every rule and hands the alerts to
the sink. A source or a rule that fails is logged and skipped: monitoring
never stops supervision, nor the routers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence

from verger.monitor.rules import RuleEngine
from verger.monitor.sources.base import Reading, Source
from verger.monitor.store import BLOCK, MetricStore

log = logging.getLogger("verger.monitor")


class MonitorLoop:
    """Sources, the store and the rule engine, ticking together."""

    def __init__(
        self,
        sources: Sequence[Source],
        store: MetricStore,
        engine: RuleEngine,
        interval: float,
    ) -> None:
        self.sources = list(sources)
        self.store = store
        self.engine = engine
        self.interval = interval
        # The newest reading of every series, for the /metrics endpoint.
        self.latest: dict[tuple[str, str], Reading] = {}
        self._due: dict[int, float] = {}
        self._failing: dict[str, str] = {}
        self._compacted = 0.0

    async def tick(self, now: float) -> int:
        """One collection and evaluation at ``now``; how many samples were written."""
        due = [s for s in self.sources if now >= self._due.get(id(s), 0.0)]
        for source in due:
            self._due[id(source)] = now + source.every - self.interval / 2
        results = await asyncio.gather(*(self._collect(s, now) for s in due))
        for readings in results:
            for r in readings:
                self.latest[(r.name, repr(sorted(r.labels.items())))] = r
        samples = [
            (r.name, r.labels, now, float(r.value))
            for readings in results
            for r in readings
        ]
        written = self._write(samples)
        if now - self._compacted >= BLOCK / 4:
            self._compact(now)
        try:
            await self.engine.evaluate(now)
        except Exception as exc:  # the next tick evaluates again
            log.exception("rule evaluation failed: %s", exc)
        return written

    async def _collect(self, source: Source, now: float) -> list[Reading]:
        timeout = max(1.0, min(source.every, self.interval * 3))
        try:
            readings = await asyncio.wait_for(source.collect(now), timeout)
        except Exception as exc:  # one source must not stop the others
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if self._failing.get(source.name) != reason:
                log.warning("source %s failed: %s; it is skipped", source.name, reason)
            self._failing[source.name] = reason
            return []
        if self._failing.pop(source.name, None) is not None:
            log.info("source %s works again", source.name)
        return readings

    def _write(self, samples: list[tuple[str, Mapping[str, str], float, float]]) -> int:
        try:
            return self.store.write(samples)
        except Exception as exc:  # a full disk must not stop the agent
            log.warning("metrics could not be stored: %s", exc)
            return 0

    def _compact(self, now: float) -> None:
        try:
            packed = self.store.compact(now)
        except Exception as exc:
            log.warning("the metric store could not be compacted: %s", exc)
            return
        self._compacted = now
        if packed:
            log.info("packed %d samples into compressed blocks", packed)

    async def run(self, stopping: asyncio.Event) -> None:
        """Tick every ``interval`` until ``stopping`` is set, then close the sources."""
        log.info(
            "monitoring %d sources every %gs with %d rules",
            len(self.sources),
            self.interval,
            len(self.engine.rules),
        )
        try:
            while not stopping.is_set():
                started = time.monotonic()
                await self.tick(time.time())
                wait = max(0.0, self.interval - (time.monotonic() - started))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), wait)
        finally:
            for source in self.sources:
                try:
                    await source.close()
                except Exception as exc:
                    log.debug("source %s did not close cleanly: %s", source.name, exc)
