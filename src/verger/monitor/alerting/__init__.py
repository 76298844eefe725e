"""Alerting: routing, grouping, muting and delivering alerts; incidents.

``make_dispatcher`` gives the ``AlertSink`` the rule evaluator sends to::

    dispatcher = make_dispatcher(loaded.config, store)
    await dispatcher.update(alerts, time.time())   # after each evaluation
    asyncio.create_task(dispatcher.run(stop))      # group waits end on time
    await dispatcher.drain(5.0)                    # at shutdown
"""

from __future__ import annotations

from verger.config.alerting import AlertingSection
from verger.config.model import Config
from verger.monitor.alerting.dispatcher import Dispatcher
from verger.monitor.alerting.incidents import AGENT, Incidents
from verger.monitor.alerting.maintenance import Window, muting, windows
from verger.monitor.alerting.matchers import Matcher, MatcherError, parse_matcher
from verger.monitor.alerting.notification import Notification
from verger.monitor.alerting.receivers import AlertReceiver, make_receivers
from verger.monitor.alerting.silences import Silence
from verger.state import Store


def make_dispatcher(config: Config, store: Store) -> Dispatcher:
    """The dispatcher for a config's ``monitor:`` section (none: sends nowhere)."""
    section = config.monitor if config.monitor is not None else AlertingSection()
    return Dispatcher(section, store, app=config.app)


__all__ = [
    "AGENT",
    "AlertReceiver",
    "Dispatcher",
    "Incidents",
    "Matcher",
    "MatcherError",
    "Notification",
    "Silence",
    "Window",
    "make_dispatcher",
    "make_receivers",
    "muting",
    "parse_matcher",
    "windows",
]
