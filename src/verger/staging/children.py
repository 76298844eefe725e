"""Forked masking and hunting processes end with the refresh that forked them.

A refresh killed with SIGKILL runs no cleanup: without this a forked child
would live on, holding the job lock and a transaction open on the source
(pinning its xmin), and every later refresh would be refused. Linux kills a
child asked to die with its parent; elsewhere the next refresh ends what
the dead one left holding its lock.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from pathlib import Path

log = logging.getLogger("verger.staging")

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Called first thing in a forked child: the kernel kills it when ``parent`` dies.

    The parent may have died between the fork and the request, in which case
    the child was already handed to init and no signal will come: it leaves.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            log.warning(
                "Could not ask to end with the refresh: errno %s.", ctypes.get_errno()
            )
    if os.getppid() != parent:
        os._exit(1)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
