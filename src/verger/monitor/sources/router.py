"""The router's own request counters per environment: classes, errors, latency buckets."""

from __future__ import annotations

from collections.abc import Mapping

from verger.deploy.routers import Router
from verger.deploy.routers.stats import BOUNDS, CLASSES
from verger.monitor.sources.base import Reading, Source, up


class RouterSource(Source):
    """Reads ``stats()`` of every environment's router."""

    kind = "router"

    def __init__(self, routers: Mapping[str, Router], every: float) -> None:
        super().__init__("router", every)
        self.routers = routers

    async def collect(self, now: float) -> list[Reading]:
        readings: list[Reading] = []
        for environment, router in self.routers.items():
            readings.extend(await self._one(environment, router))
        return readings

    async def _one(self, environment: str, router: Router) -> list[Reading]:
        try:
            stats = await router.stats()
        except Exception:  # a router that does not answer is down, not idle
            return [up("router", router.listen, False, environment=environment)]
        env = {"environment": environment}
        readings = [up("router", router.listen, True, environment=environment)]
        readings += [
            Reading(
                "verger_requests_total", {**env, "class": name}, stats.classes[name]
            )
            for name in CLASSES
        ]
        readings.append(Reading("verger_router_errors_total", env, stats.router_errors))
        running = 0
        bounds = [*(f"{b:g}" for b in BOUNDS), "+Inf"]
        for bound, count in zip(bounds, stats.buckets, strict=True):
            running += count
            labels = {**env, "le": bound}
            readings.append(
                Reading("verger_request_duration_seconds_bucket", labels, running)
            )
        readings.append(
            Reading("verger_request_duration_seconds_count", env, stats.requests)
        )
        return readings
