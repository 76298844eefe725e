"""A repository that lost the catalog's backups, or cannot be read, or is no folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import PASSPHRASE, Source, backup_config, verger

from verger.config import load_config
from verger.errors import ConfigError

needs_pgbackrest = pytest.mark.skipif(
    not Path("/usr/bin/pgbackrest").exists(), reason="pgBackRest is not installed"
)


@pytest.mark.parametrize("key", ["path", "cold_path"])
def test_an_empty_repository_path_is_refused_with_its_line(
    workdir: Path, source: Source, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """repository.path or cold_path given as '' is refused at its file:line, not
    read as the config's own folder."""
    repository = "{path: ''}" if key == "path" else "{path: repo, cold_path: ' '}"
    config = backup_config(workdir, source, engine="pg_dump", repository=repository)
    monkeypatch.setenv("VERGER_BACKUP_PASSPHRASE", PASSPHRASE)
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    line = f"verger.yml:10: backup.repository.{key}: expected a folder"
    assert line in caught.value.message and "empty path" in caught.value.message
    done = verger(config, "backup", "list")
    assert done.returncode == 2, done.stdout + done.stderr
    assert line in done.stderr and "Traceback" not in done.stderr


def _ready(config: Path, source: Source) -> None:
    """Set up archiving and restart the source so that archive_mode applies."""
    verger(config, "backup", "setup", check=True)
    source.restart()
    verger(config, "backup", "setup", check=True)


@needs_pgbackrest
def test_list_shows_the_catalog_unchecked_when_the_repository_cannot_be_read(
    workdir: Path, source: Source
) -> None:
    """With the repository, or only its WAL archive, unreadable to run_as,
    'backup list' warns in one line with pgBackRest's reason, still shows the
    catalog, and --json says the repository was not checked and why."""
    config = backup_config(workdir, source)
    _ready(config, source)
    verger(config, "backup", "run", "--no-verify", check=True)
    repo = workdir / "repo"
    [timeline] = (repo / "archive" / "koinonia-production").glob("*-*")
    for closed in (repo, timeline):
        closed.chmod(0o000)
        try:
            shown = verger(config, "backup", "list")
            listed = verger(config, "--json", "backup", "list")
        finally:
            closed.chmod(0o750)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        [warning] = shown.stderr.strip().splitlines()
        assert "could not be read" in warning and "Permission denied" in warning
        assert "done" in shown.stdout and "Traceback" not in shown.stderr
        assert listed.returncode == 0, listed.stdout + listed.stderr
        data = json.loads(listed.stdout)
        assert data["repository_checked"] is False
        assert "Permission denied" in data["repository_problem"]
        assert [row["status"] for row in data["backups"]] == ["done"]
