"""Without --snapshot, a refresh restores the newest verified backup of production."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

RUN_AS = "postgres" if os.geteuid() == 0 else None


def verger(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "verger", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_refresh_restores_the_newest_verified_backup(site):
    """A verified pg_dump backup is restored, masked and swapped in; its id is the source."""
    work = Path(tempfile.mkdtemp(prefix="verger-staging-", dir="/tmp"))
    work.chmod(0o755)
    site.folder = work
    run_as = f"\n  run_as: {RUN_AS}" if RUN_AS else ""
    site.extra = (
        "backup:\n  engine: pg_dump\n  database: production\n"
        f"  repository: {{path: {work / 'repo'}}}\n"
        "  passphrase: staging test passphrase 9c2d\n"
        f"  scratch: {work / 'scratch'}{run_as}"
    )
    config = site.write_config()
    try:
        taken = verger(config, "--json", "backup", "run")
        assert taken.returncode == 0, taken.stderr
        backup = json.loads(taken.stdout)
        assert backup["status"] == "verified"
        site.sql("UPDATE churches SET name = 'after the backup' WHERE id = 1")

        done = verger(config, "--json", "staging", "refresh")

        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["source"] == (
            f"verified backup #{backup['id']} ({backup['label']})"
        )
        assert site.sql("SELECT name FROM churches WHERE id = 1", site.staging_url) == [
            ("Church 1",)
        ]
        assert not site.sql(
            "SELECT 1 FROM members WHERE email ILIKE '%church.org%'", site.staging_url
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
