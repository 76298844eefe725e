"""Child processes that end with the verger process that started them.

A verger command killed with SIGKILL runs no cleanup. Without this, what it
started lives on: a forked masking worker keeps a transaction open on the
source, a pgBackRest backup keeps copying and holds the stanza's lock, and
every later job is refused. On Linux a child asks the kernel to kill it when
its parent dies (``PR_SET_PDEATHSIG``). That cannot reach the children a
program starts itself, such as pgBackRest's workers: a long command runs in
a process group of its own, which a guard process kills when verger dies
(``guarded``), and everything carries ``OWNER`` in its environment, so the
next command can find and end what a dead verger (and its guard) left.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

log = logging.getLogger("verger")

PR_SET_PDEATHSIG = 1

# A guard's whole program: wait for a byte; at end of file (its parent died
# without saying the job ended) kill the job's process group.
_GUARD = """\
import os, signal, sys
if not sys.stdin.buffer.read(1):
    try:
        os.killpg(int(sys.argv[1]), signal.SIGKILL)
    except ProcessLookupError:
        pass
"""

# The environment variable naming the verger process a child belongs to:
# "<pid>-<start time>", so that a reused pid is not taken for the owner.
OWNER = "VERGER_OWNER"


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's prctl, looked up in the parent: a forked child must not dlopen."""
    if not sys.platform.startswith("linux"):
        return None
    function: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    return function


def die_with_parent(parent: int) -> None:
    """Called first thing in a forked child: the kernel kills it when ``parent`` dies.

    The parent may have died between the fork and the request, in which case
    the child was already handed to init and no signal will come: it leaves.
    """
    prctl = _prctl()
    if prctl is not None and prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        log.warning("Could not ask to end with verger: errno %s.", ctypes.get_errno())
    if os.getppid() != parent:
        os._exit(1)


def ending_with_me() -> Callable[[], None]:
    """A ``preexec_fn`` that makes a program started by ``subprocess`` die with us.

    ``subprocess`` switches to ``user``/``group`` before it calls this, and a
    change of user clears the request, so it must come last, as it does here.
    """
    _prctl()
    return functools.partial(die_with_parent, os.getpid())


@contextlib.contextmanager
def guarded(group: int) -> Iterator[None]:
    """Kill process group ``group`` at once if this process dies inside the block.

    ``PR_SET_PDEATHSIG`` reaches only our own children; a program's own
    workers (pgBackRest's) would go on copying for as long as their file
    takes. Started in a process group of its own, the whole job is ended by
    a small guard process, which learns of verger's death from the end of a
    pipe only verger holds.
    """
    guard = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", _GUARD, str(group)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={},  # It needs nothing, and verger's environment may hold secrets.
        # Out of verger's process group, so that a SIGKILL of the whole group
        # (kill -9 -PGID) does not take the guard too; nor a terminal's Ctrl-C.
        start_new_session=True,
    )
    assert guard.stdin is not None
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            guard.stdin.write(b"done")
            guard.stdin.close()
        try:
            guard.wait(5)
        except subprocess.TimeoutExpired:
            guard.kill()
            guard.wait()


def owner_tag(pid: int | None = None) -> str:
    """This process's (or ``pid``'s) value for ``OWNER``."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}-{_start_time(pid)}"


def orphans(wanted: Callable[[list[str]], bool]) -> list[int]:
    """Processes tagged with ``OWNER`` whose owner is gone, and whose command
    line ``wanted`` accepts."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        owner = _owner_of(entry)
        if owner is None or _owner_alive(owner):
            continue
        try:
            words = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if wanted(words.split("\0")):
            found.append(int(entry.name))
    return found


def end(pids: Iterable[int], grace: float = 5.0) -> list[int]:
    """SIGTERM ``pids``, then SIGKILL what is still there after ``grace``."""
    pids = list(pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
            # A stopped process acts on SIGTERM only once continued.
            os.kill(pid, signal.SIGCONT)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(running(pid) for pid in pids):
        time.sleep(0.05)
    for pid in pids:
        if running(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(running(pid) for pid in pids):
        time.sleep(0.05)
    return pids


def running(pid: int | None) -> bool:
    """Whether process ``pid`` exists and is not a zombie.

    A process of another user counts (the signal test is refused, not
    failed). A zombie has ended: only its exit status waits to be read.
    """
    if not pid or pid < 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # Gone since, or no /proc here.
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def _owner_of(entry: Path) -> str | None:
    try:
        environ = (entry / "environ").read_bytes()
    except OSError:
        return None
    prefix = f"{OWNER}=".encode()
    for item in environ.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix) :].decode(errors="replace")
    return None


def _owner_alive(tag: str) -> bool:
    pid, _, started = tag.partition("-")
    if not pid.isdigit():
        return True  # Not ours to judge: leave it alone.
    return running(int(pid)) and _start_time(int(pid)) == started


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot, from /proc; "" if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rpartition(")")[2].split()[19]
