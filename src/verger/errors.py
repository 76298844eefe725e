"""The one exception tree of verger.

Every error a user can meet is a ``VergerError``: a sentence saying what went
wrong and a hint saying what to do. Lower-layer errors (subprocess, HTTP,
database) are turned into these at the boundary, with the cause chained.
"""

from __future__ import annotations


class VergerError(Exception):
    """Something went wrong that the user can act on."""

    exit_code = 1

    def __init__(self, message: str, hint: str = "", *, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.detail = detail

    def __str__(self) -> str:
        return self.message


class ConfigError(VergerError):
    """The config file is missing, malformed or contradictory."""

    exit_code = 2

    def __init__(
        self, message: str, hint: str = "", *, problems: list[str] | None = None
    ):
        super().__init__(message, hint)
        self.problems = problems or []


class StateError(VergerError):
    """The state store cannot be opened, read or written."""


class AgentError(VergerError):
    """The agent is not running, not reachable, or refused a request."""

    exit_code = 3


class RouterError(VergerError):
    """A router could not be started, reached or switched."""


class DeployError(VergerError):
    """A deploy was refused or failed; the live release keeps serving."""

    exit_code = 4


class BusyError(DeployError):
    """Another deploy is already running in the same environment."""

    exit_code = 5


class ToolError(VergerError):
    """An external command failed; its output is attached as ``detail``."""


class BackupError(VergerError):
    """A backup, restore, verification or drill failed or was refused."""

    exit_code = 6


class RepositoryMissing(BackupError):
    """The backup repository's folder is gone or empty: unmounted, or deleted."""


class WrongPassphrase(BackupError):
    """The repository or a backup file does not open with backup.passphrase."""


class Interrupted(BackupError):
    """A backup job was stopped by a signal; nothing it was doing counts."""

    def __init__(
        self, message: str, hint: str = "", *, exit_code: int = 143, signal: str = ""
    ) -> None:
        super().__init__(message, hint)
        self.exit_code = exit_code
        # The signal's name, such as SIGTERM.
        self.signal = signal
