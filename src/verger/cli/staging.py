"""``verger staging``: refresh the staging database from production, masked.

A refresh runs in the command's own process (the agent only schedules it);
one refresh per staging database at a time.
"""

from __future__ import annotations

import time
from typing import Any

import click

from verger.cli.main import Ctx, _follow, _store, cli, pass_ctx
from verger.errors import DeployError


@cli.group()
def staging() -> None:
    """The staging database: refreshed from production with personal data masked."""


@staging.command("refresh")
@click.option(
    "--snapshot",
    "use_snapshot",
    is_flag=True,
    help="Copy production with pg_dump now instead of its newest verified backup.",
)
@pass_ctx
def staging_refresh(c: Ctx, use_snapshot: bool) -> None:
    """Build a masked copy of production, swap it in, restart staging's release."""
    from verger.staging import refresh

    store = _store(c)
    with c.out.progress("Refreshing staging") as bar:

        def progress(step: str, done: int, total: int) -> None:
            bar(completed=done, total=total, description=step)

        outcome = refresh(
            c.loaded,
            store,
            use_snapshot=use_snapshot,
            progress=progress,
            restart=lambda: _restart(c),
        )
    for note in outcome.notes:
        c.out.say(f"Note: {note}.")
    human = (
        f"Refresh #{outcome.refresh_id}: staging now holds {outcome.source}, "
        f"{outcome.rows_masked} rows masked, {outcome.values_scanned} values "
        f"scanned, no leak ({outcome.seconds:.1f}s)."
    )
    if outcome.restart:
        human += f" {outcome.restart}"
    c.out.result(outcome.to_dict(), human)


def _restart(c: Ctx) -> str:
    """Redeploy staging's live release through the agent, so its users see no failure."""
    from verger.agent.client import AgentClient
    from verger.state import actor

    environment = (
        c.loaded.config.staging.environment if c.loaded.config.staging else None
    )
    if environment is None:
        return ""
    client = AgentClient(c.loaded)
    if client.info() is None:
        return (
            f"The agent is not running, so {environment}'s release was not restarted."
        )
    store = _store(c)
    row = store.environment(environment)
    live = store.release(row.live_release) if row is not None else None
    if live is None:
        return f"{environment} has no live release to restart."
    started = client.call(
        "POST",
        "/v1/deploys",
        {
            "kind": "deploy",
            "environment": environment,
            "source": live.source,
            "version": live.version,
            "force": True,
            "actor": actor(),
        },
    )
    result = _follow(c, client, int(started["deploy_id"]))
    if result.get("status") != "succeeded":
        raise DeployError(
            f"the redeploy of {live.version} to {environment} did not pass: "
            f"{result.get('reason')}",
            "the release that was live keeps serving",
        )
    return f"Redeployed {live.version} to {environment}; its smoke tests passed."


@staging.command("status")
@click.option("--limit", default=20, show_default=True, help="How many refreshes.")
@pass_ctx
def staging_status(c: Ctx, limit: int) -> None:
    """Past refreshes, newest first, and databases an interrupted one left."""
    from verger.staging import Server, leftovers, refreshes, section_of

    section = section_of(c.loaded)
    server = Server(c.loaded.config.databases[section.target])
    rows = refreshes(_store(c), server, limit)
    left = leftovers(server, rows)
    c.out.table(
        f"Refreshes of {server.live}",
        ["#", "started", "took", "status", "source", "rows masked", "leaks", "detail"],
        [_row(r) for r in rows],
        data={"refreshes": rows, "left_behind": left},
    )
    for name in left:
        c.out.say(
            f"{name} was left by an interrupted refresh; the next refresh drops it."
        )


def _row(r: dict[str, Any]) -> list[Any]:
    took = ""
    if r.get("finished_at"):
        took = f"{r['finished_at'] - r['started_at']:.0f}s"
    started = time.strftime("%Y-%m-%d %H:%M", time.gmtime(r["started_at"]))
    return [
        r["id"],
        started,
        took,
        r["status"],
        r.get("source") or "",
        r.get("rows_masked") if r.get("rows_masked") is not None else "",
        r.get("leaks") if r.get("leaks") is not None else "",
        r.get("detail") or "",
    ]


@staging.command("classify")
@click.option("--all", "every", is_flag=True, help="Propose rules for every column.")
@pass_ctx
def staging_classify(c: Ctx, every: bool) -> None:
    """Propose a rule for each column not yet under staging.mask or staging.keep."""
    from verger.staging import as_yaml, classify, section_of

    section = section_of(c.loaded)
    proposals = classify(
        c.loaded.config.databases[section.source], section, section.region, every
    )
    data = [{"column": p.column, "rule": p.rule, "reason": p.reason} for p in proposals]
    if not proposals:
        c.out.result(data, "Every column is classified.")
        return
    c.out.result(
        data,
        "Proposed rules (review them, then add them to verger.yml):\n"
        + as_yaml(proposals),
    )
