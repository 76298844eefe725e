"""The promotion gate: a version reaches an environment with ``requires:`` only
after its newest deploy in the required environment passed its watch window.

An inconclusive window (one that saw fewer than ``watch.min_requests``
requests) is never a pass: nobody used the release, so nothing is known about it.
"""

from __future__ import annotations

from verger.deploy.watch import too_few
from verger.errors import DeployError
from verger.state import Row, Store

# How far back the gate looks for the version's deploys in the required environment.
LOOKBACK = 1000


def newest_deploy(store: Store, environment: str, version: str) -> Row | None:
    """The newest deploy (not rollback) of ``version`` in ``environment``."""
    for row in store.deploys(environment, limit=LOOKBACK):
        if row.kind == "deploy" and row.version == version:
            return row
    return None


def passed(row: Row | None) -> bool:
    """Whether a deploy succeeded with a watch window that passed."""
    return row is not None and row.status == "succeeded" and row.verdict == "passed"


def refusal(
    store: Store, environment: str, requires: str, version: str
) -> DeployError | None:
    """Why ``version`` may not go to ``environment`` yet, or None when it may."""
    row = newest_deploy(store, requires, version)
    if passed(row):
        return None
    force = "or pass --force to skip the gate"
    if row is None:
        return DeployError(
            f"{version} has not passed {requires}, which {environment} requires",
            f"deploy it to {requires} first, {force}",
        )
    if row.status in ("running", "interrupted"):
        return DeployError(
            f"the deploy of {version} to {requires} (#{row.id}) has not finished",
            f"wait for it ('verger status {requires}'), {force}",
        )
    if row.status == "succeeded" and row.verdict == "inconclusive":
        return DeployError(
            f"{version}'s watch window in {requires} {_saw(row)} (inconclusive)",
            f"send traffic to {requires} while it is watched (deploy {version} "
            "there again), or use --force",
        )
    if row.status == "succeeded":
        return DeployError(
            f"{version}'s watch window in {requires} did not finish "
            f"(deploy #{row.id}: {row.reason or 'no verdict recorded'})",
            f"deploy {version} to {requires} again, {force}",
        )
    outcome = "was rolled back" if row.status == "rolled_back" else row.status
    return DeployError(
        f"{version} {outcome} in {requires} (deploy #{row.id}: "
        f"{row.reason or 'no reason recorded'}), which {environment} requires",
        f"deploy a version that passes {requires}, {force}",
    )


def _saw(row: Row) -> str:
    counts = too_few(row.reason or "")
    if counts is None or counts[0] == 0:
        return "saw no traffic"
    seen, needed = counts
    return f"saw only {seen} of the {needed} requests watch.min_requests asks for"


def live_and_passed(store: Store, environment: str, version: str) -> bool:
    """Whether ``version`` is live in ``environment`` and its deploy there passed."""
    env = store.environment(environment)
    live = store.release(env.live_release) if env else None
    if live is None or live.version != version:
        return False
    return passed(newest_deploy(store, environment, version))
