"""The monitor section's alerting: receivers, routes, inhibition and maintenance."""

from __future__ import annotations

from verger.config.sections import Section


class AlertingSection(Section):
    """monitor: keys for where alerts go and when they are held back."""
