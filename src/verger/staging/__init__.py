"""A production-shaped staging database holding no real personal data.

The CLI and the agent use only what is named here.
"""

from verger.staging.classify import Proposal, as_yaml, classify
from verger.staging.databases import RefreshError, Server
from verger.staging.fakes import Faker, MaskError
from verger.staging.plan import UnclassifiedError
from verger.staging.refresh import (
    LeakError,
    Outcome,
    RestartError,
    refresh,
    salt_of,
    section_of,
)
from verger.staging.status import leftovers, refreshes

__all__ = [
    "Faker",
    "LeakError",
    "MaskError",
    "Outcome",
    "Proposal",
    "RefreshError",
    "RestartError",
    "Server",
    "UnclassifiedError",
    "as_yaml",
    "classify",
    "leftovers",
    "refresh",
    "refreshes",
    "salt_of",
    "section_of",
]
