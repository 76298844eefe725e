"""The monitor section's sources and rules: what is measured, how often, how long kept."""

from __future__ import annotations

from verger.config.sections import Section


class SourcesSection(Section):
    """monitor: keys for scrapes, probes, heartbeats, business queries and rules."""
