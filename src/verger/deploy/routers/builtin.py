"""The built-in router, seen from the agent: files to start it, and its control socket.

The router itself is ``verger.deploy.routers.proxy``, a process of its own.
This class writes its spec and state files into the run directory, gives the
argv that runs it, and talks to it over the unix socket
``RUN_DIR/router-ENVIRONMENT.sock``::

    router = BuiltinRouter("production", "127.0.0.1:8080", run_dir)
    router.prepare(Upstream("blue", "127.0.0.1", 8001))
    subprocess.Popen(router.command(), start_new_session=True)
    await router.switch(Upstream("green", "127.0.0.1", 8002))
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import aiohttp

from verger.deploy.routers.base import Router, Upstream
from verger.deploy.routers.proxy import Spec, upstream_from_dict, write_state
from verger.deploy.routers.stats import Stats
from verger.errors import RouterError

# Linux keeps a unix socket's path in 108 bytes, the final NUL included.
SOCKET_PATH_MAX = 107


class BuiltinRouter(Router):
    """verger's own reverse proxy for one environment."""

    kind: ClassVar[str] = "builtin"

    def __init__(
        self, environment: str, listen: str, run_dir: Path, drain_timeout: float = 30.0
    ) -> None:
        super().__init__(environment, listen, run_dir, drain_timeout)
        # Defaults for the process; set before prepare() to change them.
        self.connect_timeout = 5.0
        self.read_timeout = 120.0
        self.pool_idle_timeout = 2.0
        self.client_keepalive = 75.0
        # How long the agent waits for one answer on the control socket.
        self.control_timeout = 10.0

    @property
    def spec_path(self) -> Path:
        return self.run_dir / f"router-{self.environment}.json"

    @property
    def state_path(self) -> Path:
        return self.run_dir / f"router-{self.environment}.state"

    @property
    def socket_path(self) -> Path:
        return self.run_dir / f"router-{self.environment}.sock"

    def prepare(self, live: Upstream | None) -> None:
        """Write the spec and the state file the router process starts from."""
        if len(str(self.socket_path)) > SOCKET_PATH_MAX:
            raise RouterError(
                f"the router's control socket path {self.socket_path} is too long "
                f"for a unix socket ({SOCKET_PATH_MAX} bytes at most)",
                "use a shorter run directory",
            )
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.spec().dump(self.spec_path)
            write_state(self.state_path, live)
        except OSError as exc:
            raise RouterError(
                f"cannot write the router's files in {self.run_dir}: {exc}",
                "check that the run directory is writable",
            ) from exc

    def spec(self) -> Spec:
        """What the router process is told at start."""
        return Spec(
            environment=self.environment,
            listen=self.listen,
            control=str(self.socket_path),
            state=str(self.state_path),
            drain_timeout=self.drain_timeout,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            pool_idle_timeout=self.pool_idle_timeout,
            client_keepalive=self.client_keepalive,
        )

    def command(self) -> list[str]:
        """The argv that runs the router process in the foreground."""
        return [
            sys.executable,
            "-m",
            "verger.deploy.routers.proxy",
            "--spec",
            str(self.spec_path),
        ]

    async def ready(self) -> bool:
        """Whether the router answers its control socket."""
        try:
            await self._call("GET", "/ready", timeout=2.0)
        except RouterError:
            return False
        return True

    async def live(self) -> Upstream | None:
        """The upstream new requests go to now, or None before the first release."""
        data = await self._call("GET", "/live")
        return None if data["live"] is None else upstream_from_dict(data["live"])

    async def switch(self, upstream: Upstream) -> None:
        """Send every new request to ``upstream`` from now on, atomically."""
        await self._call("PUT", "/live", body=asdict(upstream))

    async def inflight(self, address: str) -> int:
        """How many requests are in flight on an upstream address."""
        data = await self._call("GET", "/inflight", params={"address": address})
        return int(data["inflight"])

    async def stats(self) -> Stats:
        """Cumulative counters since the router process started."""
        return Stats.from_dict(await self._call("GET", "/stats"))

    async def pools(self) -> dict[str, int]:
        """The upstream addresses that still have a connection pool, with their load."""
        data = await self._call("GET", "/pools")
        return {str(k): int(v) for k, v in data["pools"].items()}

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """One request on the control socket; its JSON answer."""
        limit = aiohttp.ClientTimeout(total=timeout or self.control_timeout)
        connector = aiohttp.UnixConnector(path=str(self.socket_path))
        try:
            async with (
                aiohttp.ClientSession(connector=connector, timeout=limit) as session,
                session.request(
                    method, f"http://router{path}", json=body, params=params
                ) as response,
            ):
                data = await response.json()
                if response.status != 200:
                    raise RouterError(
                        f"the {self.environment} router refused {method} {path}: "
                        f"{data.get('error', response.status)}",
                        "see the router's log in the run directory",
                    )
                return data
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            raise RouterError(
                f"cannot reach the {self.environment} router at {self.socket_path}: "
                f"{exc or type(exc).__name__}",
                "check that the router process is running (verger status)",
            ) from exc
