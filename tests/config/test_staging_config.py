"""The staging: section: rules and columns checked when verger.yml is read."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from verger.backup.context import passphrase
from verger.config import load_config
from verger.config.model import Backup
from verger.config.staging import Staging
from verger.errors import BackupError, ConfigError
from verger.scheduler.jobs import jobs_for
from verger.staging import RefreshError, salt_of

BASE = """\
app: shop
start: node server.js
environments:
  staging:
    listen: 8081
databases:
  production: postgresql://postgres@127.0.0.1/koinonia
  staging: postgresql://postgres@127.0.0.1/koinonia_staging
"""


def load(folder: Path, staging: str) -> object:
    path = folder / "verger.yml"
    path.write_text(BASE + textwrap.dedent(staging), encoding="utf-8")
    return load_config(path)


def problems(folder: Path, staging: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(folder, staging)
    return " ".join([caught.value.message, *caught.value.problems])


def test_rules_in_short_and_long_form_load(tmp_path: Path) -> None:
    """A rule is a word or a mapping with its options; keep is a list of columns."""
    loaded = load(
        tmp_path,
        """\
        staging:
          mask:
            members.phone: phone
            members.born: {rule: date_noise, days: 5}
            members.note: {rule: fixed, value: redacted}
            messages.body: {rule: text, whole: true}
            members.ip: null
          keep: [churches.name]
        """,
    )
    section = loaded.config.staging  # type: ignore[attr-defined]
    assert section.mask["members.phone"].rule == "phone"
    assert section.mask["members.born"].days == 5
    assert section.mask["messages.body"].whole
    assert section.mask["members.ip"].rule == "null"
    assert section.refresh == "0 0 * * *"


def test_a_column_under_mask_and_keep_is_refused(tmp_path: Path) -> None:
    """Naming one column twice is an error naming it."""
    found = problems(
        tmp_path,
        "staging:\n  mask: {members.phone: phone}\n  keep: [members.phone]\n",
    )
    assert "members.phone is under both mask: and keep:" in found


def test_source_must_be_a_known_database(tmp_path: Path) -> None:
    """staging.source names a database under databases:, listing the known ones."""
    found = problems(tmp_path, "staging:\n  source: prod\n")
    assert "staging.source: names 'prod'" in found
    assert "known: production, staging" in found


def test_unknown_rule_lists_the_accepted_ones(tmp_path: Path) -> None:
    """A misspelt rule is an error that shows the rules verger knows."""
    found = problems(tmp_path, "staging:\n  mask: {members.phone: fone}\n")
    assert "staging.mask.members.phone.rule" in found and "date_noise" in found


def test_fixed_needs_a_value_and_columns_need_a_table(tmp_path: Path) -> None:
    """fixed without value:, and a key without table.column, are refused."""
    assert "needs value:" in problems(tmp_path, "staging:\n  mask: {a.b: fixed}\n")
    assert "write table.column" in problems(tmp_path, "staging:\n  keep: [phone]\n")


def test_short_salt_and_bad_cron_are_refused(tmp_path: Path) -> None:
    """A salt under 16 characters and an invalid cron expression are errors."""
    assert "shorter than 16" in problems(tmp_path, "staging:\n  salt: short\n")
    assert "cron expression" in problems(tmp_path, "staging:\n  refresh: nightly\n")


def test_the_nightly_refresh_is_a_scheduled_job(tmp_path: Path) -> None:
    """The agent refreshes at 00:00 UTC by default, at staging.refresh, or never."""

    def refresh_jobs(staging: str) -> list[tuple[str, str, tuple[str, ...]]]:
        jobs = jobs_for(load(tmp_path, staging).config)  # type: ignore[attr-defined]
        return [(j.name, j.cron, j.argv) for j in jobs if j.name == "staging-refresh"]

    assert refresh_jobs("staging: {}\n") == [
        ("staging-refresh", "0 0 * * *", ("staging", "refresh"))
    ]
    assert refresh_jobs("staging:\n  refresh: '30 2 * * *'\n")[0][1] == "30 2 * * *"
    assert refresh_jobs("staging:\n  refresh: null\n") == []
    assert refresh_jobs("") == []


@pytest.mark.parametrize(
    ("salt", "said"),
    [
        ("${REVSTG_SALT:-defaultdefaultdefault}", "written ${REVSTG_SALT…}"),
        ("$VERGER_STAGING_SALT_TYPO", "written $VERGER_STAGING_SALT_TYPO"),
        ("prefix-${NOT CLOSED and long enough", "written ${NOT…}"),
        (" " * 20, "fewer than 8 different characters"),
        ("aaaaaaaaaaaaaaaaaaaa", "fewer than 8 different characters"),
        ("ab ab ab ab ab ab ab ab", "fewer than 8 different characters"),
    ],
)
def test_a_salt_anyone_could_guess_is_refused(salt: str, said: str) -> None:
    """A salt verger would use as literal text (a shell default or a bare $NAME,
    which it does not expand) or with fewer than 8 different characters is
    refused with a sentence saying why, never used to mask."""
    section = Staging(salt=salt, mask={}, keep=[])  # type: ignore[arg-type]
    with pytest.raises(RefreshError) as caught:
        salt_of(section)
    assert said in caught.value.message
    assert caught.value.hint


def test_a_random_salt_and_a_dollar_inside_one_are_accepted() -> None:
    """A random salt, one with a $ inside it, and one from the environment are
    used as they are."""
    for salt in ("q8Zx$2vLr9TmB1nKw4Yp", "correct horse battery staple $9"):
        section = Staging(salt=salt, mask={}, keep=[])  # type: ignore[arg-type]
        assert salt_of(section) == salt


@pytest.mark.parametrize("written", ["${PASS:-fallback}", "x${PASS"])
def test_a_passphrase_written_as_a_shell_default_is_refused(written: str) -> None:
    """backup.passphrase: ${NAME:-default} is refused (verger expands only
    ${NAME}), while a passphrase that merely starts with $ is used."""
    with pytest.raises(BackupError, match="only \\$\\{NAME\\} is taken"):
        passphrase(Backup(passphrase=written))
    assert passphrase(Backup(passphrase="$uperSecret-9f2")) == "$uperSecret-9f2"
