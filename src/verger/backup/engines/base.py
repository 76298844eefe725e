"""What a backup engine does for verger, whatever program does the work.

verger drives engines; it does not copy files or parse WAL itself. An engine
turns the ``backup:`` section into commands for its program, runs them as
``backup.run_as``, reads their machine-readable output and reports plain
facts: what a backup is called, when it started and stopped, which WAL it
needs, which segments the repository holds. Verification, gap analysis,
drills and retention decisions are verger's, built on these facts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from verger.backup.cluster import ScratchCluster
from verger.backup.system import Runner
from verger.config.model import Backup
from verger.errors import RepositoryMissing

# Called with (done, total) in bytes while an engine works; total may be 0 if unknown.
Progress = Callable[[int, int], None]


def no_progress(done: int, total: int) -> None:
    return None


def step(progress: Progress, phase: str, total: int = 0) -> None:
    """Start step ``phase`` of a job (``backup``, ``restore``, ``start``, …).

    A progress object with a ``begin`` method is told the step's name and then
    (0, total), so a bar can say what is happening; a plain callable hears only
    the bytes, as before.
    """
    begin = getattr(progress, "begin", None)
    if callable(begin):
        begin(phase)
        progress(0, total)


@dataclass(frozen=True)
class Context:
    """Everything an engine needs: the config section, where things go, who runs."""

    app: str
    database: str
    dsn: str
    section: Backup
    root: Path
    runner: Runner
    passphrase: str

    @property
    def scratch(self) -> Path:
        return (self.root / self.section.scratch).resolve()

    @property
    def state(self) -> Path:
        """A folder of verger's own for engine config files (not secret-free)."""
        return (self.root / ".verger" / "backup" / self.database).resolve()

    @property
    def stanza(self) -> str:
        return self.section.stanza or f"{self.app}-{self.database}"

    def repository_path(self) -> Path | None:
        path = self.section.repository.path
        return None if path is None else (self.root / path).resolve()

    def location(self) -> str:
        """Where the repository is, as a person would look for it."""
        path = self.repository_path()
        s3 = self.section.repository.s3
        if path is not None or s3 is None:
            return str(path)
        return f"s3://{s3.bucket}/{s3.prefix.strip('/')}".rstrip("/")


@dataclass(frozen=True)
class EngineBackup:
    """One backup as the engine's repository describes it."""

    label: str
    kind: str
    started_at: float
    finished_at: float
    size: int | None = None
    repo_size: int | None = None
    wal_start: str | None = None
    wal_stop: str | None = None
    prior: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class WalSegment:
    """One archived WAL segment: its 24-hex-digit name and when it was archived."""

    name: str
    archived_at: float


@dataclass(frozen=True)
class RestorePoint:
    """Where a restore stops: a backup's end, the end of the archive, or a time.

    ``label`` picks the backup set (None lets the engine choose the newest one
    that fits); ``time`` is a target in epoch seconds; with neither ``time``
    nor ``latest``, recovery stops as soon as the backup is consistent.
    """

    label: str | None = None
    time: float | None = None
    latest: bool = False
    # The backup's size where the caller has just listed it, for progress,
    # so the engine need not list the repository again.
    size: int | None = None


@dataclass(frozen=True)
class RepositoryStatus:
    reachable: bool
    problem: str | None = None
    free_bytes: int | None = None
    details: dict[str, str] = field(default_factory=dict)


class Engine(ABC):
    """The small interface every backup engine implements."""

    name: ClassVar[str]
    # Whether the engine keeps WAL and can restore to a point in time.
    pitr: ClassVar[bool]
    # The kinds of backup ``backup()`` accepts, the first being the default.
    kinds: ClassVar[tuple[str, ...]]

    def __init__(self, context: Context) -> None:
        self.context = context

    @property
    def runner(self) -> Runner:
        return self.context.runner

    def archive_command(self) -> str | None:
        """The archive_command this engine needs on the database, if it archives WAL."""
        return None

    def preflight(self) -> None:
        """Refuse, before a job runs anything, what would fail it deep inside."""
        return None

    @abstractmethod
    def setup(self, apply: bool) -> list[str]:
        """Configure the database and repository; return what was done or is needed.

        With ``apply`` false, nothing is changed and the lines say what a person
        must do (for a managed database where verger cannot set things itself).
        """

    @abstractmethod
    def backup(self, kind: str, progress: Progress = no_progress) -> EngineBackup:
        """Take one backup and return it as the repository now lists it."""

    @abstractmethod
    def backups(self) -> list[EngineBackup]:
        """Every backup the repository holds, oldest first."""

    @abstractmethod
    def restore(
        self,
        point: RestorePoint,
        cluster: ScratchCluster,
        progress: Progress = no_progress,
    ) -> None:
        """Restore into ``cluster`` and leave it running and accepting writes."""

    @abstractmethod
    def wal(self) -> list[WalSegment]:
        """The archived WAL segments, oldest first (empty for engines without WAL)."""

    def missing_error(self) -> RepositoryMissing | None:
        """A local repository whose folder is gone or holds nothing, or None.

        Only meaningful where the catalog says backups were taken there: a
        new repository is empty too.
        """
        path = self.context.repository_path()
        if path is None or not empty_folder(path):
            return None
        return missing_repository(path)

    def location(self) -> str:
        return self.context.location()

    def setup_holdings(self) -> set[str]:
        """Labels of the backups in the repository as setup would find it,
        read without writing anything."""
        return {taken.label for taken in self.backups()}

    def last_commit(self, names: list[str]) -> float | None:
        """The newest commit time in the first of the archived segments ``names``
        that holds one; None for engines without WAL or when none can be read."""
        return None

    @abstractmethod
    def expire(self, keep: list[str]) -> list[str]:
        """Delete every backup not in ``keep`` (and WAL no kept backup needs)."""

    @abstractmethod
    def repository(self) -> RepositoryStatus:
        """Whether the repository answers, and the space left where that is known."""


def empty_folder(path: Path) -> bool:
    """Whether ``path`` is no folder, an unreadable one, or an empty one."""
    try:
        return not path.is_dir() or not any(path.iterdir())
    except OSError:
        return True


def missing_repository(path: Path) -> RepositoryMissing:
    return RepositoryMissing(
        f"the repository at {path} is missing or not mounted",
        "mount it, or restore the folder from a copy; until then no backup "
        "can be listed, verified or restored",
    )
