"""The promotion gate: only a watch window that passed lets a version go on."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import Project, Traffic, config_text

from verger.deploy import gate
from verger.state import Store, open_store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_store(".verger/state.db", tmp_path)


def staging_deploy(store: Store, version: str, **fields: object) -> int:
    deploy_id = store.add_deploy("staging", "deploy", version, "tester")
    store.update_deploy(deploy_id, **fields)
    return deploy_id


def refused(store: Store, version: str = "v1") -> str:
    error = gate.refusal(store, "production", "staging", version)
    assert error is not None
    return f"{error.message} | {error.hint}"


def test_passed_window_opens_the_gate(store: Store) -> None:
    """A version whose newest staging deploy passed its watch window may go on."""
    staging_deploy(store, "v1", status="succeeded", verdict="passed")
    assert gate.refusal(store, "production", "staging", "v1") is None


def test_never_deployed_version_is_refused(store: Store) -> None:
    """A version never deployed to staging is refused, naming the gate."""
    assert refused(store).startswith(
        "v1 has not passed staging, which production requires"
    )


def test_window_with_fewer_requests_than_min_requests_is_not_a_pass(
    store: Store,
) -> None:
    """An inconclusive window that saw a few requests says how many were needed."""
    staging_deploy(
        store,
        "v1",
        status="succeeded",
        verdict="inconclusive",
        reason="only 3 requests in 10s (at least 50 needed to judge)",
    )
    assert refused(store) == (
        "v1's watch window in staging saw only 3 of the 50 requests "
        "watch.min_requests asks for (inconclusive) | send traffic to staging while "
        "it is watched (deploy v1 there again), or use --force"
    )


def test_newest_deploy_decides_not_an_older_pass(store: Store) -> None:
    """A pass followed by a rollback of the same version in staging is refused."""
    staging_deploy(store, "v1", status="succeeded", verdict="passed")
    staging_deploy(
        store,
        "v1",
        status="rolled_back",
        verdict="breached",
        reason="watch window breached: error rate 9.0% > 1.0%",
    )
    assert refused(store).startswith(
        "v1 was rolled back in staging (deploy #2: watch window breached: error rate"
    )


def test_unfinished_or_unjudged_deploys_are_refused(store: Store) -> None:
    """A deploy still running, or kept live without a verdict, is no pass."""
    staging_deploy(store, "v1", status="running")
    assert "(#1) has not finished" in refused(store)
    staging_deploy(
        store, "v2", status="succeeded", reason="interrupted at watch; kept live"
    )
    assert "v2's watch window in staging did not finish" in refused(store, "v2")


def test_production_refuses_a_version_whose_staging_window_saw_no_traffic(
    project: Project,
) -> None:
    """Inconclusive in staging (no traffic) is refused in production until watched with traffic."""
    project.write_config(config_text(project.ports, requires="staging"))
    project.run("up", check=True)
    assert project.deploy("staging", project.source("v1"), "v1").returncode == 0

    done = project.deploy("production", project.source("v1"), "v1")
    assert done.returncode == 4
    assert done.stderr.splitlines() == [
        "error: v1's watch window in staging saw no traffic (inconclusive)",
        "hint: send traffic to staging while it is watched (deploy v1 there again), "
        "or use --force",
    ]

    with Traffic(project.ports["staging"]):
        time.sleep(0.3)
        again = project.deploy("staging", project.source("v1"), "v1")
    assert again.returncode == 0 and "watch window passed" in again.stdout
    assert project.deploy("production", project.source("v1"), "v1").returncode == 0
