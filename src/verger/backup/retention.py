"""Retention by count and by age that never removes what a promise needs.

Three promises are kept at once: the newest verified backup (with everything
it builds on, whatever ``retention.full`` says, so that a run of unverified
new backups never pushes out the last one a restore proved), the newest
``retention.full`` full backups, and a restore to any point in the last
``retention.window``. The second
needs the newest full backup taken before the window opened (and the WAL
after it), even when it is older than the window. Differential and
incremental backups are kept with the full backup they build on; a backup
still running is never touched. Deletion itself is the engine's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from dataclasses import dataclass

from verger.backup.engines.base import Engine, EngineBackup
from verger.config.model import Retention

log = logging.getLogger("verger.backup")


@dataclass(frozen=True)
class Plan:
    keep: list[str]
    remove: list[str]
    oldest_point: float | None
    reasons: dict[str, str]


def plan(
    backups: list[EngineBackup],
    retention: Retention,
    now: float,
    verified: Collection[str] = (),
) -> Plan:
    """Which backups to keep, and why each one is kept.

    ``verified`` names the backups a restore proved; the newest of them is
    always kept, with the backups it builds on.
    """
    good = sorted((b for b in backups if not b.error), key=lambda b: b.finished_at)
    fulls = [b for b in good if b.kind in ("full", "logical")]
    reasons: dict[str, str] = {}
    proved = [b for b in good if b.label in verified]
    if proved:
        reasons[proved[-1].label] = "the newest verified backup"
    for backup in fulls[-retention.full :]:
        reasons[backup.label] = f"one of the newest {retention.full} full backups"
    opens = now - retention.window
    before = [b for b in fulls if b.finished_at <= opens]
    if before:
        reasons.setdefault(before[-1].label, "the base of the oldest promised point")
    for backup in fulls:
        if backup.finished_at > opens:
            reasons.setdefault(backup.label, "inside the retention window")
    _keep_chains(good, reasons)
    keep = [b.label for b in good if b.label in reasons]
    remove = [b.label for b in good if b.label not in reasons]
    kept_fulls = [b for b in fulls if b.label in reasons]
    oldest = max(opens, kept_fulls[0].finished_at) if kept_fulls else None
    return Plan(keep, remove, oldest, reasons)


def _keep_chains(good: list[EngineBackup], reasons: dict[str, str]) -> None:
    """Keep a diff or incr whose base is kept, and every backup a kept one needs."""
    by_label = {b.label: b for b in good}
    for backup in good:
        if backup.prior and _base(backup, by_label) in reasons:
            reasons.setdefault(backup.label, f"builds on {_base(backup, by_label)}")
    for label in list(reasons):
        prior = by_label[label].prior if label in by_label else None
        while prior and prior in by_label:
            reasons.setdefault(prior, f"needed by {label}")
            prior = by_label[prior].prior


def _base(backup: EngineBackup, by_label: dict[str, EngineBackup]) -> str:
    current = backup
    while current.prior and current.prior in by_label:
        current = by_label[current.prior]
    return current.label


def apply(engine: Engine, retention: Retention, verified: Collection[str] = ()) -> Plan:
    """Plan retention from the repository's listing and have the engine delete."""
    decided = plan(engine.backups(), retention, time.time(), verified)
    if decided.remove:
        engine.expire(decided.keep)
        log.info(
            "Retention removed %d backups (%s); kept %d",
            len(decided.remove),
            ", ".join(decided.remove),
            len(decided.keep),
        )
    return decided
