"""How the CLI reaches the agent: loopback HTTP with the token from agent.json."""

from __future__ import annotations

import fcntl
import http.client
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from verger.agent.files import AgentFiles
from verger.config import Loaded
from verger.deploy import process
from verger.errors import (
    AgentError,
    BusyError,
    DeployError,
    RouterError,
    StateError,
    VergerError,
)
from verger.state import open_store

_KINDS: dict[str, type[VergerError]] = {
    "BusyError": BusyError,
    "DeployError": DeployError,
    "RouterError": RouterError,
}


class AgentClient:
    def __init__(self, loaded: Loaded | None, path: Path | None = None) -> None:
        self._loaded = loaded
        self.path = loaded.path if loaded is not None else Path(str(path))
        self.files = AgentFiles(self.path.parent / ".verger")

    @classmethod
    def without_config(cls, path: Path) -> AgentClient:
        """A client for the agent of the config at ``path``, which may no longer load.

        Enough to stop that agent: it runs on the config it read when it started.
        """
        return cls(None, path)

    @property
    def loaded(self) -> Loaded:
        if self._loaded is None:
            raise AgentError(
                f"{self.path} does not load, so verger cannot start an agent for it",
                "fix the config ('verger check' lists what is wrong)",
            )
        return self._loaded

    def info(self) -> dict[str, Any] | None:
        return self.files.read_info()

    def _require(self) -> dict[str, Any]:
        info = self.info()
        if info is None:
            raise AgentError(
                f"the agent is not running for {self.path}",
                "start it with 'verger up'",
            )
        return info

    def call(
        self, method: str, path: str, body: Any = None, timeout: float = 30.0
    ) -> dict[str, Any]:
        info = self._require()
        headers = {
            "Authorization": f"Bearer {info['token']}",
            "Content-Type": "application/json",
        }
        # Loopback JSON to our own agent: the standard library's client is
        # enough, and keeps every CLI command quick to start.
        conn = http.client.HTTPConnection(
            "127.0.0.1", int(info["port"]), timeout=timeout
        )
        try:
            conn.request(method, path, json.dumps(body or {}).encode(), headers)
            response = conn.getresponse()
            data: dict[str, Any] = json.loads(response.read() or b"{}")
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise AgentError(
                f"the agent (pid {info['pid']}) does not answer: {exc}",
                f"see its log {self.files.log}, or restart it with "
                "'verger down' and 'verger up'",
            ) from exc
        finally:
            conn.close()
        if response.status >= 400:
            kind = _KINDS.get(str(data.get("kind")), AgentError)
            raise kind(str(data.get("error")), str(data.get("hint", "")))
        return data

    def router_problems(self) -> dict[str, str]:
        """Why routers could not start, by environment, as the running agent knows it."""
        routers = self.call("GET", "/v1/problems").get("routers") or {}
        return {str(name): str(problem) for name, problem in routers.items()}

    def dashboard_problem(self) -> str | None:
        """Why the running agent's dashboard does not listen, or None when it does."""
        problem = self.call("GET", "/v1/problems").get("dashboard")
        return None if problem is None else str(problem)

    def dashboard(self) -> dict[str, Any]:
        """The running agent's dashboard: configured, listen, listening, problem."""
        return self.call("GET", "/v1/dashboard")

    def follow(self, deploy_id: int) -> Iterator[dict[str, Any]]:
        """Yield a deploy's events as they happen, until its result."""
        after = 0
        while True:
            data = self.call("GET", f"/v1/deploys/{deploy_id}/events?after={after}")
            for event in data["events"]:
                after += 1
                yield event
                if event["kind"] == "result":
                    return
            if data["done"]:
                return

    def up(self, config_path: Path, timeout: float = 20.0) -> dict[str, Any]:
        """Start the agent in the background and wait until it answers.

        Commands started at the same moment take turns on a lock: the first
        starts the agent, the others find it running.
        """
        try:
            with self._start_lock(timeout):
                info = self.info()
                if info is not None:
                    return {**info, "already": True}
                # The agent's first step, taken here for the same clear error
                # as 'verger status' when the store cannot be opened.
                open_store(self.loaded.config.state, self.loaded.root).close()
                return self._start(config_path, timeout)
        except OSError as exc:
            raise StateError(
                f"cannot write verger's state folder {self.files.state_dir}: "
                f"{exc.strerror or exc} ({Path(str(exc.filename)).name})",
                "check that the folder exists and is writable",
            ) from exc

    @contextmanager
    def _start_lock(self, timeout: float) -> Iterator[None]:
        self.files.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.files.start_lock, "a+") as handle:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise AgentError(
                            "another 'verger up' has been starting the agent for "
                            f"{timeout:.0f}s",
                            f"see the agent's log {self.files.log}",
                        ) from None
                    time.sleep(0.05)
            yield

    def _start(self, config_path: Path, timeout: float) -> dict[str, Any]:
        handle = process.spawn(
            [sys.executable, "-m", "verger", "-c", str(config_path), "agent"],
            cwd=self.loaded.root,
            env=dict(os.environ),
            log_path=self.files.log,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.info()
            if info is not None:
                # Another agent (started by systemd, say) may have won the lock.
                return {**info, "already": info["pid"] != handle.pid}
            if not process.alive(handle, group=False):
                break
            time.sleep(0.05)
        raise AgentError(
            "the agent did not start" + self._why_not(),
            f"see its log {self.files.log}",
        )

    def _why_not(self) -> str:
        """The error line the agent wrote last before exiting, if any."""
        lines = [line.strip() for line in process.tail(self.files.log, 20)]
        errors = [line for line in lines if line.startswith("error:")]
        if errors:
            return ": " + errors[-1].removeprefix("error:").strip()
        said = [line for line in lines if line and not line.startswith("hint:")]
        return f": {said[-1]}" if said else ""

    def down(self, keep_serving: bool = False, timeout: float = 60.0) -> bool:
        """Ask the agent to stop and wait for it; False when none was running."""
        info = self.info()
        if info is None:
            return False
        handle = process.Handle(int(info["pid"]), str(info["started"]))
        try:
            self.call("POST", "/v1/shutdown", {"keep_serving": keep_serving})
        except AgentError:
            process.signal_group(handle, 15)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.alive(handle, group=False):
            time.sleep(0.05)
        if process.alive(handle, group=False):
            process.stop(handle, 2.0)
        return True
