"""The command line's answers to bad input: one line, a hint, an exit code."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
from conftest import VERGER, Project, config_text

from verger.deploy import process


def test_malformed_config_is_one_error_with_file_and_line(project: Project) -> None:
    """Broken YAML exits 2 naming verger.yml and the line, with no traceback."""
    project.write_config("app: x\nstart: [unclosed\nenvironments: {}\n")
    done = project.run("status")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "error: verger.yml:" in done.stderr and "not valid YAML" in done.stderr
    assert "hint:" in done.stderr


def test_unknown_and_contradictory_keys_are_listed_together(project: Project) -> None:
    """Every problem is listed with its line; an unknown key names the nearest one."""
    text = project.config.read_text()
    text = text.replace("keep_previous:", "keep_previus:").replace(
        "healthy_after: 2", "healthy_after: 0"
    )
    project.write_config(text)
    done = project.run("deploy", "staging", ".", "--version", "v1")
    assert done.returncode == 2
    assert "has 2 problems" in done.stderr
    assert "keep_previus: unknown key; did you mean 'keep_previous'?" in done.stderr
    assert "health.healthy_after" in done.stderr


def test_missing_config_names_the_remedy(project: Project) -> None:
    """No verger.yml: exit 2 and a hint to run verger init."""
    project.config.unlink()
    done = project.run("status")
    assert done.returncode == 2 and "verger init" in done.stderr


def test_json_errors_are_json(project: Project) -> None:
    """With --json, an error is a JSON object on stdout with error and hint."""
    done = project.run("--json", "deploy", "staging", ".", "--version", "v1")
    body = json.loads(done.stdout)
    assert done.returncode == 3 and body["kind"] == "AgentError" and body["hint"]


def test_debug_shows_the_traceback(project: Project) -> None:
    """--debug adds the traceback that is otherwise hidden."""
    done = project.run("--debug", "deploy", "staging", ".", "--version", "v1")
    assert done.returncode == 3 and "Traceback" in done.stderr


def test_unknown_environment_is_refused_with_the_known_ones(project: Project) -> None:
    """An environment not in the config exits 2, suggests the nearest and lists the real ones."""
    done = project.run("history", "prod")
    assert done.returncode == 2
    assert "no environment 'prod' in verger.yml; did you mean 'production'?" in (
        done.stderr
    )
    assert "staging, production" in done.stderr
    deploy = project.run("deploy", "stagin", ".", "--version", "v1")
    assert deploy.returncode == 2 and "did you mean 'staging'?" in deploy.stderr


def test_config_edited_under_a_running_agent_is_refused(project: Project) -> None:
    """After verger.yml changes, deploys are refused until the agent reloads it."""
    project.run("up", check=True)
    project.write_config(project.config.read_text().replace("30s", "40s"))
    done = project.deploy("staging", project.source("v1"), "v1")
    assert done.returncode == 4
    assert "changed since the agent started" in done.stderr
    assert "verger down --keep-serving" in done.stderr
    project.run("down", "--keep-serving", check=True)
    project.run("up", check=True)
    assert project.deploy("staging", project.source("v1"), "v1").returncode == 0


def test_down_works_after_the_config_was_broken_under_the_agent(
    project: Project,
) -> None:
    """A config broken while the agent runs still lets 'verger down' stop it."""
    project.run("up", check=True)
    pid = project.agent_pid()
    project.write_config(project.config.read_text() + "watch: [not, a, mapping]\n")
    assert project.run("status").returncode == 2

    done = project.run("down")
    assert done.returncode == 0, done.stderr
    assert "The agent stopped." in done.stdout
    assert pid is not None and process.start_time(pid) is None
    assert project.run("down").returncode == 2


def test_changed_router_kind_replaces_the_router_on_reload(project: Project) -> None:
    """Moving an environment from the built-in router to HAProxy takes effect on up."""
    project.run("up", check=True)
    assert project.deploy("staging", project.source("v1"), "v1").returncode == 0
    before = project.json("status", "staging")["environments"][0]["router"]
    project.write_config(config_text(project.ports, router="haproxy"))
    project.run("down", "--keep-serving", check=True)
    project.run("up", check=True)
    after = project.json("status", "staging")["environments"][0]["router"]
    assert after["kind"] == "haproxy" and after["running"]
    assert after["pid"] != before["pid"]
    assert project.get("staging")[1] == "v1"
    log = (project.root / ".verger" / "agent.log").read_text()
    assert "router changes from builtin" in log


def test_an_error_is_printed_once_without_log_lines(project: Project) -> None:
    """A failed command prints its error line and hint only: no log line, no second message."""
    project.run("up", check=True)
    assert project.deploy("staging", project.source("v1"), "v1").returncode == 0
    done = project.run("rollback", "staging")
    assert done.returncode == 4
    assert done.stderr.splitlines() == [
        "error: rollback of staging failed: there is no earlier release in staging "
        "other than the live v1 to roll back to",
        "hint: name one with --to VERSION, or deploy a fixed version",
    ]
    assert "failed" not in done.stdout


def test_global_options_work_after_the_subcommand(project: Project) -> None:
    """--json, --debug and -c PATH are read after the subcommand too."""
    elsewhere = project.root / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run(
        [*VERGER, "status", "--json", "-c", str(project.config)],
        capture_output=True, text=True, cwd=elsewhere, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["agent"] == {"running": False, "pid": None}

    debug = project.run("deploy", "staging", ".", "--version", "v1", "--debug")
    assert debug.returncode == 3 and "Traceback" in debug.stderr
    kept = project.run("logs", "staging", "-n", "5", "--json")
    assert kept.returncode == 1
    assert json.loads(kept.stdout)["error"] == "no release in staging"


def test_bad_versions_are_refused_naming_the_rule(project: Project) -> None:
    """A version with spaces, shell characters or over 64 characters is a usage error."""
    for version in ("1.0 beta", "v1;rm -rf /", "-v1", "v" * 65, "v1\n"):
        done = project.run("deploy", "staging", ".", "--version", version)
        assert done.returncode == 2, version
        assert done.stderr.splitlines()[0] == (
            f"error: the version {version!r} is not accepted: a version is 1 to 64 "
            "letters, digits, '.', '_', '+' or '-', starting with a letter or digit"
        )
    assert project.run("deploy", "staging", ".", "--version", "v" * 64).returncode == 3


def test_init_refusing_to_overwrite_exits_1(project: Project) -> None:
    """verger init where a verger.yml exists is refused with exit 1, not the config's 2."""
    done = subprocess.run(
        [*VERGER, "init"], capture_output=True, text=True, cwd=project.root, timeout=60
    )
    assert done.returncode == 1
    assert "already exists" in done.stderr and "--force" in done.stderr


def test_logs_line_count_zero_prints_nothing_and_negative_is_refused(
    project: Project,
) -> None:
    """logs -n 0 prints no line; -n -5 is refused with one error line."""
    project.run("up", check=True)
    assert project.deploy("staging", project.source("v1"), "v1").returncode == 0
    assert project.run("logs", "staging", "-n", "0", check=True).stdout == ""
    done = project.run("logs", "staging", "-n", "-5")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "error: Invalid value for '-n' / '--lines': -5 is not in the range x>=0.",
        "hint: see 'verger logs --help'",
    ]


def test_three_ups_at_once_start_one_agent(project: Project) -> None:
    """Concurrent 'verger up' commands start one agent; the others say it runs."""
    ups = [
        subprocess.Popen(
            [*VERGER, "-c", str(project.config), "up"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [(up.wait(60), *up.communicate()) for up in ups]
    pid = project.agent_pid()
    assert [code for code, _, _ in results] == [0, 0, 0], results
    said = sorted(out.strip() for _, out, _ in results)
    assert said == [
        f"The agent is already running (pid {pid}).",
        f"The agent is already running (pid {pid}).",
        f"The agent is started (pid {pid}).",
    ]
    assert all(err == "" for _, _, err in results)


@pytest.mark.parametrize("immutable", ["state folder", "store folder"])
def test_up_with_an_unwritable_state_folder_is_one_clear_error(
    project: Project, immutable: str
) -> None:
    """An immutable .verger, or store folder, makes 'up' say so in one line, not crash."""
    folder = project.root / ".verger"
    if immutable == "store folder":
        folder = project.root / "state"
        project.write_config(f"state: {folder}/state.db\n" + config_text(project.ports))
    folder.mkdir()
    if subprocess.run(["chattr", "+i", str(folder)], check=False).returncode:
        pytest.skip("chattr +i is not available here")
    try:
        done = project.run("up")
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    assert done.returncode == 1
    if immutable == "state folder":
        error = (
            f"error: cannot write verger's state folder {folder}: "
            "Operation not permitted (agent.start.lock)"
        )
    else:
        error = (
            f"error: cannot open the state store {folder}/state.db: "
            "unable to open database file"
        )
    assert done.stderr.splitlines() == [
        error,
        "hint: check that the folder exists and is writable",
    ]
    assert project.agent_pid() is None


def read_all(leader: int) -> bytes:
    """What is left to read on a terminal whose other side has closed."""
    data = b""
    while True:
        try:
            chunk = os.read(leader, 1024)
        except OSError:  # EIO once the program on the other side is gone
            break
        if not chunk:
            break
        data += chunk
    os.close(leader)
    return data


def test_deploy_asks_for_approval_on_a_terminal(project: Project) -> None:
    """deploy to an environment with approval: manual asks on the terminal, like release."""
    import pty

    project.write_config(config_text(project.ports, approval="manual"))
    project.run("up", check=True)
    source = str(project.source("v1"))
    refused = project.run("deploy", "production", source, "--version", "v1")
    assert refused.returncode == 4
    assert refused.stderr.splitlines() == [
        "error: production needs approval and there is no terminal to ask on",
        "hint: pass --yes to approve",
    ]

    leader, follower = pty.openpty()
    asked = subprocess.Popen(
        [*VERGER, "-c", str(project.config), "deploy", "production", source,
         "--version", "v1"],
        stdin=follower, stdout=follower, stderr=follower, cwd=project.root,
    )  # fmt: skip
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 30
    while b"Release v1 to production? [y/N]" not in seen:
        assert time.monotonic() < deadline, seen
        seen += os.read(leader, 1024)
    os.write(leader, b"n\n")
    assert asked.wait(60) == 4
    seen += read_all(leader)
    assert b"the release of v1 to production was not approved" in seen

    done = project.run("deploy", "production", source, "--version", "v1", "--yes")
    assert done.returncode == 0, done.stderr
    assert project.get("production")[1] == "v1"


@pytest.mark.parametrize(
    ("args", "where"),
    [
        (["staging", "refresh", "--snapshot=yes"], "verger staging refresh"),
        (["--json", "staging", "refresh", "--snapshot=yes"], "verger staging refresh"),
        (["-c", "x.yml", "backup", "run", "--no-verify=1"], "verger backup run"),
        (["backup", "nosuch"], "verger backup"),
    ],
)
def test_an_option_given_a_value_it_does_not_take_points_at_its_command(
    tmp_path, args: list[str], where: str
) -> None:
    """A flag given a value (which click reports without its command) and an
    unknown subcommand are one line, exit 2, with a hint naming the help of
    the command typed, global options before it or not."""
    done = subprocess.run(
        [*VERGER, *args], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert f"see '{where} --help'" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
