"""Where the agent keeps its pid, address, token, lock and log, under .verger/."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verger.deploy import process


@dataclass(frozen=True)
class AgentFiles:
    state_dir: Path

    @property
    def info(self) -> Path:
        return self.state_dir / "agent.json"

    @property
    def lock(self) -> Path:
        return self.state_dir / "agent.lock"

    @property
    def start_lock(self) -> Path:
        """Held by 'verger up' while it starts an agent, so that two never race."""
        return self.state_dir / "agent.start.lock"

    @property
    def log(self) -> Path:
        return self.state_dir / "agent.log"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    def write_info(self, port: int, token: str) -> None:
        """Record how to reach this agent; readable by its owner only."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        data = {
            "pid": os.getpid(),
            "started": process.start_time(os.getpid()),
            "port": port,
            "token": token,
        }
        tmp = self.info.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)
        os.replace(tmp, self.info)

    def read_info(self) -> dict[str, Any] | None:
        """The running agent's record, or None when no agent is running."""
        try:
            data: dict[str, Any] = json.loads(self.info.read_text())
        except (OSError, ValueError):
            return None
        handle = process.Handle(int(data.get("pid", 0)), str(data.get("started", "")))
        if not process.alive(handle):
            return None
        return data

    def remove_info(self) -> None:
        try:
            data = json.loads(self.info.read_text())
            if data.get("pid") == os.getpid():
                self.info.unlink()
        except (OSError, ValueError):
            pass


def new_token() -> str:
    return secrets.token_urlsafe(32)
