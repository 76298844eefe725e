"""Monitoring: sources, the metric store, rules, alerting, incidents, the dashboard.

The CLI, the agent and the web layer use only what is named here, and
``verger.monitor.build`` (the monitor made from verger.yml) and
``verger.monitor.export`` (Prometheus files), which import the config and
are left out of this module so that the config can import it.
"""

from verger.monitor.alert import SEVERITIES, Alert, AlertSink, AlertState, fingerprint
from verger.monitor.loop import MonitorLoop
from verger.monitor.rules import Rule, RuleEngine, default_rules
from verger.monitor.store import Matcher, MetricStore, Series

__all__ = [
    "SEVERITIES",
    "Alert",
    "AlertSink",
    "AlertState",
    "Matcher",
    "MetricStore",
    "MonitorLoop",
    "Rule",
    "RuleEngine",
    "Series",
    "default_rules",
    "fingerprint",
]
