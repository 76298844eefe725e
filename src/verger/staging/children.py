"""Forked masking and hunting processes end with the refresh that forked them.

A refresh killed with SIGKILL runs no cleanup: without this a forked child
would live on, holding the job lock and a transaction open on the source
(pinning its xmin), and every later refresh would be refused. Linux kills a
child asked to die with its parent (``verger.children.die_with_parent``);
elsewhere the next refresh ends what the dead one left holding its lock.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any


def holders(path: Path) -> list[int]:
    """The processes with ``path`` open, from /proc (Linux); none elsewhere."""
    target = str(path.resolve())
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            links = [os.readlink(fd) for fd in (entry / "fd").iterdir()]
        except OSError:
            continue
        if target in links and int(entry.name) != os.getpid():
            found.append(int(entry.name))
    return found


def end_orphans(path: Path, dead: int) -> list[str]:
    """Kill what still holds the lock at ``path`` after its refresh ``dead`` died."""
    notes = []
    for pid in holders(path):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        notes.append(f"ended process {pid}, left holding the lock by refresh {dead}")
    return notes


class Forked:
    """A forked process that sends its answers back through a one-way pipe.

    ``target`` is called as ``target(parent_pid, *args, sender)``; it should
    first call ``die_with_parent(parent_pid)``.
    """

    def __init__(self, target: Callable[..., None], *args: Any) -> None:
        context = multiprocessing.get_context("fork")
        self.answers, sender = context.Pipe(duplex=False)
        self.process = context.Process(
            target=_child, args=(target, os.getpid(), *args, sender), daemon=True
        )
        self.process.start()
        sender.close()

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.answers.close()


def _child(target: Callable[..., None], *args: Any) -> None:
    """``target`` with Ctrl-C and SIGTERM ending the child quietly.

    The refresh that forked it cleans up and says what happened; the child
    would otherwise inherit its handlers and print a traceback of its own.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    target(*args)
