"""SIGTERM and SIGINT during a backup job: stop the engine, then fail in one line.

Without this, Python dies on SIGTERM at once: the catalog row stays "running"
and pgBackRest's worker processes go on copying files. Under ``interruptible``
a signal first stops every process the job started (the engine and its
workers, whatever process group they are in), then raises ``Interrupted``, so
the job records what it was doing as interrupted and exits non-zero.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from verger.children import end
from verger.errors import Interrupted

# Exit codes a shell gives a process ended by the signal.
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


@contextmanager
def interruptible(job: str) -> Iterator[None]:
    """Turn SIGTERM and SIGINT into ``Interrupted`` for the length of ``job``."""
    received: list[int] = []

    def handler(number: int, frame: FrameType | None) -> None:
        if received:
            return  # Already stopping: a second signal must not cut the cleanup short.
        received.append(number)
        stop_children()
        name = signal.Signals(number).name
        raise Interrupted(
            f"the {job} was interrupted by {name}; nothing it was doing counts",
            "nothing from it is listed as good; run it again when ready",
            exit_code=EXIT_CODES.get(signal.Signals(number), 143),
            signal=name,
        )

    previous = {number: signal.signal(number, handler) for number in EXIT_CODES}
    try:
        yield
    finally:
        for number, action in previous.items():
            signal.signal(number, action)


def stop_children(grace: float = 10.0) -> list[int]:
    """SIGTERM every process descended from this one, then SIGKILL what is left."""
    return end(descendants(os.getpid()), grace)


def descendants(root: int) -> list[int]:
    """Every live process below ``root`` in the process tree, parents first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        parent = _parent(int(entry.name))
        if parent is not None:
            children.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    queue = [root]
    while queue:
        for child in children.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])
