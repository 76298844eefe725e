"""verger check: each named check passes and fails on this machine, never raising."""

from __future__ import annotations

import os
import socket
import sqlite3
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from verger.checks import Check, checks_to_rows, register, run_checks, worst
from verger.checks import base as checks_base
from verger.checks.app import command_words
from verger.checks.host import disk_check
from verger.checks.network import port_check, webhook_check
from verger.checks.store import state_check


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def write_config(folder: Path, extra: str = "", **values: object) -> Path:
    settings = {
        "start": "python3 -m http.server $PORT",
        "build": "true",
        "state": ".verger/state.db",
        "router": "builtin",
        "staging_port": free_port(),
        "production_port": free_port(),
    } | values
    text = textwrap.dedent(
        f"""\
        app: shop
        state: "{settings["state"]}"
        build: "{settings["build"]}"
        start: "{settings["start"]}"
        environments:
          staging:
            listen: 127.0.0.1:{settings["staging_port"]}
          production:
            listen: 127.0.0.1:{settings["production_port"]}
            router: {settings["router"]}
            requires: staging
        """
    )
    path = folder / "verger.yml"
    path.write_text(text + extra, encoding="utf-8")
    return path


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


@pytest.fixture
def listener() -> Iterator[int]:
    """A real socket listening on a loopback port, closed afterwards."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_all_checks_pass_on_a_good_config(tmp_path: Path) -> None:
    """A valid config on this machine gives no failure and exit code 0."""
    checks = run_checks(write_config(tmp_path))
    names = [check.name for check in checks]
    assert names[:4] == ["config", "command.build", "command.start", "health-path"]
    assert {"port.staging", "port.production", "state", "disk"} <= set(names)
    assert all(check.status in ("ok", "skip") for check in checks), checks
    assert worst(checks) == 0


def test_invalid_config_fails_with_its_problems(tmp_path: Path) -> None:
    """An invalid config fails the config check with each problem; others skip."""
    path = tmp_path / "verger.yml"
    path.write_text("app: Shop\nstrat: x\nenvironments: {}\n")
    checks = by_name(run_checks(path))
    config = checks["config"]
    assert config.status == "fail"
    assert "verger.yml:1: app" in config.message
    assert "did you mean 'start'?" in config.message
    assert checks["ports"].status == "skip"
    assert worst(list(checks.values())) == 1


def test_missing_config_fails(tmp_path: Path) -> None:
    """No config in the folder fails the config check with a hint to run init."""
    config = by_name(run_checks(tmp_path))["config"]
    assert config.status == "fail"
    assert "verger init" in config.hint


def test_missing_binary_fails(tmp_path: Path) -> None:
    """A start command whose program is not on PATH fails, naming the program."""
    path = write_config(tmp_path, start="PORT=1 exec verger-no-such-program --x")
    start = by_name(run_checks(path))["command.start"]
    assert start.status == "fail"
    assert "verger-no-such-program not found on PATH" in start.message


def test_a_variable_nobody_sets_warns_and_verger_s_own_do_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """${NAME} unset here and not set by verger warns; $PORT and env keys do not."""
    monkeypatch.delenv("VERGER_TEST_NOT_SET", raising=False)
    path = write_config(tmp_path, start="${VERGER_TEST_NOT_SET} --port $PORT")
    start = by_name(run_checks(path))["command.start"]
    assert start.status == "warn"
    assert "${VERGER_TEST_NOT_SET} is not set here" in start.message
    assert "PORT" not in start.message

    monkeypatch.setenv("VERGER_TEST_NOT_SET", "python3")
    assert by_name(run_checks(path))["command.start"].status == "ok"


def test_relative_program_made_by_build_only_warns(tmp_path: Path) -> None:
    """A ./program that the build may create warns; without a build it fails."""
    start = by_name(run_checks(write_config(tmp_path, start="./bin/app")))
    assert start["command.start"].status == "warn"

    (tmp_path / "verger.yml").write_text(
        (tmp_path / "verger.yml").read_text().replace('build: "true"\n', "")
    )
    assert by_name(run_checks(tmp_path))["command.start"].status == "fail"

    program = tmp_path / "bin" / "app"
    program.parent.mkdir()
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    assert by_name(run_checks(tmp_path))["command.start"].status == "ok"


def test_command_words_skip_assignments_wrappers_and_builtins() -> None:
    """Programs are the first word of each simple command, after VAR= and exec."""
    line = "A=1 B='x y' exec node x.js | tee log && cd / ; env X=1 python3 -V; $APP"
    assert command_words(line) == ["node", "tee", "python3"]
    with pytest.raises(ValueError):
        command_words("echo 'unclosed")


def test_health_path_without_slash_fails(tmp_path: Path) -> None:
    """health.path without a leading / fails its own check with the fixed spelling."""
    path = write_config(tmp_path, extra="health:\n  path: healthz\n")
    check = by_name(run_checks(path))["health-path"]
    assert check.status == "fail"
    assert check.hint == "write it as /healthz"


def test_port_free_listening_and_held(listener: int) -> None:
    """A free port is ok, one another process listens on fails naming it,
    one bound without listening fails."""
    assert port_check("port.x", f"127.0.0.1:{free_port()}").status == "ok"

    busy = port_check("port.x", f"127.0.0.1:{listener}")
    assert busy.status == "fail"
    assert f"taken by another process (pid {os.getpid()}" in busy.message
    assert f"ss -ltnp 'sport = :{listener}'" in busy.hint

    ours = port_check("port.x", f"127.0.0.1:{listener}", router_group=os.getpgid(0))
    assert ours.status == "ok" and "verger's router" in ours.message

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        held = port_check("port.x", f"127.0.0.1:{holder.getsockname()[1]}")
    assert held.status == "fail"
    assert "cannot bind" in held.message


def test_port_check_through_config(tmp_path: Path, listener: int) -> None:
    """An environment whose port is taken shows it in that environment's check."""
    checks = by_name(run_checks(write_config(tmp_path, production_port=listener)))
    assert checks["port.production"].status == "fail"
    assert checks["port.staging"].status == "ok"


def test_haproxy_present_and_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """router: haproxy needs the binary: ok when installed, else fail with apt-get."""
    path = write_config(tmp_path, router="haproxy")
    found = by_name(run_checks(path))["haproxy"]
    assert found.status == "ok"
    assert "HAProxy version" in found.message

    monkeypatch.setenv("PATH", str(tmp_path))
    missing = by_name(run_checks(path))["haproxy"]
    assert missing.status == "fail"
    assert "apt-get install haproxy" in missing.hint


def test_haproxy_skipped_when_unused(tmp_path: Path) -> None:
    """Without router: haproxy the haproxy check is skipped."""
    assert by_name(run_checks(write_config(tmp_path)))["haproxy"].status == "skip"


def test_sqlite_state(tmp_path: Path) -> None:
    """The SQLite state is ok when creatable or openable, and fails when corrupt."""
    assert state_check(".verger/state.db", tmp_path).status == "ok"

    database = tmp_path / "state.db"
    sqlite3.connect(database).close()
    assert state_check(str(database), tmp_path).message.endswith("opens for writing")

    database.write_bytes(b"this is not a database" * 100)
    assert state_check(str(database), tmp_path).status == "fail"


def test_unwritable_state_folder_fails(tmp_path: Path) -> None:
    """A state path under a regular file cannot be created, even as root."""
    (tmp_path / "plain-file").write_text("")
    path = write_config(tmp_path, state="plain-file/sub/state.db")
    check = by_name(run_checks(path))["state"]
    assert check.status == "fail"
    assert "is a file, not a folder" in check.message


def test_postgres_state(tmp_path: Path) -> None:
    """A postgresql:// state is ok when the server answers, a fail when it does not."""
    up = state_check("postgresql://postgres@127.0.0.1:5432/postgres", tmp_path)
    assert up.status == "ok", up.message

    down = state_check(
        f"postgresql://postgres:secret@127.0.0.1:{free_port()}/postgres", tmp_path
    )
    assert down.status == "fail"
    assert "secret" not in down.message
    assert "postgres:***@127.0.0.1" in down.message


def test_webhook_reachable_or_not(listener: int) -> None:
    """A webhook host that accepts TCP is ok; one that refuses only warns, masked."""
    up = webhook_check("webhook.1", f"http://127.0.0.1:{listener}/hooks/T0/SECRET")
    assert up.status == "ok"
    assert "SECRET" not in up.message

    down = webhook_check("webhook.1", f"http://127.0.0.1:{free_port()}/T0/SECRET")
    assert down.status == "warn"
    assert down.severity == "warning"
    assert "SECRET" not in down.message


def test_webhooks_through_config(tmp_path: Path, listener: int) -> None:
    """Each configured webhook gets its own check; none configured is a skip."""
    assert by_name(run_checks(write_config(tmp_path)))["webhooks"].status == "skip"
    extra = f"notify:\n  webhooks:\n    - http://127.0.0.1:{listener}/x\n"
    checks = by_name(run_checks(write_config(tmp_path, extra=extra)))
    assert checks["webhook.1"].status == "ok"


def test_heartbeats_without_monitor_listen_warn_and_with_it_are_ok(
    tmp_path: Path,
) -> None:
    """Heartbeats with no monitor.listen warn (no URL answers) but fail nothing."""
    assert "heartbeats" not in by_name(run_checks(write_config(tmp_path)))
    extra = "monitor:\n  heartbeats:\n    nightly: {every: 1d}\n"
    checks = by_name(run_checks(write_config(tmp_path, extra=extra)))
    warned = checks["heartbeats"]
    assert (warned.status, warned.severity) == ("warn", "warning")
    assert "nightly" in warned.message and "monitor.listen" in warned.message
    assert "verger monitor heartbeat NAME" in warned.hint
    assert worst(list(checks.values())) == 0

    listen = f"  listen: 127.0.0.1:{free_port()}\n"
    checks = by_name(run_checks(write_config(tmp_path, extra=extra + listen)))
    assert checks["heartbeats"].status == "ok"
    assert "/heartbeat/NAME" in checks["heartbeats"].message


def test_disk(tmp_path: Path) -> None:
    """Free disk is ok on this machine, and fails under an impossible threshold."""
    assert disk_check(tmp_path / ".verger").status == "ok"
    short = disk_check(tmp_path, warn_below=2**62, fail_below=2**61)
    assert short.status == "fail"
    assert "GiB free" in short.message


def test_a_crashing_check_is_reported_not_raised(tmp_path: Path) -> None:
    """A check that raises becomes a failed check; the others still run."""

    @register("explodes", order=1)
    def explodes(context: checks_base.Context) -> list[Check]:
        raise RuntimeError("boom")

    try:
        checks = run_checks(write_config(tmp_path))
    finally:
        checks_base._REGISTRY[:] = [
            e for e in checks_base._REGISTRY if e[2] is not explodes
        ]
    assert checks[0] == Check(
        "explodes",
        "fail",
        "the check itself failed: RuntimeError: boom",
        "run with --debug and report the traceback",
    )
    assert "config" in {check.name for check in checks}


def test_rows_and_exit_code() -> None:
    """Rows follow the table's columns; only a fail makes the exit code 1."""
    checks = [
        Check("a", "ok", "fine"),
        Check("b", "warn", "hm", "look"),
        Check("c", "skip", "n/a"),
    ]
    assert checks_to_rows(checks)[1] == ("b", "warn", "hm", "look")
    assert worst(checks) == 0
    assert worst([*checks, Check("d", "fail", "broken")]) == 1
