"""Inhibition: while one alert fires, others it explains are held back.

Three kinds, checked in turn:

- a critical alert holds back its high twin: the same family (the
  ``family`` label, or the alert name with its severity word taken out, so
  ``error_rate_critical`` and ``error_rate_high`` are twins) and the same
  other labels;
- an alert with ``depends_on: api`` is held while an alert named ``api``
  or ``api_down``, or with ``component: api``, fires in the same
  environment; the default rules' error rate, latency and SLO alerts
  depend on ``api_down`` this way without saying so (as the exported
  Alertmanager config has it);
- each ``inhibit:`` rule of the config: while an alert matching ``source``
  fires, alerts matching ``target`` with the same ``equal`` labels are held.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from verger.config.alerting import Inhibit
from verger.monitor.alert import Alert
from verger.monitor.alerting.matchers import Matcher, equal_matchers, matches_all

_SEVERITY_WORD = re.compile(r"(?i)(^|[_.\-\s])(critical|high|medium)(?=$|[_.\-\s])")
_TWIN_IGNORES = frozenset({"alertname", "severity", "family"})


def family(labels: Mapping[str, str]) -> str:
    """The name an alert shares with its twins of other severities."""
    given = labels.get("family")
    if given:
        return given
    name = labels.get("alertname", "")
    return _SEVERITY_WORD.sub(r"\1", name).strip("_.- ").lower()


def _twin_key(labels: Mapping[str, str]) -> tuple[str, tuple[tuple[str, str], ...]]:
    rest = tuple(sorted((k, v) for k, v in labels.items() if k not in _TWIN_IGNORES))
    return family(labels), rest


@dataclass(frozen=True)
class Rule:
    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...]

    def key(self, labels: Mapping[str, str]) -> tuple[str, ...]:
        return tuple(labels.get(name, "") for name in self.equal)


API_DOWN = Rule(
    (Matcher("alertname", "=", "api_down"),),
    (Matcher("alertname", "=~", "error_rate_.*|latency_.*|slo_.*"),),
    ("environment",),
)
"""With no requests at all, error rates, latencies and burn rates say nothing more."""


class Inhibitor:
    """Answers, for one evaluation's firing alerts, which of them are held and why."""

    def __init__(self, rules: Iterable[Inhibit]) -> None:
        self.rules = [API_DOWN] + [
            Rule(
                equal_matchers(rule.source),
                equal_matchers(rule.target),
                tuple(rule.equal),
            )
            for rule in rules
        ]

    def held(self, firing: Iterable[Alert]) -> dict[str, str]:
        """Fingerprints of the held alerts, each with the reason, as a sentence."""
        alerts = list(firing)
        index = _Index(alerts, self.rules)
        held: dict[str, str] = {}
        for alert in alerts:
            reason = index.reason(alert)
            if reason is not None:
                held[alert.fingerprint] = reason
        return held


class _Index:
    """The firing alerts that could hold others back, looked up by what they hold."""

    def __init__(self, alerts: list[Alert], rules: list[Rule]) -> None:
        self.rules = rules
        self.criticals: dict[tuple[str, tuple[tuple[str, str], ...]], Alert] = {}
        self.providers: dict[tuple[str, str], Alert] = {}
        self.sources: list[dict[tuple[str, ...], Alert]] = [{} for _ in rules]
        for alert in alerts:
            self._add(alert)

    def _add(self, alert: Alert) -> None:
        labels = alert.labels
        if alert.severity == "critical":
            self.criticals.setdefault(_twin_key(labels), alert)
        environment = labels.get("environment", "")
        names = {
            alert.name,
            alert.name.removesuffix("_down"),
            labels.get("component", ""),
        }
        for name in names - {""}:
            self.providers.setdefault((name, environment), alert)
            self.providers.setdefault((name, ""), alert)
        for rule, found in zip(self.rules, self.sources, strict=True):
            if matches_all(rule.source, labels):
                found.setdefault(rule.key(labels), alert)

    def reason(self, alert: Alert) -> str | None:
        labels = alert.labels
        if alert.severity == "high":
            twin = self.criticals.get(_twin_key(labels))
            if twin is not None:
                return f"its critical twin {twin.name} fires"
        for needed in _dependencies(labels):
            provider = self.providers.get((needed, labels.get("environment", "")))
            if provider is not None and provider.fingerprint != alert.fingerprint:
                return f"{provider.name} fires, which it depends on"
        for rule, found in zip(self.rules, self.sources, strict=True):
            if not matches_all(rule.target, labels):
                continue
            source = found.get(rule.key(labels))
            if source is not None and source.fingerprint != alert.fingerprint:
                return f"{source.name} fires{_same(rule, source)}"
        return None


def _same(rule: Rule, source: Alert) -> str:
    shared = ", ".join(f"{name}={source.labels.get(name, '')}" for name in rule.equal)
    return f" with {shared}" if shared else ""


def _dependencies(labels: Mapping[str, str]) -> list[str]:
    value = labels.get("depends_on", "")
    return [part.strip() for part in value.split(",") if part.strip()]
