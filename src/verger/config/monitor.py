"""The ``monitor:`` section of verger.yml: sources and rules, then alerting."""

from __future__ import annotations

from verger.config.alerting import AlertingSection
from verger.config.sources import SourcesSection


class Monitor(SourcesSection, AlertingSection):
    """What the agent measures, the rules it evaluates and where alerts go."""
