"""Scratch PostgreSQL clusters: throwaway servers that restores are proved in.

A scratch cluster lives in its own folder under ``backup.scratch``, listens on
a free loopback port and a private socket folder, and runs with archiving off,
so a restored copy can never push WAL into the live repository. Each folder is
named after the verger process that made it and holds a record of it
(``cluster.json``: the owner's pid, the data folder, the port, whether it is a
restore's target), written before the server is started. A cluster left
behind by a killed process is found by the next verger command: its server is
stopped, its folder removed, and a restore target it left half-written is
removed too, so nothing half-done is ever mistaken for a restore.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import time
from pathlib import Path
from types import TracebackType

import psycopg

from verger.backup.system import Runner, pg_program
from verger.children import running
from verger.errors import BackupError

# The file in each cluster's folder that says whose it is and where its data is.
RECORD = "cluster.json"

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
        self.record()

    def record(self, **facts: object) -> None:
        """Write what the next verger needs to clean up after a killed owner."""
        path = self.folder / RECORD
        try:
            known = json.loads(path.read_text())
        except (OSError, ValueError):
            known = {}
        known.update(owner=os.getpid(), data=str(self.data), port=self.port, **facts)
        temporary = path.with_name(f".{RECORD}")
        temporary.write_text(json.dumps(known))
        os.replace(temporary, path)

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
        return running(pid)

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


def clean_stale(scratch: Path) -> list[str]:
    """Clean up after clusters whose verger process is gone; say what was done.

    Each left-behind server is stopped; a restore target that was still being
    written is removed, since it may hold half a cluster.
    """
    said: list[str] = []
    if not scratch.is_dir():
        return said
    for folder in sorted(scratch.iterdir()):
        parts = folder.name.rsplit("-", 2)
        if len(parts) != 3 or not parts[1].isdigit():
            continue
        facts = _read_record(folder)
        owner = int(str(facts.get("owner", parts[1])))
        if owner == os.getpid() or running(owner):
            continue
        said += _clean_one(folder, facts)
    return said


def _read_record(folder: Path) -> dict[str, object]:
    try:
        facts = json.loads((folder / RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return facts if isinstance(facts, dict) else {}


def _clean_one(folder: Path, facts: dict[str, object]) -> list[str]:
    """Stop one dead owner's server, drop a half-written target, remove its folder."""
    said: list[str] = []
    data = Path(str(facts.get("data") or folder / "data"))
    if _kill_postmaster(data):
        said.append(
            f"Stopped a PostgreSQL server on port {facts.get('port', '?')} that a "
            f"killed verger left running in {data}."
        )
    if facts.get("target") and not facts.get("finished"):
        said.append(_drop_target(data, facts))
    shutil.rmtree(folder, ignore_errors=True)
    return said


def _drop_target(data: Path, facts: dict[str, object]) -> str:
    """Remove what an interrupted restore wrote into its target; say so."""
    if facts.get("target") == "database":
        # verger does not drop a database it did not create; it says so instead.
        return (
            f"A restore into the database {facts.get('database', '?')} was "
            "interrupted and may have left it half-restored: drop it and restore "
            "again."
        )
    if facts.get("created"):
        shutil.rmtree(data, ignore_errors=True)
    else:
        for entry in data.iterdir() if data.is_dir() else []:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
    return (
        f"Removed {data}: a restore into it was interrupted, so it held an "
        "incomplete cluster; restore again."
    )


def _kill_postmaster(data: Path) -> bool:
    """Stop the server running from ``data``, if one is; True if one was."""
    try:
        pid = int((data / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return False
    if not running(pid) or not _is_postgres(pid):
        return False
    # SIGQUIT is PostgreSQL's immediate shutdown: the server stops its backends.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGQUIT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and running(pid):
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)
    return True


def _is_postgres(pid: int) -> bool:
    """Whether ``pid`` is a PostgreSQL server, not another process given its number."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"postgres" in command.split(b"\0", 1)[0]
