"""How the CLI reaches the agent: loopback HTTP with the token from agent.json."""

from __future__ import annotations

import http.client
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from verger.agent.files import AgentFiles
from verger.config import Loaded
from verger.deploy import process
from verger.errors import AgentError, BusyError, DeployError, RouterError, VergerError

_KINDS: dict[str, type[VergerError]] = {
    "BusyError": BusyError,
    "DeployError": DeployError,
    "RouterError": RouterError,
}


class AgentClient:
    def __init__(self, loaded: Loaded) -> None:
        self.loaded = loaded
        self.files = AgentFiles(loaded.state_dir)

    def info(self) -> dict[str, Any] | None:
        return self.files.read_info()

    def _require(self) -> dict[str, Any]:
        info = self.info()
        if info is None:
            raise AgentError(
                f"the agent is not running for {self.loaded.path}",
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
        """Start the agent in the background and wait until it answers."""
        info = self.info()
        if info is not None:
            return {**info, "already": True}
        self.files.state_dir.mkdir(parents=True, exist_ok=True)
        handle = process.spawn(
            [sys.executable, "-m", "verger", "-c", str(config_path), "agent"],
            cwd=self.loaded.root,
            env=dict(os.environ),
            log_path=self.files.log,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.info()
            if info is not None and info["pid"] == handle.pid:
                return {**info, "already": False}
            if not process.alive(handle):
                break
            time.sleep(0.05)
        lines = [line for line in process.tail(self.files.log, 5) if line.strip()]
        raise AgentError(
            "the agent did not start" + (f": {lines[-1].strip()}" if lines else ""),
            f"see its log {self.files.log}",
        )

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
        while time.monotonic() < deadline and process.alive(handle):
            time.sleep(0.05)
        if process.alive(handle):
            process.stop(handle, 2.0)
        return True
