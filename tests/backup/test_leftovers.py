"""Killed and interrupted backup jobs, on real PostgreSQL and pgBackRest: what the
next command finds, what it cleans up, and what it never counts."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import PASSPHRASE, Source, backup_config, verger
from test_backup_cli import _listed, _ready, _wait_for_running_backup

from verger.backup.interrupt import descendants

pytestmark = pytest.mark.skipif(
    not Path("/usr/bin/pgbackrest").exists(), reason="pgBackRest is not installed"
)


def _start(config: Path, *args: str) -> subprocess.Popen[str]:
    """Start a verger command in a session of its own, as a terminal would."""
    return subprocess.Popen(
        [sys.executable, "-m", "verger", "-c", str(config), *args],
        env={**os.environ, "VERGER_BACKUP_PASSPHRASE": PASSPHRASE},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _wait_for(found: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found():
            return
        time.sleep(0.02)
    raise AssertionError(f"{what} did not happen within {timeout:g}s")


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _postmaster(data: Path) -> int | None:
    try:
        return int((data / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _kill(process: subprocess.Popen[str]) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate()


def _slow_restore(source: Source, config: Path) -> None:
    """A backup big enough, and WAL after it long enough to replay, to be caught."""
    source.sql(
        "CREATE TABLE bulk AS SELECT g, md5(g::text) AS h "
        "FROM generate_series(1, 600000) g"
    )
    _ready(config, source)
    verger(config, "backup", "run", "--no-verify", check=True)
    source.sql(
        "INSERT INTO bulk SELECT g, md5(g::text) FROM generate_series(1, 600000) g"
    )
    source.sql("SELECT pg_switch_wal()")
    time.sleep(3)


def _engine_processes(config: Path) -> list[str]:
    """pgBackRest backup processes (the main one and its workers) of this config."""
    state = str(config.parent / ".verger" / "backup")
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            words = (entry / "cmdline").read_bytes().decode().split("\0")
        except (OSError, UnicodeDecodeError):
            continue
        if any(state in w for w in words) and any(
            w.startswith("backup") for w in words
        ):
            found.append(" ".join(words))
    return found


def test_a_restore_killed_while_copying_leaves_no_half_restored_target(
    workdir: Path, source: Source
) -> None:
    """SIGKILL of 'restore' while pgBackRest writes the target: the next command
    removes the half-written target folder and says so."""
    config = backup_config(workdir, source)
    _slow_restore(source, config)
    target = workdir / "restored"
    process = _start(config, "restore", "--latest", "--target", str(target))
    _wait_for(lambda: (target / "base").exists(), "the restore writing files")
    _kill(process)
    assert target.exists()

    done = verger(config, "backup", "list", check=True)
    assert not target.exists(), "the half-restored target is still there"
    assert "interrupted" in done.stderr
    assert not list((workdir / "scratch").iterdir())


@pytest.mark.parametrize("command", ["restore", "verify"])
def test_a_job_killed_once_postgres_starts_leaves_no_server_running(
    workdir: Path, source: Source, command: str
) -> None:
    """SIGKILL of a restore or verification once its PostgreSQL server has
    started: the next command stops that server, removes what it left, and
    lists nothing as verified."""
    config = backup_config(workdir, source)
    _slow_restore(source, config)
    scratch = workdir / "scratch"
    target = workdir / "restored"
    if command == "restore":
        process = _start(config, "restore", "--latest", "--target", str(target))
        data = [target]
    else:
        process = _start(config, "backup", "verify")
        data = []

    def started() -> bool:
        if command == "verify":
            data[:] = [d / "data" for d in scratch.glob("verify-*")]
        return any(_postmaster(d) for d in data)

    _wait_for(started, "the restored server starting")
    pid = _postmaster(data[0])
    assert pid is not None
    _kill(process)
    assert _running(pid), "the server was stopped with its parent, nothing to test"

    done = verger(config, "backup", "list", check=True)
    _wait_for(lambda: not _running(pid), "the left-over server stopping", 15)
    assert "Stopped a PostgreSQL server" in done.stderr
    assert not list(scratch.iterdir())
    assert not target.exists()
    assert [row["status"] for row in _listed(config)] == ["done"]


def test_a_drill_killed_midway_is_marked_interrupted_and_its_server_stopped(
    workdir: Path, source: Source
) -> None:
    """SIGKILL of 'dr drill' once its copy is starting: 'dr report' alone already
    shows the drill interrupted, never running or passed, and the next backup
    command stops the copy."""
    config = backup_config(workdir, source)
    _slow_restore(source, config)
    scratch = workdir / "scratch"
    process = _start(config, "dr", "drill", "--lead", "1s")
    found: list[Path] = []

    def started() -> bool:
        found[:] = [d / "data" for d in scratch.glob("drill-*")]
        return any(_postmaster(d) for d in found)

    _wait_for(started, "the drill's copy starting")
    pid = _postmaster(found[0])
    assert pid is not None
    _kill(process)

    report = json.loads(verger(config, "--json", "dr", "report", check=True).stdout)
    assert report[0]["status"] == "interrupted"
    assert "interrupted" in report[0]["detail"]
    verger(config, "backup", "list", check=True)
    _wait_for(lambda: not _running(pid), "the drill's server stopping", 15)
    assert not list(scratch.iterdir())


@pytest.mark.parametrize(
    ("number", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)]
)
def test_a_signal_during_backup_run_stops_the_engine_and_says_so(
    workdir: Path, source: Source, number: signal.Signals, code: int
) -> None:
    """SIGTERM or SIGINT to 'backup run' while pgBackRest copies: its workers are
    stopped, the backup is recorded as interrupted, and one line with a hint
    says so with the signal's exit code."""
    source.sql(
        "CREATE TABLE bulk AS SELECT g, md5(g::text) AS h "
        "FROM generate_series(1, 1500000) g"
    )
    config = backup_config(workdir, source)
    _ready(config, source)
    process = _start(config, "backup", "run")
    _wait_for_running_backup(config)
    _wait_for(lambda: bool(_engine_processes(config)), "pgBackRest starting", 60)
    time.sleep(0.5)
    process.send_signal(number)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == code, stderr
    assert f"interrupted by {number.name}" in stderr
    assert "hint:" in stderr and "Traceback" not in stderr
    time.sleep(0.5)
    assert _engine_processes(config) == []
    state = config.parent / ".verger" / "state.db"
    with sqlite3.connect(state) as db:
        rows = db.execute("SELECT status, detail FROM backups").fetchall()
    assert len(rows) == 1 and rows[0][0] == "interrupted", rows
    assert "interrupted" in rows[0][1]


def test_setup_with_a_wrong_passphrase_changes_nothing(
    workdir: Path, source: Source
) -> None:
    """'backup setup' with a passphrase that does not open the existing repository
    refuses in one line, and neither writes a missing pgbackrest.conf nor
    rewrites an existing one."""
    config = backup_config(workdir, source)
    _ready(config, source)
    verger(config, "backup", "run", "--no-verify", check=True)
    conf = config.parent / ".verger" / "backup" / "production" / "pgbackrest.conf"
    before = conf.read_bytes()
    wrong = "not the right passphrase at all"

    done = verger(config, "backup", "setup", VERGER_BACKUP_PASSPHRASE=wrong)
    assert done.returncode == 6
    assert "could not be decrypted" in done.stderr and "Traceback" not in done.stderr
    assert wrong not in done.stdout + done.stderr
    assert conf.read_bytes() == before

    conf.unlink()
    done = verger(config, "backup", "setup", VERGER_BACKUP_PASSPHRASE=wrong)
    assert done.returncode == 6
    assert not conf.exists()
    assert not list(conf.parent.glob(".pgbackrest.conf*"))


def _killed_mid_copy(workdir: Path, source: Source) -> tuple[Path, int]:
    """A config and a 'backup run' whose pgBackRest workers are copying."""
    source.sql(
        "CREATE TABLE bulk AS SELECT g, md5(g::text) AS h "
        "FROM generate_series(1, 1500000) g"
    )
    config = backup_config(workdir, source)
    _ready(config, source)
    process = _start(config, "backup", "run", "--no-verify")
    _wait_for_running_backup(config)
    _wait_for(lambda: len(_engine_processes(config)) > 1, "pgBackRest's workers", 60)
    time.sleep(0.5)
    return config, process.pid


def _engine_pids(config: Path) -> list[int]:
    state = str(config.parent / ".verger" / "backup")
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not _running(int(entry.name)):
            continue
        try:
            words = (entry / "cmdline").read_bytes().decode().split("\0")
        except (OSError, UnicodeDecodeError):
            continue
        if any(state in w for w in words) and any(
            w.startswith("backup") for w in words
        ):
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize("whom", ["process", "group"])
def test_a_backup_run_killed_takes_its_pgbackrest_processes_with_it(
    workdir: Path, source: Source, whom: str
) -> None:
    """SIGKILL of the verger process alone, or of its whole process group,
    while pgBackRest copies: every pgBackRest process of that backup, workers
    included, is gone within 5 s with no other command run, and the next
    backup runs and is done."""
    config, pid = _killed_mid_copy(workdir, source)
    assert len(_engine_pids(config)) > 1
    if whom == "group":
        os.killpg(pid, signal.SIGKILL)
    else:
        os.kill(pid, signal.SIGKILL)

    _wait_for(lambda: not _engine_pids(config), "pgBackRest ending", 5)
    done = verger(config, "--json", "backup", "run", "--no-verify")
    assert done.returncode == 0, done.stderr
    assert [row["status"] for row in _listed(config)] == ["done", "interrupted"]


def test_the_next_command_ends_pgbackrest_workers_a_killed_verger_left(
    workdir: Path, source: Source
) -> None:
    """pgBackRest workers that outlive a killed verger (here: its guard killed
    with it, and the workers held stopped) are ended by the next command, even
    'backup list', which says so, and the next backup is not refused by the
    stanza's lock."""
    config, pid = _killed_mid_copy(workdir, source)
    engine = _engine_pids(config)
    main = [p for p in engine if "backup" in _cmdline(p)]
    guards = [c for c in _children(pid) if "os.killpg" in " ".join(_cmdline(c))]
    assert main and guards, "verger runs pgBackRest under a guard"
    for number in [*guards, pid]:
        os.kill(number, signal.SIGKILL)
    _wait_for(lambda: not _running(main[0]), "pgBackRest dying with verger", 5)
    # Held still, as a worker busy with a large file would be.
    left = [p for p in _engine_pids(config) if p not in main]
    try:
        for number in left:
            os.kill(number, signal.SIGSTOP)
        assert left and _engine_pids(config) == left, "no worker outlived verger"

        listed = verger(config, "backup", "list", check=True)
        assert "Ended pgBackRest processes" in listed.stderr
        assert _engine_pids(config) == []
    finally:
        for number in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(number, signal.SIGKILL)
    done = verger(config, "--json", "backup", "run", "--no-verify")
    assert done.returncode == 0, done.stderr
    assert [row["status"] for row in _listed(config)] == ["done", "interrupted"]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except (OSError, UnicodeDecodeError):
        return []


def test_no_program_a_verification_starts_has_the_passphrase_in_its_environment(
    workdir: Path, source: Source
) -> None:
    """While 'backup verify' restores and starts its scratch server, neither
    pgBackRest nor PostgreSQL (nor anything else verger started) carries the
    passphrase in its environment, although verger's own environment does."""
    config = backup_config(workdir, source)
    _slow_restore(source, config)
    process = _start(config, "backup", "verify")
    seen: dict[int, str] = {}
    holding: list[str] = []
    verger_itself = _cmdline(process.pid)
    while process.poll() is None:
        for pid in descendants(process.pid):
            before = _cmdline(pid)
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
            # A child caught between fork and exec is still verger, with
            # verger's environment: only a program it became counts.
            if before != _cmdline(pid) or before in ([], verger_itself):
                continue
            seen.setdefault(pid, " ".join(before)[:120])
            if PASSPHRASE.encode() in environ:
                holding.append(seen[pid])
        time.sleep(0.02)
    process.communicate()

    assert process.returncode == 0
    assert any("pgbackrest" in line for line in seen.values()), seen
    assert any("postgres" in line.split(" ")[0] for line in seen.values()), seen
    assert holding == []
