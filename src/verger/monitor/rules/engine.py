"""The rule evaluator: evaluate every rule, move alerts through their states, tell the sink.

Each evaluation runs the recording rules (their results are written to the
store, so later rules read them), then the alerting rules, the way
Prometheus evaluates one group. An alert is pending while its condition
holds for less than the rule's ``for``, firing after, and resolved once the
condition has not held for ``keep_firing_for``. A pending alert whose
condition stops simply goes away. After each evaluation the sink receives
every pending and firing alert and those resolved since the last call.

Alert states are saved after every change, so that an alert firing before
an agent restart is still firing after it, and one whose condition cleared
while the agent was down is sent as resolved at the first evaluation.
"""

from __future__ import annotations

import decimal
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from verger.config.types import format_duration
from verger.monitor.alert import Alert, AlertSink, AlertState
from verger.monitor.alert import fingerprint as label_fingerprint
from verger.monitor.rules.evaluate import Evaluator, Sample
from verger.monitor.rules.model import Rule
from verger.monitor.store import MetricStore

log = logging.getLogger("verger.monitor")


class AlertStates(Protocol):
    """Where alert states are kept across restarts (the state store)."""

    def alert_states(self) -> list[Any]: ...

    def save_alert_states(
        self, changed: Sequence[dict[str, Any]], removed: Sequence[str]
    ) -> None: ...


@dataclass
class Active:
    """What the evaluator knows of one alert between evaluations."""

    rule: str
    labels: dict[str, str]
    annotations: dict[str, str]
    state: AlertState
    active_at: float
    fired_at: float | None = None
    resolved_at: float | None = None
    keep_firing_since: float | None = None
    value: float | None = None
    fingerprint: str = field(default="")

    def __post_init__(self) -> None:
        if not self.fingerprint:
            self.fingerprint = label_fingerprint(self.labels)

    def alert(self) -> Alert:
        return Alert(
            labels=dict(self.labels),
            annotations=dict(self.annotations),
            state=self.state,
            active_at=self.active_at,
            fired_at=self.fired_at,
            resolved_at=self.resolved_at,
            value=self.value,
            fingerprint=self.fingerprint,
        )

    def row(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "rule": self.rule,
            "labels": json.dumps(self.labels, sort_keys=True),
            "annotations": json.dumps(self.annotations, sort_keys=True),
            "state": str(self.state),
            "active_at": self.active_at,
            "fired_at": self.fired_at,
            "resolved_at": self.resolved_at,
            "keep_firing_since": self.keep_firing_since,
            "value": self.value,
        }


_TEMPLATE = re.compile(r"\{\{\s*\$(labels\.([a-zA-Z_][a-zA-Z0-9_]*)|value)\s*\}\}")


def go_float(value: float) -> str:
    """A float as Prometheus's templates print it (Go's %v), so exports render alike."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1, value) < 0 else "0"
    sign, digits, exponent = decimal.Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits))
    power = len(digits) + exponent - 1
    prefix = "-" if sign else ""
    # Go's shortest %g: an exponent below 1e-4 and from 1e6 up.
    if power < -4 or power >= 6:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if power < 0 else '+'}{abs(power):02d}"
    if power < 0:
        return f"{prefix}0.{'0' * (-power - 1)}{text}"
    if len(text) <= power + 1:
        return prefix + text + "0" * (power + 1 - len(text))
    return f"{prefix}{text[: power + 1]}.{text[power + 1 :]}"


def render(text: str, labels: Mapping[str, str], value: float | None) -> str:
    """An annotation with ``{{ $labels.x }}`` and ``{{ $value }}`` filled in."""

    def fill(match: re.Match[str]) -> str:
        if match.group(2):
            return labels.get(match.group(2), "<no value>")
        return go_float(value) if value is not None else ""

    return _TEMPLATE.sub(fill, text)


def where(labels: Mapping[str, str]) -> str:
    """The part of a decision sentence that says which series: ``for production``."""
    for key in ("environment", "probe", "heartbeat", "instance", "database", "mount"):
        if key in labels:
            return f" for {labels[key]}"
    rest = [f"{k}={v}" for k, v in labels.items() if k not in ("alertname", "severity")]
    return f" for {', '.join(rest)}" if rest else ""


class RuleEngine:
    """Evaluates a rule set against a store and keeps every alert's state.

    >>> engine = RuleEngine(default_rules(), store, sink)
    >>> await engine.evaluate(time.time())
    """

    def __init__(
        self,
        rules: Sequence[Rule],
        store: MetricStore,
        sink: AlertSink | None = None,
        states: AlertStates | None = None,
    ) -> None:
        self.rules = list(rules)
        self.store = store
        self.sink = sink
        self.states = states
        self.evaluator = Evaluator(store)
        self.active: dict[tuple[str, str], Active] = {}
        self.errors: dict[str, str] = {}
        self.last_evaluation: float | None = None
        self._changed: dict[str, Active] = {}
        self._removed: list[str] = []
        if states is not None:
            self._restore(states)

    def _restore(self, states: AlertStates) -> None:
        known = {r.key for r in self.rules if not r.record}
        for row in states.alert_states():
            active = Active(
                rule=row["rule"],
                labels=json.loads(row["labels"]),
                annotations=json.loads(row["annotations"]),
                state=AlertState(row["state"]),
                active_at=row["active_at"],
                fired_at=row["fired_at"],
                resolved_at=row["resolved_at"],
                keep_firing_since=row["keep_firing_since"],
                value=row["value"],
                fingerprint=row["fingerprint"],
            )
            if row["rule"] not in known and active.state != AlertState.PENDING:
                # Its rule is gone from verger.yml: say once that it is over.
                active.state = AlertState.RESOLVED
                active.resolved_at = None
            elif row["rule"] not in known:
                self._removed.append(active.fingerprint)
                continue
            self.active[(active.rule, active.fingerprint)] = active
        if self.active:
            firing = sum(a.state == AlertState.FIRING for a in self.active.values())
            log.info(
                "restored %d alerts (%d firing) from the state store",
                len(self.active),
                firing,
            )

    async def evaluate(self, now: float) -> list[Alert]:
        """Evaluate every rule at ``now``, tell the sink, and return what it was sent."""
        for rule in self.rules:
            try:
                result = self.evaluator.instant(rule.tree, now)
            except Exception as exc:  # one broken rule must not stop the others
                self._rule_failed(rule, exc)
                continue
            self.errors.pop(rule.key, None)
            vector = result if isinstance(result, list) else [Sample({}, result)]
            if rule.record:
                self._record(rule, vector, now)
            else:
                self._transition(rule, vector, now)
        self.last_evaluation = now
        for active in self.active.values():
            if active.state == AlertState.RESOLVED and active.resolved_at is None:
                active.resolved_at = now
        alerts = [active.alert() for active in self.active.values()]
        self._save()
        if self.sink is not None:
            try:
                await self.sink.update(alerts, now)
            except Exception as exc:  # resolved alerts stay, to be sent again
                log.warning("alerts could not be handed to alerting: %s", exc)
                return alerts
        self._drop_resolved()
        self._save()
        return alerts

    def _rule_failed(self, rule: Rule, exc: Exception) -> None:
        message = f"{type(exc).__name__}: {exc}"
        if self.errors.get(rule.key) != message:
            log.warning("rule %s cannot be evaluated: %s", rule.key, message)
        self.errors[rule.key] = message

    def _record(self, rule: Rule, vector: list[Sample], now: float) -> None:
        samples = []
        for s in vector:
            if math.isnan(s.value):
                continue
            labels = {k: v for k, v in s.labels.items() if k != "__name__"}
            samples.append((rule.name, {**labels, **rule.labels}, now, s.value))
        if samples:
            self.store.write(samples)

    def _labels(self, rule: Rule, sample: Sample) -> dict[str, str]:
        labels = {k: v for k, v in sample.labels.items() if k != "__name__"}
        labels.update(rule.labels)
        labels["alertname"] = rule.name
        labels["severity"] = rule.severity
        return labels

    def _transition(self, rule: Rule, vector: list[Sample], now: float) -> None:
        seen: set[str] = set()
        for sample in vector:
            labels = self._labels(rule, sample)
            active = self._hold(rule, labels, sample.value, now)
            seen.add(active.fingerprint)
        for key, active in list(self.active.items()):
            if key[0] == rule.key and active.fingerprint not in seen:
                self._absent(rule, key, active, now)
        for key, active in self.active.items():
            if key[0] != rule.key or active.state != AlertState.PENDING:
                continue
            if now - active.active_at >= rule.for_:
                active.state = AlertState.FIRING
                active.fired_at = now
                self._changed[active.fingerprint] = active
                log.info(
                    "rule %s%s is firing: %s%s",
                    rule.name,
                    where(active.labels),
                    self._condition(rule, active.value),
                    f" for {format_duration(rule.for_)}" if rule.for_ else "",
                )

    def _hold(
        self, rule: Rule, labels: dict[str, str], value: float, now: float
    ) -> Active:
        """The alert whose condition holds now, created pending if it is new."""
        fp = label_fingerprint(labels)
        annotations = {k: render(v, labels, value) for k, v in rule.annotations.items()}
        active = self.active.get((rule.key, fp))
        if active is None or active.state == AlertState.RESOLVED:
            active = Active(rule.key, labels, annotations, AlertState.PENDING, now)
            self.active[(rule.key, fp)] = active
            if rule.for_:
                log.info(
                    "rule %s%s is pending: %s (firing after %s)",
                    rule.name,
                    where(labels),
                    self._condition(rule, value),
                    format_duration(rule.for_),
                )
        elif active.keep_firing_since is not None:
            active.keep_firing_since = None
        active.value = value
        active.annotations = annotations
        self._changed[fp] = active
        return active

    def _absent(
        self, rule: Rule, key: tuple[str, str], active: Active, now: float
    ) -> None:
        """The condition no longer holds: keep firing, resolve, or drop a pending alert."""
        if active.state == AlertState.RESOLVED:
            return
        if active.state == AlertState.PENDING:
            del self.active[key]
            self._removed.append(active.fingerprint)
            log.info(
                "rule %s%s is no longer pending: the condition cleared before %s",
                rule.name,
                where(active.labels),
                format_duration(rule.for_),
            )
            return
        if rule.keep_firing_for:
            if active.keep_firing_since is None:
                active.keep_firing_since = now
                self._changed[active.fingerprint] = active
            if now - active.keep_firing_since < rule.keep_firing_for:
                return
        active.state = AlertState.RESOLVED
        active.resolved_at = now
        self._changed[active.fingerprint] = active
        log.info(
            "rule %s%s is resolved: %s no longer holds",
            rule.name,
            where(active.labels),
            self._condition(rule, None),
        )

    def _condition(self, rule: Rule, value: float | None) -> str:
        threshold = rule.threshold
        if threshold is None:
            return rule.expr if value is None else f"{rule.show(value)} ({rule.expr})"
        op, limit = threshold
        if value is None:
            return f"{op} {rule.show(limit)}"
        return f"{rule.show(value)} {op} {rule.show(limit)}"

    def _drop_resolved(self) -> None:
        """Forget alerts the sink has been told are resolved."""
        for key, active in list(self.active.items()):
            if active.state == AlertState.RESOLVED:
                del self.active[key]
                self._changed.pop(active.fingerprint, None)
                self._removed.append(active.fingerprint)

    def _save(self) -> None:
        if self.states is None or not (self._changed or self._removed):
            self._changed.clear()
            self._removed.clear()
            return
        try:
            self.states.save_alert_states(
                [a.row() for a in self._changed.values()], list(self._removed)
            )
        except Exception as exc:  # the next evaluation saves again
            log.warning("alert states could not be saved: %s", exc)
            return
        self._changed.clear()
        self._removed.clear()

    def snapshot(self) -> list[dict[str, Any]]:
        """Every rule with its alerts now, for ``verger monitor rules``."""
        out = []
        for rule in self.rules:
            alerts = [a.row() for (key, _), a in self.active.items() if key == rule.key]
            out.append(
                {
                    **rule.describe(),
                    "alerts": alerts,
                    "error": self.errors.get(rule.key),
                }
            )
        return out
