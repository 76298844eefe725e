"""A repository that lost the catalog's backups, or cannot be read, or is no folder."""

from __future__ import annotations

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
