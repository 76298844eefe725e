"""The jobs the agent runs on a schedule, as ``verger`` commands.

Each subsystem with work on a cadence contributes a planner: a function from
the config to its jobs. ``jobs_for`` asks every planner, so a new subsystem
(the nightly staging refresh, the monitor's digests) adds its jobs by adding
one function to ``PLANNERS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from verger.config import Config


@dataclass(frozen=True)
class Job:
    """Work the agent starts on its own: a verger command, when ``cron`` (UTC) says.

    ``argv`` is what follows ``verger -c CONFIG --json``; for example
    ``Job("backup-full", "0 */6 * * *", ("backup", "run", "--type", "full"))``.
    """

    name: str
    cron: str
    argv: tuple[str, ...]

    def command(self) -> str:
        """The command as a person would type it, for logs and listings."""
        return " ".join(("verger", *self.argv))


def backup_jobs(config: Config) -> list[Job]:
    """Backups of each kind that has a cadence, and the disaster-recovery drill."""
    if config.backup is None:
        return []
    schedule = config.backup.schedule
    verify = () if schedule.verify else ("--no-verify",)
    jobs = [
        Job(f"backup-{kind}", cron, ("backup", "run", "--type", kind, *verify))
        for kind, cron in (
            ("full", schedule.full),
            ("diff", schedule.diff),
            ("incr", schedule.incr),
        )
        if cron
    ]
    if schedule.drill:
        jobs.append(Job("drill", schedule.drill, ("dr", "drill")))
    if schedule.watch:
        # Archiving and freshness checked on a cadence: alerts need no one typing.
        jobs.append(Job("backup-watch", schedule.watch, ("backup", "watch")))
    return jobs


def staging_jobs(config: Config) -> list[Job]:
    """The nightly refresh of the staging database from production."""
    if config.staging is None or config.staging.refresh is None:
        return []
    return [Job("staging-refresh", config.staging.refresh, ("staging", "refresh"))]


Planner = Callable[[Config], list[Job]]

# One planner per subsystem that has work on a cadence.
PLANNERS: tuple[Planner, ...] = (backup_jobs, staging_jobs)


def jobs_for(config: Config) -> list[Job]:
    """Every scheduled job the config asks for, in the order they are listed."""
    return [job for planner in PLANNERS for job in planner(config)]
