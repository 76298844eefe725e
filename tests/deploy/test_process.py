"""Local processes: a release whose start shell dies but whose app lives on."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from verger.deploy import process


def _wait_for(condition: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.02)
    return False


def test_a_killed_start_shell_leaves_the_release_alive_and_stop_ends_its_app(
    tmp_path: Path,
) -> None:
    """When the shell that runs start: is SIGKILLed, the app it started keeps the
    release alive (no restart into its port), and stopping the release ends the app."""
    ready = tmp_path / "child"
    handle = process.spawn(
        f"sleep 300 & echo $! > {ready}; wait",
        cwd=tmp_path,
        env=dict(os.environ),
        log_path=tmp_path / "log",
        shell=True,
    )
    assert _wait_for(lambda: ready.exists() and ready.read_text().strip())
    child = int(ready.read_text())

    os.kill(handle.pid, signal.SIGKILL)
    assert _wait_for(lambda: process.start_time(handle.pid) is None)
    assert process.alive(handle)
    assert not process.alive(handle, group=False)
    assert process.members(handle) == [child]

    process.stop(handle, grace=2.0)
    assert process.start_time(child) is None
    assert not process.alive(handle)


def test_a_release_whose_group_is_empty_is_dead(tmp_path: Path) -> None:
    """A start command that exits with nothing left behind is no longer alive."""
    handle = process.spawn(
        "true",
        cwd=tmp_path,
        env=dict(os.environ),
        log_path=tmp_path / "log",
        shell=True,
    )
    assert _wait_for(lambda: not process.alive(handle))
    assert process.members(handle) == []


def test_no_recorded_pid_is_never_alive() -> None:
    """A handle with pid 0 (nothing recorded) is dead, though kernel threads are in group 0."""
    assert not process.alive(process.Handle(0, ""))
