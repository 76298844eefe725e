"""SIGKILL of the agent and the CLI at every step of a deploy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import Project, Traffic, config_text

# Where the agent is killed, and whether the next command finishes the
# interrupted deploy (the new release stays live) or undoes it.
POINTS = [
    ("step:build", "undid"),
    ("step:start", "undid"),
    ("step:health", "undid"),
    ("step:smoke", "undid"),
    ("step:switch", "undid"),
    ("switched", "undid"),
    ("step:watch", "undid"),
    ("step:keep_previous", "finished"),
]


def wait_for_log(project: Project, text: str, timeout: float = 30) -> None:
    log = project.root / ".verger" / "agent.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"the agent never logged {text!r}")


@pytest.mark.parametrize(("point", "outcome"), POINTS)
def test_agent_killed_at_each_step_leaves_users_served_and_is_recovered(
    project: Project, point: str, outcome: str
) -> None:
    """Killed at any step: no request fails, status tells the truth, the next command recovers."""
    project.write_config(
        config_text(
            project.ports,
            watch="{duration: 2s, max_error_rate: 5%, max_p95: 2s, interval: 100ms}",
        )
    )
    project.run("up", check=True)
    project.deploy("staging", project.source("v1"), "v1")
    project.run("down", "--keep-serving", check=True)
    project.run("up", check=True, env={"VERGER_PAUSE_AT": point})

    with Traffic(project.ports["staging"], clients=4) as traffic:
        cli = subprocess.Popen(
            [*[sys.executable, "-m", "verger"], "-c", str(project.config), "deploy",
             "staging", str(project.source("v2")), "--version", "v2"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_log(project, f"Pausing at {point}")
        os.kill(project.agent_pid() or 0, signal.SIGKILL)
        cli.kill()
        cli.wait()
        time.sleep(0.3)

        status = project.json("status", "staging")
        unfinished = status["environments"][0]["unfinished"]
        assert not status["agent"]["running"]
        assert [(d["version"], d["status"]) for d in unfinished] == [
            ("v2", "interrupted")
        ]
        assert unfinished[0]["step"] == point.removeprefix("step:").replace(
            "switched", "switch"
        )

        project.run("up", check=True)
        done = project.run(
            "deploy", "staging", str(project.source("v3")), "--version", "v3"
        )
        time.sleep(0.3)

    assert done.returncode == 0, done.stderr
    assert f"Recovered: {outcome} deploy" in done.stdout
    assert traffic.failed == [], traffic.failed[:5]
    assert project.get("staging")[1] == "v3"
    history = {d["version"]: d["status"] for d in project.json("history", "staging")}
    assert history["v2"] == ("succeeded" if outcome == "finished" else "undone")
    running = [
        r["version"]
        for r in [project.json("status", "staging")["environments"][0]["live"]]
        + project.json("status", "staging")["environments"][0]["previous"]
    ]
    assert "v2" not in running or outcome == "finished"


def start_deploy(project: Project, version: str) -> subprocess.Popen[bytes]:
    """A deploy from the CLI in the background, as a user's terminal would run it."""
    return subprocess.Popen(
        [sys.executable, "-m", "verger", "-c", str(project.config), "deploy",
         "staging", str(project.source(version)), "--version", version],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def test_rollback_after_an_interrupted_deploy_goes_back_one_release(
    project: Project,
) -> None:
    """Undoing a deploy killed in its watch window is the rollback: 4.1 serves, not 4.0."""
    project.run("up", check=True)
    project.deploy("staging", project.source("4.0"), "4.0")
    project.deploy("staging", project.source("4.1"), "4.1")
    project.write_config(
        config_text(
            project.ports, watch="{duration: 30s, max_error_rate: 5%, max_p95: 2s}"
        )
    )
    project.run("down", "--keep-serving", check=True)
    project.run("up", check=True)

    with Traffic(project.ports["staging"]) as traffic:
        cli = start_deploy(project, "5.0")
        wait_for_log(project, "Deploy #3: Watching for 30s")
        os.kill(project.agent_pid() or 0, signal.SIGKILL)
        cli.kill()
        cli.wait()
        project.run("up", check=True)
        done = project.run("rollback", "staging")
        time.sleep(0.3)

    assert done.returncode == 0, done.stderr
    assert "Recovered: undid deploy #3 (5.0), interrupted at watch" in done.stdout
    assert "Undoing the interrupted deploy was the rollback: 4.1 serves" in done.stdout
    assert "Rolled staging back to 4.1." in done.stdout
    assert project.get("staging")[1] == "4.1"
    assert traffic.failed == [], traffic.failed[:5]
    rollback = project.json("history", "staging")[0]
    assert (rollback["kind"], rollback["version"], rollback["status"]) == (
        "rollback",
        "4.1",
        "succeeded",
    )


def test_status_says_running_while_the_agent_runs_it_and_interrupted_after(
    project: Project,
) -> None:
    """status calls a deploy running only while its agent lives, in table and warning."""
    project.run("up", check=True)
    project.deploy("staging", project.source("v1"), "v1")
    project.run("down", "--keep-serving", check=True)
    project.run("up", check=True, env={"VERGER_PAUSE_AT": "step:watch"})
    cli = start_deploy(project, "v2")
    try:
        wait_for_log(project, "Pausing at step:watch")
        running = project.run("status", "staging", check=True)
        os.kill(project.agent_pid() or 0, signal.SIGKILL)
    finally:
        cli.kill()
        cli.wait()
    after = project.run("status", "staging", check=True)

    assert "#2 v2 running" in running.stdout
    assert "warning: staging: deploy #2 of v2 is running at step watch" in (
        running.stderr
    )
    assert "finishes or undoes" not in running.stderr
    assert "Agent: not running" in after.stdout
    assert "#2 v2 interrupted" in after.stdout and "v2 running" not in after.stdout
    assert (
        "warning: staging: deploy #2 of v2 was interrupted at step watch; the next "
        "deploy or rollback finishes or undoes it" in after.stderr
    )


def _working_in(folder: str) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                cwd = os.readlink(f"/proc/{entry.name}/cwd")
            except OSError:
                continue
            if cwd.startswith(folder):
                found.append(int(entry.name))
    return found


def test_a_build_left_running_by_a_killed_agent_is_stopped_when_undone(
    project: Project,
) -> None:
    """The build a killed agent was running is stopped when its deploy is undone."""
    text = config_text(project.ports).replace(
        "app: testapp\n", "app: testapp\nbuild: sleep 60\n"
    )
    project.write_config(text)
    project.run("up", check=True)
    cli = subprocess.Popen(
        [*[sys.executable, "-m", "verger"], "-c", str(project.config), "deploy",
         "staging", str(project.source("v1")), "--version", "v1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    releases = str(project.root / ".verger" / "releases")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not _working_in(releases):
        time.sleep(0.05)
    building = _working_in(releases)
    assert building, "the build never started"
    os.kill(project.agent_pid() or 0, signal.SIGKILL)
    cli.kill()
    cli.wait()

    project.write_config(config_text(project.ports))
    project.run("up", check=True)
    done = project.run(
        "deploy", "staging", str(project.source("v2")), "--version", "v2"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "undid deploy" in done.stdout
    assert not [pid for pid in building if os.path.exists(f"/proc/{pid}")]
