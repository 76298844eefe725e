"""What every router backend offers the agent.

A router is a process of its own that takes users' requests on an
environment's ``listen`` address and sends them to the live slot. The agent
starts it (``prepare`` then ``command``), asks it to switch, reads its
counters, and re-adopts it after the agent itself restarts. The router keeps
its live upstream on disk, so that it comes back with the same routing if it
is restarted.
"""

from __future__ import annotations

import signal
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from verger.deploy.routers.stats import Stats


@dataclass(frozen=True)
class Upstream:
    """Where a slot serves: its name (blue or green) and its loopback address."""

    slot: str
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class Router(ABC):
    """One environment's router, seen from the agent."""

    kind: ClassVar[str]
    # The signal on which the router process finishes requests in flight and exits.
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM

    def __init__(
        self, environment: str, listen: str, run_dir: Path, drain_timeout: float = 30.0
    ) -> None:
        self.environment = environment
        self.listen = listen
        self.run_dir = run_dir
        self.drain_timeout = drain_timeout

    @abstractmethod
    def prepare(self, live: Upstream | None) -> None:
        """Write what the router process needs to start serving ``live``."""

    @abstractmethod
    def command(self) -> list[str]:
        """The argv that runs the router process in the foreground."""

    @abstractmethod
    async def ready(self) -> bool:
        """Whether the router answers its control channel."""

    @abstractmethod
    async def live(self) -> Upstream | None:
        """The upstream new requests go to now, or None before the first release."""

    @abstractmethod
    async def switch(self, upstream: Upstream) -> None:
        """Send every new request to ``upstream`` from now on, atomically.

        Requests in flight on the previous upstream finish there; its idle
        keep-alive connections are closed between requests, never in the
        middle of one.
        """

    @abstractmethod
    async def inflight(self, address: str) -> int:
        """How many requests are in flight on an upstream address."""

    @abstractmethod
    async def stats(self) -> Stats:
        """Cumulative counters since the router process started."""
