"""What a restore can reach around a WAL gap, and which targets and backups it
refuses: real PostgreSQL, real pgBackRest, the real CLI."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import SCHEMA, Source, backup_config, postgres_runner, verger
from test_backup_cli import _switch_wal

pytestmark = pytest.mark.skipif(
    not Path("/usr/bin/pgbackrest").exists(), reason="pgBackRest is not installed"
)


def _epoch(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace(" UTC", "+00:00")).timestamp()


def _rows(source: Source, workdir: Path, target: Path) -> list[int]:
    """The numbers in table ``numbered`` of a restored folder, started for a look."""
    copy = Source(source.runner, workdir / f"look-{target.name}", "copy")
    copy.data = target
    copy.start(timeout=60)
    try:
        return [int(str(n)) for (n,) in copy.sql("SELECT n FROM numbered ORDER BY n")]
    finally:
        copy.remove()


def _delete_segment(workdir: Path, name: str) -> None:
    archived = sorted((workdir / "repo" / "archive").rglob(f"{name}-*"))
    assert archived, f"{name} is in the repository"
    archived[0].unlink()


def _break_the_archive(config: Path, source: Source, workdir: Path) -> None:
    """Row 10 in one segment, rows 11 to 14 in the next, which is then deleted."""
    verger(config, "backup", "setup", check=True)
    source.restart()
    verger(config, "backup", "setup", check=True)
    verger(config, "backup", "run", check=True)
    source.sql("CREATE TABLE numbered (n int PRIMARY KEY)")
    source.sql("INSERT INTO numbered SELECT generate_series(1, 9)")
    time.sleep(1.2)
    source.sql("INSERT INTO numbered VALUES (10)")
    _switch_wal(source)
    for n in range(11, 15):
        source.sql(f"INSERT INTO numbered VALUES ({n})")
    lost = _switch_wal(source)
    source.sql("INSERT INTO numbered VALUES (15)")
    _switch_wal(source)
    _delete_segment(workdir, lost)


@dataclass
class Gapped:
    workdir: Path
    source: Source
    config: Path
    latest: subprocess.CompletedProcess[str]
    hinted: str


@pytest.fixture(scope="module")
def gapped() -> Iterator[Gapped]:
    """A verified backup, then an archive missing the segment after row 10."""
    import shutil
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="verger-ranges-", dir="/tmp"))
    workdir.chmod(0o755)
    source = Source(postgres_runner(), workdir / "pg", "source")
    source.init()
    source.start(timeout=60, isolated=False, settings={"wal_level": "replica"})
    try:
        with source.connect() as conn:
            conn.autocommit = True
            conn.execute("CREATE DATABASE app")
        with source.connect("app") as conn:
            conn.execute(SCHEMA)
        config = backup_config(workdir, source)
        _break_the_archive(config, source, workdir)
        latest = verger(config, "restore", "--latest")
        hinted = re.search(r"--to-time '([^']+)'", latest.stderr)
        assert hinted, latest.stderr
        yield Gapped(workdir, source, config, latest, hinted[1])
    finally:
        source.remove()
        shutil.rmtree(workdir, ignore_errors=True)


def test_the_hinted_time_brings_back_the_last_commit_before_the_gap(
    gapped: Gapped,
) -> None:
    """'--latest' across a gap hints the exact time of the newest commit before it,
    fraction and all, and a restore to that time brings back that commit."""
    assert gapped.latest.returncode == 6, gapped.latest.stderr
    assert "--latest cannot reach now" in gapped.latest.stderr
    assert re.fullmatch(r"\S+ \d\d:\d\d:\d\d\.\d{6} UTC", gapped.hinted)
    target = gapped.workdir / "hinted"
    done = verger(
        gapped.config,
        "--json",
        "restore",
        "--to-time",
        gapped.hinted,
        "--target",
        str(target),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["recovered_to"] == pytest.approx(
        _epoch(gapped.hinted), abs=1e-6
    )
    assert _rows(gapped.source, gapped.workdir, target) == list(range(1, 11))


def test_a_time_after_the_gap_starts_names_only_the_ranges_that_restore(
    gapped: Gapped,
) -> None:
    """A time past the archive, or half a second into the gap, is refused with
    the range that really restores: it ends at the commit before the gap, and
    a gap follows."""
    start = _epoch(gapped.hinted)
    into_gap = dt.datetime.fromtimestamp(start + 0.5, dt.UTC).isoformat()
    for moment in ("2099-01-01 00:00:00+00:00", into_gap):
        done = verger(gapped.config, "restore", "--to-time", moment)
        assert done.returncode == 6, done.stdout + done.stderr
        assert done.stdout == ""
        ranges = re.search(r"can restore:? (from .*)", done.stderr)
        assert ranges, done.stderr
        assert ranges[1].endswith(f"to {gapped.hinted} (a gap follows)"), done.stderr
        assert ", and from" not in ranges[1]


def test_a_target_that_is_no_place_to_restore_is_refused_before_anything_is_said(
    gapped: Gapped,
) -> None:
    """A foreign URL or an empty --target exits 2, and a folder inside the
    repository, inside .verger/ or that cannot be created exits 6, each in one
    line and a hint with nothing said about the backup, and nothing written."""
    repo = gapped.workdir / "repo"
    verger_folder = gapped.config.parent / ".verger"
    refusals = [
        ("mysql://x@y/z", 2, "mysql:// URL"),
        ("", 2, "--target is empty"),
        (str(repo / "copy"), 6, "inside the backup repository"),
        (str(verger_folder / "restores" / "mine"), 6, "inside verger's own folder"),
        ("/proc/verger-restore", 6, "cannot create /proc/verger-restore"),
    ]
    for target, code, why in refusals:
        done = verger(gapped.config, "restore", "--backup", "1", "--target", target)
        assert done.returncode == code, (target, done.stdout + done.stderr)
        assert done.stdout == ""
        message, hint = done.stderr.strip().splitlines()
        assert why in message and hint.startswith("hint:"), done.stderr
    assert not (repo / "copy").exists()
    assert not (gapped.config.parent / "mysql:").exists()
    assert not (verger_folder / "restores").exists()


_LEAVE_RUNNING = """
import sys
from pathlib import Path
from verger.state import open_store

store = open_store(".verger/state.db", Path(sys.argv[1]))
store.add_backup("production", "pgbackrest", "full", "test")
store.close()
"""


def test_a_backup_that_never_finished_is_named_and_an_unknown_one_exits_2(
    gapped: Gapped,
) -> None:
    """'restore --backup' names an interrupted backup as such (exit 6), and a
    backup ID the catalog does not hold exits 2 for restore and verify alike."""
    subprocess.run(
        [sys.executable, "-c", _LEAVE_RUNNING, str(gapped.config.parent)], check=True
    )
    listed = verger(gapped.config, "--json", "backup", "list", check=True)
    newest = json.loads(listed.stdout)["backups"][0]
    assert newest["status"] == "interrupted"
    done = verger(gapped.config, "restore", "--backup", str(newest["id"]))
    assert done.returncode == 6, done.stdout + done.stderr
    message, hint = done.stderr.strip().splitlines()[-2:]
    assert f"backup #{newest['id']} was interrupted" in message, done.stderr
    assert "cannot be restored" in message and hint.startswith("hint:")
    for args in (("restore", "--backup", "99"), ("backup", "verify", "99")):
        done = verger(gapped.config, *args)
        assert done.returncode == 2, (args, done.stdout + done.stderr)
        assert "there is no backup #99" in done.stderr


def test_a_gap_a_later_backup_heals_leaves_two_ranges(
    workdir: Path, source: Source
) -> None:
    """With a backup taken after the gap, a time past the archive is refused
    with both ranges, one ending at the commit before the gap, the next
    starting at that backup's end."""
    config = backup_config(workdir, source)
    _break_the_archive(config, source, workdir)
    verger(config, "backup", "run", "--no-verify", check=True)
    done = verger(config, "restore", "--to-time", "2099-01-01 00:00:00+00:00")
    assert done.returncode == 6, done.stdout + done.stderr
    ranges = re.findall(r"from (\S+ \S+ UTC) to (\S+ \S+ UTC)", done.stderr)
    assert len(ranges) == 2 and "gap follows" not in done.stderr, done.stderr
    (_, before_gap), (after_gap, _) = ranges
    assert re.search(r"\.\d{6} UTC$", before_gap), before_gap
    assert _epoch(before_gap) < _epoch(after_gap)
    target = workdir / "copy"
    done = verger(config, "restore", "--to-time", after_gap, "--target", str(target))
    assert done.returncode == 0, done.stdout + done.stderr
    assert _rows(source, workdir, target) == list(range(1, 16))
