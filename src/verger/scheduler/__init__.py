"""The scheduler: the planning document's cadences, run by the agent.

``jobs_for(config)`` says which jobs the config asks for (backups every six
hours, a weekly drill, ...); ``Scheduler.tick`` starts the due one as a
``verger`` command and records how it ended; ``run_scheduler`` is the
agent's loop around it.
"""

from verger.scheduler.jobs import PLANNERS, Job, jobs_for
from verger.scheduler.scheduler import Scheduler, next_run, outcome, run_scheduler, utc

__all__ = [
    "PLANNERS",
    "Job",
    "Scheduler",
    "jobs_for",
    "next_run",
    "outcome",
    "run_scheduler",
    "utc",
]
