"""The command line's answers to bad input: one line, a hint, an exit code."""

from __future__ import annotations

from conftest import Project


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
    import json

    done = project.run("--json", "deploy", "staging", ".", "--version", "v1")
    body = json.loads(done.stdout)
    assert done.returncode == 3 and body["kind"] == "AgentError" and body["hint"]


def test_debug_shows_the_traceback(project: Project) -> None:
    """--debug adds the traceback that is otherwise hidden."""
    done = project.run("--debug", "deploy", "staging", ".", "--version", "v1")
    assert done.returncode == 3 and "Traceback" in done.stderr


def test_unknown_environment_is_refused_with_the_known_ones(project: Project) -> None:
    """A read command for an environment not in the config lists the real ones."""
    done = project.run("history", "prod")
    assert done.returncode == 1
    assert (
        "no environment 'prod'" in done.stderr and "staging, production" in done.stderr
    )


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


def test_changed_router_kind_replaces_the_router_on_reload(project: Project) -> None:
    """Moving an environment from the built-in router to HAProxy takes effect on up."""
    from conftest import config_text

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
