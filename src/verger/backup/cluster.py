"""Scratch PostgreSQL clusters: throwaway servers that restores are proved in.

A scratch cluster lives in its own folder under ``backup.scratch``, listens on
a free loopback port and a private socket folder, and runs with archiving off,
so a restored copy can never push WAL into the live repository. Each folder is
named after the verger process that made it, so one left behind by a killed
process is found and removed by the next one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import time
from pathlib import Path
from types import TracebackType

import psycopg

from verger.backup.system import Runner, pg_program
from verger.errors import BackupError

# Settings every scratch cluster runs with, whatever the restored copy says.
SCRATCH_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "archive_mode": "off",
    "archive_command": "",
    # Recovery refuses to run with fewer connections or WAL senders than the
    # source had, so those are left as the restored copy says; a hot standby
    # is not needed, since nothing reads the copy before it is promoted.
    "hot_standby": "off",
    "fsync": "off",
    "shared_preload_libraries": "",
    "logging_collector": "off",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ScratchCluster:
    """One throwaway cluster: its data folder, port and socket folder."""

    def __init__(self, runner: Runner, scratch: Path, purpose: str) -> None:
        self.runner = runner
        runner.check_reachable(scratch)
        runner.own(scratch, 0o755)
        self.folder = runner.own(scratch / f"{purpose}-{os.getpid()}-{time.time_ns()}")
        self.data = self.folder / "data"
        self.sockets = runner.own(self.folder / "sockets")
        self.log = self.folder / "server.log"
        self.port = free_port()
        self.running = False

    def __enter__(self) -> ScratchCluster:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.remove()

    @property
    def dsn(self) -> str:
        return f"host={self.sockets} port={self.port} user={self.superuser} dbname=postgres"

    @property
    def superuser(self) -> str:
        """The role initdb created: the owner of the data folder."""
        if self.runner.user is not None:
            return self.runner.user.name
        import getpass

        return getpass.getuser()

    def url(self, database: str = "postgres") -> str:
        return (
            f"postgresql://{self.superuser}@127.0.0.1:{self.port}/{database}"
            f"?host={self.sockets}"
        )

    def init(self) -> None:
        """Create an empty cluster (for logical restores)."""
        self.runner.run(
            [
                pg_program("initdb"),
                "-D",
                str(self.data),
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
            what="initdb",
            timeout=120,
        )

    def start(
        self,
        timeout: float = 3600.0,
        settings: dict[str, str] | None = None,
        isolated: bool = True,
    ) -> None:
        """Start the server and wait until it accepts writes (recovery done).

        ``isolated`` forces archiving off and the other scratch settings over
        whatever the data folder says; only a test's own source cluster, which
        must archive like a real one, starts with it false.
        """
        options = {**(SCRATCH_SETTINGS if isolated else {}), **(settings or {})}
        options.update(port=str(self.port), unix_socket_directories=str(self.sockets))
        flags = " ".join(f"-c {name}='{value}'" for name, value in options.items())
        self.running = True
        self.runner.run(
            [
                pg_program("pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-o",
                flags,
                "-w",
                "-t",
                str(int(timeout)),
                "start",
            ],
            what="pg_ctl start",
            check=False,
            timeout=timeout + 30,
        )
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        """Wait until the server accepts writes, reading its log on failure."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.postmaster_alive():
                raise BackupError(
                    f"the scratch PostgreSQL server stopped: {self.last_log_line()}",
                    f"see {self.log} for why",
                )
            with (
                contextlib.suppress(psycopg.Error),
                psycopg.connect(self.dsn, connect_timeout=2) as conn,
            ):
                (standby,) = conn.execute("SELECT pg_is_in_recovery()").fetchone() or (
                    True,
                )
                if not standby:
                    return
            time.sleep(0.1)
        raise BackupError(
            f"the scratch PostgreSQL server did not accept writes within {timeout:g}s",
            f"see {self.log} for what it was doing",
        )

    def postmaster_pid(self) -> int | None:
        try:
            first = (self.data / "postmaster.pid").read_text().split("\n", 1)[0]
            return int(first)
        except (OSError, ValueError):
            return None

    def postmaster_alive(self) -> bool:
        pid = self.postmaster_pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return not _is_zombie(pid)

    def last_log_line(self) -> str:
        try:
            lines = [
                line
                for line in self.log.read_text(errors="replace").splitlines()
                if "FATAL" in line or "PANIC" in line or "ERROR" in line
            ]
        except OSError:
            return "no server log"
        return lines[-1].strip() if lines else "see the server log"

    def connect(
        self, database: str = "postgres"
    ) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            self.dsn.replace("dbname=postgres", f"dbname={database}")
        )

    def stop(self) -> None:
        """Stop the server fast; a server that will not stop is killed."""
        if not self.postmaster_alive():
            self.running = False
            return
        self.runner.run(
            [pg_program("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
            check=False,
            timeout=60,
        )
        pid = self.postmaster_pid()
        if pid is not None and self.postmaster_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.running = False

    def remove(self) -> None:
        """Stop the server and delete its folder."""
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def clean_stale(scratch: Path) -> list[Path]:
    """Remove scratch clusters whose verger process is gone; return what was removed."""
    removed: list[Path] = []
    if not scratch.is_dir():
        return removed
    for folder in scratch.iterdir():
        parts = folder.name.rsplit("-", 2)
        if len(parts) != 3 or not parts[1].isdigit():
            continue
        owner = int(parts[1])
        if owner == os.getpid() or _process_alive(owner):
            continue
        _kill_postmaster(folder / "data")
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _kill_postmaster(data: Path) -> None:
    try:
        pid = int((data / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGQUIT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _process_alive(pid):
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)
