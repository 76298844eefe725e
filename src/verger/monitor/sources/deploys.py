"""Releases: whether the last deploy to each environment failed or was rolled back."""

from __future__ import annotations

from verger.monitor.sources.base import Reading, Source
from verger.state import Store

FAILED = ("failed", "rolled_back")


class DeploySource(Source):
    """``verger_last_deploy_failed`` per environment, from the state store."""

    kind = "deploys"

    def __init__(self, state: Store, environments: list[str], every: float) -> None:
        super().__init__("deploys", every)
        self.state = state
        self.environments = environments

    async def collect(self, now: float) -> list[Reading]:
        readings = []
        for environment in self.environments:
            ended = [
                d
                for d in self.state.deploys(environment, limit=10)
                if d.status not in ("running", "interrupted")
            ]
            failed = bool(ended) and ended[0].status in FAILED
            readings.append(
                Reading(
                    "verger_last_deploy_failed", {"environment": environment}, failed
                )
            )
        return readings
