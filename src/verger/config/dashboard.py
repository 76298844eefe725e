"""The ``dashboard:`` section of verger.yml: where the agent serves the ops dashboard."""

from __future__ import annotations

from verger.config.sections import Section
from verger.config.types import Listen


class Dashboard(Section):
    """The web page and JSON API, behind the dashboard token, on ``listen``."""

    listen: Listen
