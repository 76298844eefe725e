"""The dispatcher: from the evaluator's alerts to notifications that reach a person.

It works as Alertmanager does. Each alert is routed into a group (one per
route and ``group_by`` values). A new group waits ``group_wait`` so that
alerts from one cause arrive together, then sends one notification; after
that it is looked at every ``group_interval`` and sends again only when
its firing alerts changed, some were resolved, or ``repeat_interval``
passed. A group whose last notice left nothing firing is dropped, so that
an alert firing again after "all is well" is news, sent after
``group_wait``. Silenced, inhibited and maintenance-muted alerts are left
out.

A route with no receiver (no ``receivers:`` configured at all, or a route
that names none) still holds its alerts in a group, so that a critical
alert opens its incident, the record time to detect is measured from; the
group sends nothing and logs, once per alert that joins it firing, that
no one was told.

Every delivery is recorded in the state store's notification log before
the group moves on, and the decision to send is taken against that log, so
a dispatcher started again on the same store sends nothing already
delivered, and sends the resolved notice for what was delivered as firing.
Started again, it also resolves each open incident whose group has no
critical alert firing or pending at its first evaluation, whatever its
route: those alerts cleared while no agent ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from verger.config.alerting import AlertingSection
from verger.errors import VergerError
from verger.monitor.alert import Alert, AlertState
from verger.monitor.alerting.delivery import DEADLINE, DELAYS, deliver
from verger.monitor.alerting.incidents import Incidents
from verger.monitor.alerting.inhibit import Inhibitor
from verger.monitor.alerting.maintenance import Window, muting, windows
from verger.monitor.alerting.notification import Notification, Reason, alert_dict
from verger.monitor.alerting.receivers import AlertReceiver, make_receivers
from verger.monitor.alerting.routing import RouteNode, build_tree
from verger.monitor.alerting.silences import Silence, silencing
from verger.state import Row, Store

log = logging.getLogger("verger.monitor.alerting")

LOG_KEEP = 30 * 86400.0
"""How long the log keeps a group that has nothing firing: a month of history."""
OPEN_MAX = 10_000
"""More open incidents than any team has, read back at start."""


@dataclass
class Group:
    """The alerts one route holds under one set of ``group_by`` values."""

    key: str
    node: RouteNode
    labels: dict[str, str]
    next_flush: float
    alerts: dict[str, Alert] = field(default_factory=dict)
    sending: bool = False
    adopted: bool = False
    """Rebuilt from the notification log after a restart, not routed to now."""
    untold: set[str] = field(default_factory=set)
    """Firing alerts of a group without a receiver already logged as told to no one."""


@dataclass(frozen=True)
class Logged:
    """The notification log's entry for one group and receiver."""

    firing: frozenset[str]
    sent_at: float

    @classmethod
    def from_row(cls, row: Row) -> Logged:
        return cls(frozenset(json.loads(row.firing)), float(row.sent_at))


class Dispatcher:
    """An ``AlertSink`` that groups, mutes, delivers and records.

    The evaluator calls ``update`` after each evaluation; ``flush`` (called
    by ``update`` and by ``run`` every second) sends what is due. Times are
    passed in, so tests drive it with an explicit clock::

        dispatcher = Dispatcher(config.monitor, store, app="shop")
        await dispatcher.update(alerts, now)
        await dispatcher.settle()
    """

    def __init__(
        self,
        section: AlertingSection,
        store: Store,
        *,
        app: str = "",
        receivers: Mapping[str, AlertReceiver] | None = None,
        clock: Callable[[], float] = time.time,
        delays: Sequence[float] = DELAYS,
        deadline: float = DEADLINE,
    ) -> None:
        self.store = store
        self.app = app
        self.clock = clock
        self.delays = tuple(delays)
        self.deadline = deadline
        self.receivers = dict(receivers or make_receivers(section.receivers))
        self.tree = build_tree(section.route, self.receivers)
        self.inhibitor = Inhibitor(section.inhibit)
        self.windows: list[Window] = windows(section.maintenance)
        self.incidents = Incidents(store)
        self.groups: dict[str, Group] = {}
        self.muted: dict[str, str] = {}
        self._firing: dict[str, Alert] = {}
        self._logged: dict[tuple[str, str], Logged | None] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._adopted = False
        self._delivered: dict[str, list[tuple[Row, dict[str, Any]]]] = {}
        self._unconfirmed: set[str] = set()
        """Groups with an incident left open by the last agent, none firing yet."""

    # -- what the evaluator calls ------------------------------------------

    async def update(self, alerts: Sequence[Alert], now: float) -> None:
        """Take the evaluator's view of every alert, then send what is due."""
        current = self._current(alerts, now)
        self._firing = {
            fp: alert
            for fp, alert in current.items()
            if alert.state is AlertState.FIRING
        }
        self._decide_muting(now)
        for alert in current.values():
            if alert.state is not AlertState.PENDING:
                self._place(alert, now)
        if not self._adopted:
            self._load_delivered(current, now)
            self._unconfirmed = {
                str(row.group_key)
                for row in self.store.incidents(limit=OPEN_MAX, open_only=True)
            }
            self._adopted = True
        self._resolve_delivered(current, now)
        self.incidents.track(self._incident_view(), now)
        self._resolve_unconfirmed(current, now)
        await self.flush(now)

    def _current(self, alerts: Sequence[Alert], now: float) -> dict[str, Alert]:
        """This evaluation's alerts; one firing before and now absent is resolved."""
        current = {alert.fingerprint: alert for alert in alerts}
        for fp, alert in self._firing.items():
            if fp not in current:
                current[fp] = replace(alert, state=AlertState.RESOLVED, resolved_at=now)
        return current

    def _load_delivered(self, current: Mapping[str, Alert], now: float) -> None:
        """After a restart: what the log says was sent as firing and is not firing now.

        Each such alert stopped while no dispatcher was running to see it
        (the evaluator sends it resolved, or no longer has it), or is pending
        again (the evaluator's ``for`` started over) and may or may not fire.
        """
        self.store.prune_notifications(now - LOG_KEEP)
        for row in self.store.notifications_firing():
            for item in json.loads(row.alerts):
                fp = str(item.get("fingerprint", ""))
                known = current.get(fp)
                if fp and (known is None or known.state is not AlertState.FIRING):
                    self._delivered.setdefault(fp, []).append((row, item))

    def _resolve_delivered(self, current: Mapping[str, Alert], now: float) -> None:
        """Resolve, in the group it was sent from, each of those that is gone.

        The group is the one in the log even if routes changed since, so it
        sends the resolved notice once; one that fires again is a plain alert.
        """
        count = 0
        for fp, entries in list(self._delivered.items()):
            known = current.get(fp)
            if known is not None and known.state is AlertState.PENDING:
                continue
            del self._delivered[fp]
            if known is not None and known.state is AlertState.FIRING:
                continue
            for row, item in entries:
                count += self._place_orphan(
                    row, known or _resolved_from_log(item, now), now
                )
        if count:
            log.info(
                "%d %s sent as firing before the restart %s gone; sending the "
                "resolved notice",
                count,
                "alert" if count == 1 else "alerts",
                "is" if count == 1 else "are",
            )

    def _resolve_unconfirmed(self, current: Mapping[str, Alert], now: float) -> None:
        """Resolve each incident left open whose group has no critical alert now.

        Its alerts cleared while no agent ran. A group without a receiver
        wrote nothing to the notification log to resolve it from, and one
        whose receiver is gone is not rebuilt from it; a group firing again
        keeps its incident, and one whose alert is pending again waits.
        """
        if not self._unconfirmed:
            return
        firing, pending = set(), set()
        for alert in current.values():
            if alert.severity == "critical" and alert.state is AlertState.FIRING:
                firing.add(self._first_group(alert))
            elif alert.severity == "critical" and alert.state is AlertState.PENDING:
                pending.add(self._first_group(alert))
        for group in self.groups.values():
            if group.adopted and self._group_firing(group):
                firing.add(group.key)
        for key in sorted(self._unconfirmed):
            if key in pending and key not in firing:
                continue
            self._unconfirmed.discard(key)
            if key not in firing:
                self.incidents.resolve_cleared(key, now)

    def _place_orphan(self, row: Row, alert: Alert, now: float) -> int:
        key, receiver = str(row.group_key), str(row.receiver)
        group = self.groups.get(key)
        if group is None:
            node = self._node_for(key, receiver)
            if node is None:
                log.warning(
                    "Receiver %s is no longer configured; forgetting that %s was "
                    "sent to it as firing",
                    receiver,
                    alert.name,
                )
                self.store.record_notification(key, receiver, [], [], [], now)
                return 0
            labels = node.group_labels(alert.labels)
            group = Group(key, node, labels, now + node.group_wait, adopted=True)
            self.groups[key] = group
        group.alerts.setdefault(alert.fingerprint, alert)
        return 1

    def _node_for(self, key: str, receiver: str) -> RouteNode | None:
        """The route a logged group came from, or the root's timings if routes changed."""
        path = key.split(":", 1)[0]
        found = _find(self.tree, path)
        if found is not None and found.receiver == receiver:
            return found
        if receiver not in self.receivers:
            return None
        return replace(
            self.tree, path=path, receiver=receiver, matchers=(), children=()
        )

    def _place(self, alert: Alert, now: float) -> None:
        """Put the alert in the group of each route that takes it, receiver or not."""
        nodes = self.tree.route(alert.labels)
        for node in nodes:
            key = node.group_key(alert.labels)
            group = self.groups.get(key)
            if group is None:
                if alert.state is AlertState.RESOLVED and not self._was_sent(key, node):
                    continue
                group = Group(
                    key, node, node.group_labels(alert.labels), now + node.group_wait
                )
                self.groups[key] = group
                log.debug("New alert group %s for receiver %s", key, node.receiver)
            group.alerts[alert.fingerprint] = alert
            if alert.state is AlertState.RESOLVED:
                # Firing again after this, it is news no one was told of either.
                group.untold.discard(alert.fingerprint)

    # -- muting ------------------------------------------------------------

    def _decide_muting(self, now: float) -> None:
        """Which firing alerts are silenced, in maintenance or inhibited, and why."""
        silences = [Silence.from_row(row) for row in self.store.silences(active_at=now)]
        muted: dict[str, str] = {}
        for fp, alert in self._firing.items():
            silence = silencing(silences, alert.labels, now)
            window = None if silence else muting(self.windows, alert.labels, now)
            if silence is not None:
                muted[fp] = f"silenced by #{silence.id} ({silence.comment})"
            elif window is not None:
                muted[fp] = f"in the maintenance window {window.name}"
        held = self.inhibitor.held(self._firing.values())
        for fp, reason in held.items():
            muted.setdefault(fp, f"inhibited: {reason}")
        self._log_muting_changes(muted)
        self.muted = muted

    def _log_muting_changes(self, muted: Mapping[str, str]) -> None:
        """One line per reason that started holding alerts back, and one for releases."""
        started: dict[str, list[str]] = {}
        for fp, reason in muted.items():
            if self.muted.get(fp) != reason:
                started.setdefault(reason, []).append(self._firing[fp].name)
        for reason, names in started.items():
            log.info("Holding back %s: %s", _names(names), reason)
        released = [
            self._firing[fp].name
            for fp in set(self.muted) - set(muted)
            if fp in self._firing
        ]
        if released:
            log.info("No longer holding back %s", _names(released))

    def _incident_view(self) -> list[tuple[str, str, dict[str, str], list[Alert]]]:
        """Each alert's first group, with the alerts in it that no mute holds back."""
        view = []
        for group in self.groups.values():
            alerts = [
                alert
                for alert in group.alerts.values()
                if alert.fingerprint not in self.muted
                and (group.adopted or self._first_group(alert) == group.key)
            ]
            view.append((group.key, self._title(group), group.labels, alerts))
        return view

    def _first_group(self, alert: Alert) -> str | None:
        """The group an alert's incident belongs to: that of its first route."""
        return self.tree.route(alert.labels)[0].group_key(alert.labels)

    def _title(self, group: Group) -> str:
        name = group.labels.get("alertname") or next(
            (alert.name for alert in group.alerts.values()), "alerts"
        )
        rest = ", ".join(
            f"{k}={v}" for k, v in sorted(group.labels.items()) if k != "alertname"
        )
        return f"{name} ({rest})" if rest else name

    # -- sending -----------------------------------------------------------

    async def flush(self, now: float) -> None:
        """Send each group's notification that is due at ``now``."""
        for group in list(self.groups.values()):
            if group.sending or now < group.next_flush:
                continue
            if group.alerts and group.node.receiver is None:
                self._tell_no_one(group, now)
            elif group.alerts:
                self._flush(group, now)
            else:
                del self.groups[group.key]
        await asyncio.sleep(0)

    def _tell_no_one(self, group: Group, now: float) -> None:
        """Log the firing alerts no receiver takes, once each; forget cleared ones."""
        for fp, alert in list(group.alerts.items()):
            if alert.state is AlertState.RESOLVED:
                del group.alerts[fp]
        new = [
            alert
            for fp, alert in group.alerts.items()
            if fp not in group.untold and fp not in self.muted
        ]
        if new:
            incident = self.incidents.id_for(group.key)
            log.warning(
                "No one was told of %s: no route with a receiver takes %s%s. "
                "Add a receiver under monitor.receivers",
                _names([alert.name for alert in new]),
                "it" if len(new) == 1 else "them",
                f" (incident #{incident} is open)" if incident else "",
            )
            group.untold.update(alert.fingerprint for alert in new)
        group.next_flush = now + group.node.group_interval

    def _flush(self, group: Group, now: float) -> None:
        assert group.node.receiver is not None
        receiver = self.receivers[group.node.receiver]
        logged = self._logged_entry(group.key, receiver.name)
        before = logged.firing if logged else frozenset()
        firing = [
            a for a in self._group_firing(group) if a.fingerprint not in self.muted
        ]
        resolved = [
            a
            for a in group.alerts.values()
            if a.state is AlertState.RESOLVED and a.fingerprint in before
        ]
        self._drop_unsent_resolved(group, before)
        reason = _reason(
            firing, resolved, before, logged, now, group.node.repeat_interval
        )
        if reason is None and not before:
            # Nothing told yet (all muted so far): send as soon as something may go.
            return
        group.next_flush = now + group.node.group_interval
        if reason is None:
            return
        notification = Notification(
            app=self.app,
            receiver=receiver.name,
            group_key=group.key,
            group_labels=group.labels,
            firing=tuple(sorted(firing, key=_order)),
            resolved=tuple(sorted(resolved, key=_order)),
            reason=reason,
            first=not before,
            at=now,
            incident_id=self.incidents.id_for(group.key),
        )
        # Alerts told as firing before and now only muted stay on record as firing,
        # so that their resolved notice is still sent when they clear.
        still = {a.fingerprint for a in self._group_firing(group)} & before
        record = {a.fingerprint for a in firing} | still
        if not receiver.wants(notification):
            self._record(group, receiver, notification, record, now)
            return
        group.sending = True
        task = asyncio.get_running_loop().create_task(
            self._send(group, receiver, notification, record)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _group_firing(self, group: Group) -> list[Alert]:
        return [a for a in group.alerts.values() if a.state is AlertState.FIRING]

    def _drop_unsent_resolved(self, group: Group, before: frozenset[str]) -> None:
        """Resolved alerts never told as firing need no notice: forget them."""
        for fp, alert in list(group.alerts.items()):
            if alert.state is AlertState.RESOLVED and fp not in before:
                del group.alerts[fp]

    async def _send(
        self,
        group: Group,
        receiver: AlertReceiver,
        notification: Notification,
        record: set[str],
    ) -> None:
        try:
            sent = await deliver(receiver, notification, self.delays, self.deadline)
            if sent:
                self._record(group, receiver, notification, record, notification.at)
        except VergerError as exc:
            # Delivered, but the log could not say so: the next interval may repeat it.
            log.error(
                "Sent %s to %s but could not record it: %s",
                notification.title,
                receiver.describe(),
                exc,
            )
        finally:
            group.sending = False

    def _record(
        self,
        group: Group,
        receiver: AlertReceiver,
        notification: Notification,
        record: set[str],
        at: float,
    ) -> None:
        """Write the delivery to the log, then forget the alerts it resolved."""
        snapshot = [
            alert_dict(alert)
            for alert in group.alerts.values()
            if alert.fingerprint in record
        ]
        resolved = [alert.fingerprint for alert in notification.resolved]
        self.store.record_notification(
            group.key, receiver.name, sorted(record), resolved, snapshot, at
        )
        self._logged[(group.key, receiver.name)] = Logged(frozenset(record), at)
        for fp in resolved:
            alert = group.alerts.get(fp)
            if alert is not None and alert.state is AlertState.RESOLVED:
                del group.alerts[fp]
        if not record and not group.alerts and self.groups.get(group.key) is group:
            # The receiver was last told that all is well: an alert that fires
            # again is news for a new group, sent after group_wait, not held
            # back for the rest of this group's interval.
            del self.groups[group.key]

    def _logged_entry(self, key: str, receiver: str) -> Logged | None:
        if (key, receiver) not in self._logged:
            row = self.store.notification(key, receiver)
            self._logged[(key, receiver)] = Logged.from_row(row) if row else None
        return self._logged[(key, receiver)]

    def _was_sent(self, key: str, node: RouteNode) -> bool:
        if node.receiver is None:
            return False
        logged = self._logged_entry(key, node.receiver)
        return bool(logged and logged.firing)

    # -- running -----------------------------------------------------------

    async def run(self, stop: asyncio.Event, tick: float = 1.0) -> None:
        """Flush every ``tick`` seconds until ``stop`` is set, so group waits end on time."""
        while not stop.is_set():
            await self.flush(self.clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), tick)

    async def settle(self, timeout: float = 30.0) -> bool:
        """Wait up to ``timeout`` for deliveries in flight; True when none is left."""
        tasks = set(self._tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        return not self._tasks

    async def drain(self, timeout: float) -> bool:
        """At shutdown: wait up to ``timeout`` for deliveries, then cancel the rest.

        A cancelled delivery was not recorded, so the next agent sends it.
        """
        if await self.settle(timeout):
            return True
        late = set(self._tasks)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        log.warning(
            "%d deliveries still running after %.1fs; the next agent sends them",
            len(late),
            timeout,
        )
        return False


def _reason(
    firing: list[Alert],
    resolved: list[Alert],
    before: frozenset[str],
    logged: Logged | None,
    now: float,
    repeat_interval: float,
) -> Reason | None:
    """Why the group's notification is sent now, or None when it is not."""
    new = {alert.fingerprint for alert in firing} - before
    if new:
        return "new" if not before else "changed"
    if resolved:
        return "changed" if firing else "resolved"
    if firing and logged is not None and now - logged.sent_at >= repeat_interval:
        return "repeat"
    return None


def _names(names: list[str]) -> str:
    """``api_down`` or ``3 alerts (probe_failed, api_down)``, for a log line."""
    if len(names) == 1:
        return names[0]
    return f"{len(names)} alerts ({', '.join(sorted(set(names)))})"


def _find(node: RouteNode, path: str) -> RouteNode | None:
    if node.path == path:
        return node
    for child in node.children:
        if path.startswith(child.path):
            found = _find(child, path)
            if found is not None:
                return found
    return None


def _order(alert: Alert) -> tuple[float, str]:
    return alert.active_at, alert.fingerprint


def _resolved_from_log(item: Mapping[str, Any], now: float) -> Alert:
    from datetime import datetime

    def seconds(text: str | None) -> float | None:
        return None if text is None else datetime.fromisoformat(text).timestamp()

    return Alert(
        labels=dict(item.get("labels", {})),
        annotations=dict(item.get("annotations", {})),
        state=AlertState.RESOLVED,
        active_at=seconds(item.get("active_at")) or now,
        fired_at=seconds(item.get("fired_at")),
        resolved_at=now,
        value=item.get("value"),
        fingerprint=str(item["fingerprint"]),
    )
