"""Local processes that outlive the agent: started in a session of their own,
their output in a log file, and known again later by pid and start time.

A pid alone is not an identity: after a restart of the machine or a long
time, the same number may belong to another program. The kernel's start time
of the process (from /proc) is recorded with it, and a process is only
re-adopted, signalled or stopped when both match.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from verger.errors import DeployError


@dataclass(frozen=True)
class Handle:
    """A running process as verger knows it: its pid and kernel start time."""

    pid: int
    started: str


def start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces.
    fields = raw.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        _reap(pid)
        return None
    return fields[19]


# Exit statuses of our own children, collected when they are reaped.
_exits: dict[int, int] = {}


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            _exits[pid] = os.waitstatus_to_exitcode(status)


def alive(handle: Handle | None, *, group: bool = True) -> bool:
    """Whether the process is still the one recorded, or its group lives on.

    A release's recorded process is often the shell that runs its start
    command. If that shell is killed, the application it started keeps
    serving in the same process group; the release is alive until the
    group is empty, so that it is neither started again into a port it
    still holds nor left running by a stop. ``group=False`` asks about the
    recorded process alone.
    """
    # Kernel threads have group 0: no pid recorded is never a live group.
    if handle is None or handle.pid <= 0:
        return False
    _reap(handle.pid)
    if start_time(handle.pid) == handle.started:
        return True
    return group and bool(members(handle))


def members(handle: Handle) -> list[int]:
    """Processes left in the group the recorded process led, itself aside."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == handle.pid:
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        fields = raw.rsplit(")", 1)[1].split()
        # A group id is not given to a new process while the group has members,
        # and members started after their leader: both must hold.
        later = not handle.started or int(fields[19]) >= int(handle.started)
        if fields[0] != "Z" and int(fields[2]) == handle.pid and later:
            found.append(int(entry.name))
    return found


def spawn(
    argv: list[str] | str,
    *,
    cwd: Path,
    env: dict[str, str],
    log_path: Path,
    shell: bool = False,
) -> Handle:
    """Start a process in its own session, its output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab", buffering=0) as log:
        try:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                shell=shell,
            )
        except OSError as exc:
            raise DeployError(
                f"cannot start {argv if isinstance(argv, str) else argv[0]}: {exc}",
                "check the command and that its program is installed",
            ) from exc
    started = start_time(proc.pid) or ""
    # The Popen object is dropped on purpose: reaping goes through alive().
    proc.returncode = 0
    return Handle(proc.pid, started)


def exit_code(handle: Handle) -> int | None:
    """The exit status of a child of ours that ended, if it was collected."""
    _reap(handle.pid)
    return _exits.get(handle.pid)


def signal_group(handle: Handle, signum: int) -> bool:
    """Send a signal to the process's session group, if it is still the recorded one."""
    if not alive(handle):
        return False
    try:
        os.killpg(handle.pid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        os.kill(handle.pid, signum)
    return True


def stop(handle: Handle, grace: float = 10.0, signum: int = signal.SIGTERM) -> None:
    """Signal the process group (SIGTERM), then SIGKILL what is left after ``grace``."""
    if not signal_group(handle, signum):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not alive(handle):
            return
        time.sleep(0.05)
    signal_group(handle, signal.SIGKILL)
    for _ in range(100):
        if not alive(handle):
            return
        time.sleep(0.02)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, chosen by the kernel."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_taken(host: str, port: int) -> bool:
    """Whether something already listens on host:port (connect succeeds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return (
            sock.connect_ex(
                (host if host not in ("0.0.0.0", "") else "127.0.0.1", port)
            )
            == 0
        )


def listener(port: int) -> str | None:
    """Which process listens on TCP ``port``, as "name (pid N)", when it can be seen.

    The socket's inode comes from /proc/net/tcp and tcp6; the process is the
    one holding a descriptor to it. Processes of other users stay unknown
    unless verger runs as root.
    """
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{inode}]")
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _holds(entry, inodes):
            name = _command_name(entry)
            return f"{name} (pid {entry.name})"
    return None


def _holds(entry: Path, inodes: set[str]) -> bool:
    try:
        descriptors = list((entry / "fd").iterdir())
    except OSError:
        return False
    for descriptor in descriptors:
        with contextlib.suppress(OSError):
            if os.readlink(descriptor) in inodes:
                return True
    return False


def _command_name(entry: Path) -> str:
    try:
        return (entry / "comm").read_text().strip() or "a process"
    except OSError:
        return "a process"


def stop_in_folder(folder: Path, grace: float = 5.0) -> list[int]:
    """Stop every process group whose process works inside ``folder``.

    A build or a release started by an agent that was killed has no handle
    left; its working folder still says whose it is. Returns the groups
    stopped.
    """
    inside = str(folder.resolve())
    groups: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cwd = os.readlink(entry / "cwd")
            if cwd == inside or cwd.startswith(inside + "/"):
                groups.add(os.getpgid(int(entry.name)))
    groups.discard(os.getpgid(0))
    for group in groups:
        with contextlib.suppress(OSError):
            os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while groups and time.monotonic() < deadline:
        groups = {g for g in groups if _group_alive(g)}
        time.sleep(0.05)
    for group in groups:
        with contextlib.suppress(OSError):
            os.killpg(group, signal.SIGKILL)
    return sorted(groups)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except OSError:
        return False
    return True


def tail(path: Path, lines: int = 20) -> list[str]:
    """The last lines of a log file, for error messages and ``verger logs``."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            data = handle.read().decode("utf-8", "replace")
    except OSError:
        return []
    return data.splitlines()[-lines:]
