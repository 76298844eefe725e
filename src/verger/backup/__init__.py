"""Backups that count only once a restore proved them, PITR and drills.

The CLI and the agent use only what is named here.
"""

from verger.backup import health
from verger.backup.context import make_context
from verger.backup.drill import DrillResult, drill
from verger.backup.engines import engine_name, make_engine
from verger.backup.gaps import Gap, find_gaps
from verger.backup.leftovers import tidy
from verger.backup.lock import exclusive
from verger.backup.restore import parse_time, plan, reach, restore, unusable, when
from verger.backup.retention import apply as apply_retention
from verger.backup.runs import reconcile, take_backup
from verger.backup.verify import Verdict, to_verify, verify_backup

__all__ = [
    "DrillResult",
    "Gap",
    "Verdict",
    "apply_retention",
    "drill",
    "engine_name",
    "exclusive",
    "find_gaps",
    "health",
    "make_context",
    "make_engine",
    "parse_time",
    "plan",
    "reach",
    "reconcile",
    "restore",
    "take_backup",
    "tidy",
    "to_verify",
    "unusable",
    "verify_backup",
    "when",
]
