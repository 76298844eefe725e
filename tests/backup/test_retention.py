"""Retention never trades the newest verified backup for unverified ones."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
from conftest import Source, backup_config, verger
from test_backup_cli import _listed, _ready

from verger.backup.engines.base import EngineBackup
from verger.backup.retention import plan
from verger.config.model import Retention

HOUR = 3600.0
NOW = 1_800_000_000.0


def _backup(
    label: str, kind: str, age_hours: float, prior: str | None = None
) -> EngineBackup:
    finished = NOW - age_hours * HOUR
    return EngineBackup(label, kind, finished - 60, finished, prior=prior)


def test_full_one_keeps_the_only_verified_full_behind_a_newer_unverified_one() -> None:
    """With full: 1 and the only verified full older than a new unverified one,
    both are kept: the new one by count, the verified one as the newest proved."""
    backups = [_backup("A", "full", 30), _backup("B", "full", 20)]
    decided = plan(backups, Retention(full=1, window=HOUR), NOW, verified={"A"})
    assert decided.remove == []
    assert decided.reasons["A"] == "the newest verified backup"


def test_unverified_backups_never_push_out_the_newest_verified_one() -> None:
    """Several newer unverified fulls fill the count, yet the newest verified one
    stays and only an older verified one beyond every promise goes."""
    backups = [
        _backup("A", "full", 50),
        _backup("B", "full", 40),
        _backup("C", "full", 30),
        _backup("D", "full", 20),
    ]
    decided = plan(backups, Retention(full=2, window=HOUR), NOW, verified={"A", "B"})
    assert decided.remove == ["A"]
    assert set(decided.keep) == {"B", "C", "D"}


def test_a_verified_incremental_keeps_the_chain_it_builds_on() -> None:
    """The newest verified backup being an incremental keeps its differential and
    full, however old, since a restore of it needs them."""
    backups = [
        _backup("F1", "full", 90),
        _backup("D1", "diff", 80, prior="F1"),
        _backup("I1", "incr", 70, prior="D1"),
        _backup("F2", "full", 10),
    ]
    decided = plan(backups, Retention(full=1, window=HOUR), NOW, verified={"I1"})
    assert decided.remove == []
    assert decided.reasons["D1"] == "needed by I1"
    assert decided.reasons["F1"] == "needed by I1"


def test_without_a_verified_backup_the_count_and_window_decide() -> None:
    """With nothing verified, the newest full and the window's base are kept."""
    backups = [
        _backup("A", "full", 30),
        _backup("B", "full", 20),
        _backup("C", "full", 10),
    ]
    decided = plan(backups, Retention(full=1, window=HOUR), NOW)
    assert decided.remove == ["A", "B"]


@pytest.mark.skipif(
    not Path("/usr/bin/pgbackrest").exists(), reason="pgBackRest is not installed"
)
def test_expire_keeps_the_verified_full_that_a_newer_unverified_one_follows(
    workdir: Path, source: Source
) -> None:
    """On pgBackRest with full: 1 and a 1 s window, 'backup expire' after a
    verified full and a newer unverified one keeps both, and the verified one
    still restores."""
    config = backup_config(workdir, source)
    config.write_text(
        config.read_text().replace(
            "  archive_timeout: 2s\n",
            "  archive_timeout: 2s\n  retention: {full: 1, window: 1s}\n",
        )
    )
    _ready(config, source)
    proved = json.loads(verger(config, "--json", "backup", "run", check=True).stdout)
    assert proved["status"] == "verified"
    verger(config, "backup", "run", "--no-verify", check=True)
    time.sleep(2)

    done = verger(config, "--json", "backup", "expire", check=True)
    assert json.loads(done.stdout)["removed"] == []
    statuses = [row["status"] for row in _listed(config)]
    assert statuses == ["done", "verified"], statuses
    state = config.parent / ".verger" / "state.db"
    with sqlite3.connect(state) as db:
        (status,) = db.execute(
            "SELECT status FROM backups WHERE id = ?", (proved["id"],)
        ).fetchone()
    assert status == "verified"
    again = verger(config, "--json", "backup", "verify", str(proved["id"]))
    assert json.loads(again.stdout)["verified"] is True, again.stderr
