"""Silences: matchers and a time span, kept in the state store, that mute alerts."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from verger.monitor.alerting.matchers import Matcher, matches_all, parse_matcher


@dataclass(frozen=True)
class Silence:
    id: int
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    comment: str
    actor: str

    @classmethod
    def from_row(cls, row: Any) -> Silence:
        return cls(
            id=int(row.id),
            matchers=tuple(parse_matcher(text) for text in json.loads(row.matchers)),
            starts_at=float(row.starts_at),
            ends_at=float(row.ends_at),
            comment=str(row.comment),
            actor=str(row.actor),
        )

    def silences(self, labels: Mapping[str, str], now: float) -> bool:
        return self.starts_at <= now < self.ends_at and matches_all(
            self.matchers, labels
        )

    def state(self, now: float) -> str:
        if now < self.starts_at:
            return "pending"
        return "active" if now < self.ends_at else "expired"


def silencing(
    silences: Sequence[Silence], labels: Mapping[str, str], now: float
) -> Silence | None:
    """The first silence in effect at ``now`` that matches an alert's labels."""
    return next((s for s in silences if s.silences(labels, now)), None)
