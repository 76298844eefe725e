"""The backup checks: archiving works, WAL keeps up, the archive has no gap,
the repository answers, and a verified backup exists."""

from __future__ import annotations

from collections.abc import Iterator

from verger.checks.base import Check, Context, register
from verger.errors import VergerError


@register("backup", order=80)
def check_backup(context: Context) -> Iterator[Check]:
    """Every backup finding, when the config has a backup: section."""
    loaded = context.loaded
    if loaded is None or loaded.config.backup is None:
        return
    from verger.backup import health, make_context, make_engine
    from verger.state import open_store

    try:
        engine = make_engine(make_context(loaded))
    except VergerError as exc:
        yield Check("backup", "fail", exc.message, exc.hint)
        return
    findings = [
        *health.archiving(engine),
        *health.gaps(engine),
        health.repository(engine),
    ]
    try:
        store = open_store(loaded.config.state, loaded.root)
        findings.append(health.freshness(engine, store))
        store.close()
    except VergerError as exc:
        yield Check("backup.verified", "skip", exc.message, exc.hint, "info")
    for finding in findings:
        yield Check(finding.name, finding.level, finding.message, finding.hint)
