"""``verger jobs``: the work the agent does on a schedule, its last run and its next."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from verger.agent.client import AgentClient
from verger.cli.main import Ctx, _store, cli, pass_ctx


def _stamp(at: float | None) -> str:
    if at is None:
        return ""
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _status(row: Any) -> str:
    if row is None:
        return "never run"
    if row.last_status == "running":
        return f"running (pid {row.pid})"
    if row.last_detail:
        separator = ": " if row.last_status == "failed" else " - "
        return f"{row.last_status}{separator}{row.last_detail}"
    return str(row.last_status or "")


@cli.command("jobs")
@pass_ctx
def jobs_command(c: Ctx) -> None:
    """Scheduled jobs: their cadence (UTC), last run and how it ended, next run."""
    from verger.scheduler import jobs_for, next_run

    jobs = jobs_for(c.loaded.config)
    if not jobs:
        c.out.result(
            [],
            f"No scheduled jobs: {c.loaded.path.name} has no backup: section.",
        )
        return
    if AgentClient(c.loaded).info() is None:
        c.out.warn("no agent is running, so no job runs; start it with 'verger up'")
    rows = {row.name: row for row in _store(c).jobs()}
    now = time.time()
    data: list[dict[str, Any]] = []
    table: list[list[str]] = []
    for job in jobs:
        row = rows.get(job.name)
        # A job that never ran is first due at the first slot after the agent starts.
        at = next_run(job.cron, row.last_started if row else None, now)
        data.append(
            {
                "name": job.name,
                "schedule": job.cron,
                "command": job.command(),
                "last_started": row.last_started if row else None,
                "last_finished": row.last_finished if row else None,
                "status": row.last_status if row else None,
                "detail": row.last_detail if row else None,
                "pid": row.pid if row else None,
                "next_run": at,
                "next_run_utc": _stamp(at),
                "overdue": at <= now,
            }
        )
        table.append(
            [
                job.name,
                job.cron,
                _stamp(row.last_started if row else None) or "never",
                _stamp(at) + (" (overdue)" if at <= now else ""),
                _status(row),
            ]
        )
    c.out.table(
        "Scheduled jobs",
        ["job", "schedule (UTC)", "last run", "next run", "status"],
        table,
        data=data,
    )
