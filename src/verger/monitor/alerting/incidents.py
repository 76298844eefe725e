"""Incidents: a critical alert group's life, from detection to resolution.

A group with a firing critical alert (not silenced, inhibited or muted by
maintenance) opens one incident, however many alerts it holds. It is
*detected* when the first alert fired, *acknowledged* when someone says so,
*resolved* when every critical alert of the group cleared or someone
resolves it. A group that fires again within ``REOPEN`` of an automatic
resolution reopens its incident rather than opening another, so a flapping
condition is one incident. Time to detect is from the condition's start
(the first alert's ``active_at``) to detection; time to restore is from
detection to resolution.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from verger.monitor.alert import Alert, AlertState
from verger.state import Row, Store

log = logging.getLogger("verger.monitor.alerting")

AGENT = "verger"
"""The actor recorded for what the agent does on its own."""
REOPEN = 600.0


class Incidents:
    """Opens and resolves incidents as groups' critical alerts fire and clear."""

    def __init__(self, store: Store, reopen: float = REOPEN) -> None:
        self.store = store
        self.reopen = reopen
        self._ids: dict[str, int] = {}
        self._counts: dict[int, int] = {}
        # Groups whose incident a person resolved while its alerts still fire.
        self._by_hand: set[str] = set()

    def id_for(self, group_key: str) -> int | None:
        return self._ids.get(group_key)

    def track(
        self,
        view: Sequence[tuple[str, str, Mapping[str, str], Sequence[Alert]]],
        now: float,
    ) -> None:
        """Open, reopen or resolve each group's incident from its alerts at ``now``."""
        for key, title, labels, alerts in view:
            critical = [alert for alert in alerts if alert.severity == "critical"]
            if not critical:
                continue
            firing = [alert for alert in critical if alert.state is AlertState.FIRING]
            if key in self._by_hand:
                if not firing:
                    self._by_hand.discard(key)
                continue
            incident_id = self._ids.get(key) or self._stored(key)
            if firing and incident_id is None:
                self._open(key, title, dict(labels), firing, now)
            elif incident_id is not None and not firing:
                self._resolve(incident_id, key, critical, now)
            elif incident_id is not None and firing:
                self._count(incident_id, len(firing))

    def _stored(self, key: str) -> int | None:
        row = self.store.open_incident(key)
        if row is None:
            return None
        self._ids[key] = int(row.id)
        return int(row.id)

    def _open(
        self,
        key: str,
        title: str,
        labels: dict[str, str],
        firing: Sequence[Alert],
        now: float,
    ) -> None:
        started = min(alert.active_at for alert in firing)
        detected = min(alert.fired_at or now for alert in firing)
        latest = self.store.latest_incident(key)
        if latest is not None and self._resolved_by_hand(latest, firing):
            # Someone closed it while these alerts fired (an agent restarted
            # since): they are not a new incident until they clear.
            self._by_hand.add(key)
            return
        if latest is not None and self._reopens(latest, now):
            self._reopen(latest, len(firing), now)
            return
        incident_id = self.store.add_incident(
            key, title, "critical", labels, started, detected, len(firing)
        )
        self._ids[key] = incident_id
        self.store.add_incident_note(incident_id, "detected", title, AGENT, detected)
        self.store.audit(
            AGENT,
            "incident_detected",
            labels.get("environment"),
            incident=incident_id,
            title=title,
        )
        log.warning(
            "Incident #%d opened: %s (%d critical %s, detected %.0fs after the "
            "condition started)",
            incident_id,
            title,
            len(firing),
            "alert" if len(firing) == 1 else "alerts",
            detected - started,
        )

    def _resolved_by_hand(self, row: Row, firing: Sequence[Alert]) -> bool:
        fired = min(alert.fired_at or alert.active_at for alert in firing)
        return bool(
            row.status == "resolved"
            and row.resolved_by not in (None, AGENT)
            and row.resolved_at is not None
            and float(row.resolved_at) >= fired
        )

    def _reopens(self, row: Row, now: float) -> bool:
        return bool(
            row.status == "resolved"
            and row.resolved_by == AGENT
            and row.resolved_at is not None
            and now - float(row.resolved_at) < self.reopen
        )

    def _reopen(self, row: Row, count: int, now: float) -> None:
        incident_id = int(row.id)
        self.store.update_incident(
            incident_id,
            status="acknowledged" if row.acknowledged_at is not None else "detected",
            resolved_at=None,
            resolved_by=None,
            alerts=max(count, int(row.alerts)),
        )
        self._ids[str(row.group_key)] = incident_id
        self.store.add_incident_note(incident_id, "reopened", "fired again", AGENT, now)
        log.warning("Incident #%d reopened: it fired again", incident_id)

    def _resolve(
        self, incident_id: int, key: str, critical: Sequence[Alert], now: float
    ) -> None:
        resolved = max((alert.resolved_at or now for alert in critical), default=now)
        self._close(incident_id, key, resolved, "every critical alert cleared")

    def resolve_cleared(self, key: str, now: float) -> None:
        """Resolve the group's open incident, its alerts having cleared unseen.

        They stopped firing while no agent was running, so when is unknown:
        the incident is resolved at ``now``, when the agent found out.
        """
        row = self.store.open_incident(key)
        if row is not None:
            self._close(
                int(row.id), key, now, "every critical alert cleared while no agent ran"
            )

    def _close(self, incident_id: int, key: str, resolved: float, why: str) -> None:
        self._ids.pop(key, None)
        row = self.store.incident(incident_id)
        if row is None or row.status == "resolved":
            return
        self.store.update_incident(
            incident_id, status="resolved", resolved_at=resolved, resolved_by=AGENT
        )
        self.store.add_incident_note(incident_id, "resolved", why, AGENT, resolved)
        self.store.audit(AGENT, "incident_resolved", None, incident=incident_id)
        log.info(
            "Incident #%d resolved: %s, %.0fs after detection",
            incident_id,
            why,
            resolved - float(row.detected_at),
        )

    def _count(self, incident_id: int, count: int) -> None:
        # The largest number of alerts at once, for the record; written when it grows.
        if count > self._counts.get(incident_id, 0):
            row = self.store.incident(incident_id)
            if row is not None and count > int(row.alerts):
                self.store.update_incident(incident_id, alerts=count)
            self._counts[incident_id] = max(count, int(row.alerts) if row else 0)
