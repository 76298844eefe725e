"""What a receiver is given: one group's alerts at one moment, and why it is sent."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from verger.monitor.alert import Alert

Reason = Literal["new", "changed", "repeat", "resolved"]
LINES = 30
"""Alerts listed one per line in a message before the rest are counted."""


def stamp(at: float | None) -> str | None:
    """A timestamp as ISO 8601 in UTC, as receivers expect."""
    return None if at is None else datetime.fromtimestamp(at, UTC).isoformat()


def alert_dict(alert: Alert, status: str | None = None) -> dict[str, Any]:
    """An alert as plain JSON, the same in every receiver's body and in the log."""
    return {
        "status": status or str(alert.state),
        "fingerprint": alert.fingerprint,
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "active_at": stamp(alert.active_at),
        "fired_at": stamp(alert.fired_at),
        "resolved_at": stamp(alert.resolved_at),
        # NaN and infinities are not JSON; receivers' parsers refuse them.
        "value": alert.value
        if alert.value is not None and math.isfinite(alert.value)
        else None,
    }


def _common(maps: Sequence[Mapping[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = dict(maps[0])
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in maps[1:])}


@dataclass(frozen=True)
class Notification:
    """One group's alerts for one receiver: those firing and those just resolved.

    ``first`` is true when this receiver has not been told of any firing
    alert of the group before (a ticket is opened then, not on later news).
    """

    app: str
    receiver: str
    group_key: str
    group_labels: Mapping[str, str]
    firing: tuple[Alert, ...]
    resolved: tuple[Alert, ...]
    reason: Reason
    first: bool
    at: float
    incident_id: int | None = None

    @property
    def status(self) -> str:
        return "firing" if self.firing else "resolved"

    @property
    def alerts(self) -> tuple[Alert, ...]:
        return self.firing + self.resolved

    @property
    def common_labels(self) -> dict[str, str]:
        return _common([alert.labels for alert in self.alerts])

    @property
    def common_annotations(self) -> dict[str, str]:
        return _common([alert.annotations for alert in self.alerts])

    @property
    def severity(self) -> str:
        """The most urgent severity among the firing alerts (or all, once resolved)."""
        order = ("critical", "high", "medium")
        found = {alert.severity for alert in (self.firing or self.resolved)}
        return next((level for level in order if level in found), "medium")

    @property
    def dedup_key(self) -> str:
        """The group's identity at a paging or ticket service: one per group."""
        digest = hashlib.sha256(f"{self.app}\0{self.group_key}".encode()).hexdigest()
        return f"verger-{digest[:32]}"

    @property
    def title(self) -> str:
        """``[FIRING:3] api_down environment=production``, as a subject or a summary."""
        count = len(self.firing) if self.firing else len(self.resolved)
        name = self.group_labels.get("alertname") or self.common_labels.get(
            "alertname", "alerts"
        )
        rest = " ".join(
            f"{k}={v}" for k, v in sorted(self.group_labels.items()) if k != "alertname"
        )
        prefix = f"{self.app}: " if self.app else ""
        title = f"[{self.status.upper()}:{count}] {prefix}{name}"
        return f"{title} {rest}" if rest else title

    def lines(self, limit: int = LINES) -> list[str]:
        """One line per alert, firing first: its summary, or its labels.

        Past ``limit`` alerts one line says how many more there are; the
        structured ``alerts`` field of a body always holds them all.
        """
        found = []
        for label, group in (("firing", self.firing), ("resolved", self.resolved)):
            for alert in group:
                found.append(f"- {label}: {_describe(alert)}")
        if len(found) > limit:
            found = [*found[:limit], f"- and {len(found) - limit} more"]
        return found

    def text(self) -> str:
        """The whole notification for a person: the title, then each alert."""
        lines = [self.title, *self.lines()]
        if self.incident_id is not None:
            lines.append(f"incident #{self.incident_id}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "receiver": self.receiver,
            "status": self.status,
            "reason": self.reason,
            "group_key": self.group_key,
            "group_labels": dict(self.group_labels),
            "common_labels": self.common_labels,
            "common_annotations": self.common_annotations,
            "incident": self.incident_id,
            "alerts": [alert_dict(a, "firing") for a in self.firing]
            + [alert_dict(a, "resolved") for a in self.resolved],
            "at": stamp(self.at),
        }


def _describe(alert: Alert) -> str:
    summary = alert.annotations.get("summary") or alert.annotations.get("description")
    if summary:
        return summary
    shown = ", ".join(
        f"{k}={v}" for k, v in sorted(alert.labels.items()) if k not in ("severity",)
    )
    return shown or alert.fingerprint
