"""The backup.verified finding: how old the newest verified backup may be."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from verger.backup.health import freshness
from verger.config.model import Backup, Schedule, Targets
from verger.state import open_store


def _engine(pitr: bool, **schedule: Any) -> Any:
    section = Backup(schedule=Schedule(**schedule), targets=Targets(rpo=3600.0))
    return SimpleNamespace(
        name="pgbackrest",
        pitr=pitr,
        context=SimpleNamespace(database="production", section=section),
        missing_error=lambda: None,
        backups=lambda: [SimpleNamespace(label="20261203-213000F")],
    )


def _verified(tmp_path: Path, age: float) -> Any:
    store = open_store(".verger/state.db", tmp_path)
    backup_id = store.add_backup("production", "pgbackrest", "full", "test")
    store.update_backup(
        backup_id,
        status="verified",
        label="20261203-213000F",
        finished_at=time.time() - age,
    )
    return store


def test_without_wal_a_backup_older_than_the_rpo_is_stale(tmp_path: Path) -> None:
    """pg_dump: the newest verified backup older than the RPO target fails."""
    store = _verified(tmp_path, 2 * 3600)
    finding = freshness(_engine(pitr=False), store)
    assert finding.level == "fail" and finding.event == "backup_stale"
    assert "1h RPO target" in finding.message


def test_with_wal_two_missed_full_backups_are_stale(tmp_path: Path) -> None:
    """pgBackRest: older than the RPO is normal; older than two full cadences fails."""
    engine = _engine(pitr=True, full="0 */6 * * *")
    assert freshness(engine, _verified(tmp_path / "a", 5 * 3600)).level == "ok"

    finding = freshness(engine, _verified(tmp_path / "b", 13 * 3600))
    assert finding.level == "fail" and finding.event == "backup_stale"
    assert "two full backups' cadence (12h)" in finding.message
