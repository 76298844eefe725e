"""From verger.yml to an engine's ``Context``: which database, as whom, with what key."""

from __future__ import annotations

import os

from verger.backup.engines.base import Context
from verger.backup.system import Runner, resolve_user
from verger.config import Loaded
from verger.config.loader import unexpanded, unset_reference
from verger.config.model import Backup
from verger.errors import BackupError, ConfigError

PASSPHRASE_VARIABLE = "VERGER_BACKUP_PASSPHRASE"


def backup_section(loaded: Loaded) -> Backup:
    section = loaded.config.backup
    if section is None:
        raise ConfigError(
            f"{loaded.path.name} has no backup: section",
            "add one (verger init writes an example) naming the database under "
            "databases:",
        )
    return section


def passphrase(section: Backup) -> str:
    """The repository key: from the config (often ${VAR}) or the environment."""
    value = section.passphrase or os.environ.get(PASSPHRASE_VARIABLE, "")
    unset = unset_reference(value)
    if unset:
        # Encrypting with the literal text would make every backup unreadable
        # once the variable is set.
        raise BackupError(
            f"backup.passphrase names ${{{unset}}}, which is not set",
            f"export {unset} with the repository's passphrase, then run "
            "the command again",
        )
    # "$ecret" is a fair passphrase, so only the ${...} forms are refused.
    literal = unexpanded(value, bare=False)
    if literal:
        raise BackupError(
            f"backup.passphrase is written {literal}, which verger reads as "
            "literal text: only ${NAME} is taken from the environment",
            "write backup.passphrase: ${NAME} and export NAME with the passphrase",
        )
    if not value:
        raise BackupError(
            "backups are encrypted, and no passphrase is set",
            f"set backup.passphrase: ${{{PASSPHRASE_VARIABLE}}} in verger.yml and "
            f"export {PASSPHRASE_VARIABLE}; keep a copy somewhere safe, since "
            "without it no backup can be restored",
        )
    if value != value.strip():
        # One place would trim it and another not, and the repository would
        # then not open with the passphrase it was made with.
        raise BackupError(
            "backup.passphrase begins or ends with a space",
            "remove it (from the value or from the variable it names), keeping "
            "the passphrase the repository was created with",
        )
    if len(value) < 12:
        raise BackupError(
            "the backup passphrase is shorter than 12 characters",
            "use a long random passphrase, such as the output of "
            "'openssl rand -base64 32'",
        )
    return value


def repository_problem(section: Backup) -> BackupError | None:
    """Why the repository cannot be read here (no key, no run_as as root), or None."""
    try:
        passphrase(section)
        resolve_user(section.run_as)
    except BackupError as exc:
        return exc
    return None


def make_context(loaded: Loaded, *, catalog_only: bool = False) -> Context:
    """The engine's context; with ``catalog_only`` what the repository needs is no error.

    Commands that read only verger's catalog (``backup list`` without a key
    or started as root without ``backup.run_as``, ``dr report``) must work
    where the repository cannot be read; their context then holds an empty
    passphrase, which every engine refuses.
    """
    section = backup_section(loaded)
    problem = repository_problem(section)
    if problem is not None and not catalog_only:
        raise problem
    secret = passphrase(section) if problem is None else ""
    user = resolve_user(section.run_as) if problem is None else None
    runner = Runner(user, secrets=[secret])
    s3 = section.repository.s3
    if s3 is not None and s3.secret:
        runner.secrets.append(s3.secret)
    return Context(
        app=loaded.config.app,
        database=section.database,
        dsn=loaded.config.databases[section.database],
        section=section,
        root=loaded.root,
        runner=runner,
        passphrase=secret,
    )
