"""A repository that lost the catalog's backups, or cannot be read, or is no folder."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import PASSPHRASE, Source, backup_config, postgres_runner, verger

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


def _stanza_create(config: Path) -> None:
    """Start an empty stanza where the repository was, as an old setup did."""
    conf = config.parent / ".verger" / "backup" / "production" / "pgbackrest.conf"
    postgres_runner().run(
        [
            "/usr/bin/pgbackrest",
            f"--config={conf}",
            "--stanza=koinonia-production",
            "stanza-create",
        ],
        timeout=120,
    )


def _verified_check(config: Path) -> dict[str, str]:
    done = verger(config, "--json", "check")
    [found] = [c for c in json.loads(done.stdout) if c["name"] == "backup.verified"]
    return dict(found)


def _assert_shown_missing(config: Path, why: str) -> None:
    """The catalog's verified backup is listed missing and never counted."""
    shown = verger(config, "backup", "list")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert why in shown.stderr
    assert re.search(r"│ missing +│", shown.stdout), shown.stdout
    assert not re.search(r"│ verified +│", shown.stdout), shown.stdout
    data = json.loads(verger(config, "--json", "backup", "list", check=True).stdout)
    [row] = data["backups"]
    assert (row["status"], row["catalog_status"]) == ("missing", "verified")
    assert row["in_repository"] is False
    assert data["repository_checked"] is False
    assert why in data["repository_problem"]
    found = _verified_check(config)
    assert found["status"] == "fail", found
    assert "no verified backup is in the repository" in found["message"]


@needs_pgbackrest
def test_pgbackrest_backups_the_repository_lost_are_missing_never_verified(
    workdir: Path, source: Source
) -> None:
    """With the pgBackRest repository emptied, or replaced by an empty stanza,
    'backup list' shows the catalog's verified backup as missing, --json says so
    per backup and in repository_problem, backup.verified fails, and restore
    refuses; with the repository back, all is as before."""
    config = backup_config(workdir, source)
    _ready(config, source)
    verger(config, "backup", "run", check=True)
    assert _verified_check(config)["status"] == "ok"
    repo = workdir / "repo"
    repo.rename(workdir / "elsewhere")
    repo.mkdir(mode=0o750)
    shutil.chown(repo, "postgres", "postgres")
    try:
        _assert_shown_missing(config, "missing or not mounted")
        _stanza_create(config)
        _assert_shown_missing(config, "holds none of the catalog's 1 backup")
        done = verger(config, "restore", "--latest", "--target", str(workdir / "c"))
        assert done.returncode == 6, done.stdout + done.stderr
        assert "holds none of the catalog's 1 backup of production" in done.stderr
        assert "--forget-missing" in done.stderr
    finally:
        shutil.rmtree(repo)
        (workdir / "elsewhere").rename(repo)
    data = json.loads(verger(config, "--json", "backup", "list", check=True).stdout)
    assert [r["status"] for r in data["backups"]] == ["verified"]
    assert data["backups"][0]["in_repository"] is True
    assert _verified_check(config)["status"] == "ok"


def test_pg_dump_backups_the_repository_lost_are_missing_never_verified(
    workdir: Path, source: Source
) -> None:
    """With the pg_dump repository folder replaced by another holding none of
    the catalog's backups, the verified backup is listed missing and
    backup.verified fails; with the folder back, it is verified again."""
    config = backup_config(workdir, source, engine="pg_dump")
    verger(config, "backup", "setup", check=True)
    verger(config, "backup", "run", check=True)
    repo = workdir / "repo"
    repo.rename(workdir / "elsewhere")
    repo.mkdir()
    (repo / "notes.txt").write_text("another folder\n")
    try:
        _assert_shown_missing(config, "holds none of the catalog's 1 backup")
    finally:
        shutil.rmtree(repo)
        (workdir / "elsewhere").rename(repo)
    assert [r["status"] for r in _listed(config)] == ["verified"]
    assert _verified_check(config)["status"] == "ok"


def _listed(config: Path) -> list[dict[str, object]]:
    done = verger(config, "--json", "backup", "list", check=True)
    rows: list[dict[str, object]] = json.loads(done.stdout)["backups"]
    return rows


def _archive_command(source: Source) -> str:
    return str(source.sql("SHOW archive_command")[0][0])


@needs_pgbackrest
def test_pgbackrest_setup_refuses_a_repository_without_the_catalogs_backups(
    workdir: Path, source: Source
) -> None:
    """With the repository emptied, or repository.path moved to a new folder,
    'backup setup' refuses in one line naming how many backups are missing and
    where, changing nothing; --forget-missing records them lost and sets the
    new repository up, and backups work again."""
    config = backup_config(workdir, source)
    _ready(config, source)
    verger(config, "backup", "run", "--no-verify", check=True)
    conf = config.parent / ".verger" / "backup" / "production" / "pgbackrest.conf"
    written, archiving = conf.read_bytes(), _archive_command(source)
    repo = workdir / "repo"
    repo.rename(workdir / "elsewhere")
    repo.mkdir(mode=0o750)
    shutil.chown(repo, "postgres", "postgres")
    moved = workdir / "new-repo"
    moved_config = backup_config(
        workdir, source, repository=f"{{path: {moved}}}"
    ).read_text()
    for where in (repo, moved):
        config.write_text(moved_config.replace(str(moved), str(where)))
        done = verger(config, "backup", "setup")
        assert done.returncode == 6, done.stdout + done.stderr
        message, hint = done.stderr.strip().splitlines()
        assert message == (
            f"error: the repository at {where} lacks the catalog's 1 backup of "
            "production (#1): it is missing, not mounted, emptied, or another "
            "repository"
        )
        assert "--forget-missing" in hint and done.stdout == ""
        assert conf.read_bytes() == written and _archive_command(source) == archiving
        assert not any(repo.iterdir()) and not moved.exists()
    assert [r["status"] for r in _listed(config)] == ["missing"]

    done = verger(config, "backup", "setup", "--forget-missing")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"recorded 1 backup (#1) as lost: {moved} does not hold them" in done.stdout
    assert "pgbackrest check passed" in done.stdout
    verger(config, "backup", "run", "--no-verify", check=True)
    data = json.loads(verger(config, "--json", "backup", "list", check=True).stdout)
    assert [r["status"] for r in data["backups"]] == ["done", "lost"]
    assert data["repository_problem"] is None


def test_pg_dump_setup_refuses_a_missing_repository_until_told_to_forget(
    workdir: Path, source: Source
) -> None:
    """With the pg_dump repository folder gone, 'backup setup' refuses without
    making it again; --forget-missing records the backup lost and makes it."""
    config = backup_config(workdir, source, engine="pg_dump")
    verger(config, "backup", "setup", check=True)
    verger(config, "backup", "run", "--no-verify", check=True)
    repo = workdir / "repo"
    repo.rename(workdir / "elsewhere")
    done = verger(config, "backup", "setup")
    assert done.returncode == 6, done.stdout + done.stderr
    assert f"the repository at {repo} lacks the catalog's 1 backup" in done.stderr
    assert not repo.exists()
    done = verger(config, "backup", "setup", "--forget-missing")
    assert done.returncode == 0, done.stdout + done.stderr
    assert repo.is_dir()
    assert [r["status"] for r in _listed(config)] == ["lost"]
