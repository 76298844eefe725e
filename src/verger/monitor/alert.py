"""What a rule produces and what alerting consumes: one alert per rule and label set.

The rule evaluator sends every alert it knows (pending, firing, and those
resolved since the last evaluation) to an ``AlertSink`` after each
evaluation, the way Prometheus sends to Alertmanager; the sink decides what
reaches a person. The two halves meet only here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class AlertState(StrEnum):
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


SEVERITIES = ("critical", "high", "medium")
"""Tiers, most urgent first: critical pages, high emails, medium opens a ticket."""


def fingerprint(labels: Mapping[str, str]) -> str:
    """A stable short identity for a label set, the same in every process."""
    text = json.dumps(sorted(labels.items()), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Alert:
    """One rule's condition for one label set, at one evaluation.

    ``labels`` always hold ``alertname`` (the rule's name) and ``severity``;
    ``active_at`` is when the condition first held, ``fired_at`` when its
    ``for`` passed, ``resolved_at`` when it stopped holding (after
    ``keep_firing_for``). ``value`` is the expression's value that decided.
    """

    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    state: AlertState
    active_at: float
    fired_at: float | None = None
    resolved_at: float | None = None
    value: float | None = None
    fingerprint: str = field(default="")

    def __post_init__(self) -> None:
        if not self.fingerprint:
            object.__setattr__(self, "fingerprint", fingerprint(self.labels))

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def severity(self) -> str:
        return self.labels.get("severity", "medium")


class AlertSink(Protocol):
    """Takes the evaluator's view of every alert after each evaluation."""

    async def update(self, alerts: Sequence[Alert], now: float) -> None: ...
