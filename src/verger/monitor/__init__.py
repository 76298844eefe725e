"""Monitoring: sources, the metric store, rules, alerting, incidents, the dashboard.

The CLI, the agent and the web layer use only what is named here.
"""

from verger.monitor.alert import SEVERITIES, Alert, AlertSink, AlertState, fingerprint

__all__ = ["SEVERITIES", "Alert", "AlertSink", "AlertState", "fingerprint"]
