"""Running PostgreSQL's and the engines' programs as the user that owns the data.

PostgreSQL's server programs refuse to run as root, and pgBackRest must run as
the owner of the cluster so that the files it writes into the repository can
be read back by ``archive_command``. verger itself may run as root (under
systemd, in CI); every engine command therefore goes through a ``Runner`` that
switches to ``backup.run_as``, never shows a secret in an error, and starts
the program so that it dies with verger (``subprocess`` sets the user itself,
in the child, with no ``runuser`` or ``su`` in between).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verger.children import OWNER, ending_with_me, owner_tag
from verger.errors import BackupError, ToolError

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def pg_program(name: str) -> str:
    """The full path of a PostgreSQL program: the server's own folder first, then PATH."""
    candidate = PG_BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise BackupError(
            f"the PostgreSQL program {name} is not installed",
            "install the PostgreSQL server package (postgresql-15 on Debian)",
        )
    return found


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    home: str


def resolve_user(run_as: str | None) -> User | None:
    """The user engine commands run as, or None to run them as verger's own user."""
    me = os.geteuid()
    if run_as is None:
        if me == 0:
            raise BackupError(
                "PostgreSQL's programs refuse to run as root, and backup.run_as is "
                "not set",
                "set backup.run_as: postgres (the user that owns the cluster's data "
                "folder) in verger.yml, or run verger as that user",
            )
        return None
    try:
        entry = pwd.getpwnam(run_as)
    except KeyError:
        raise BackupError(
            f"backup.run_as names the user {run_as!r}, who does not exist here",
            "set it to the user that owns the PostgreSQL data folder, usually postgres",
        ) from None
    if entry.pw_uid == 0:
        raise BackupError(
            "backup.run_as is root, and PostgreSQL's programs refuse to run as root",
            "set backup.run_as: postgres (the user that owns the cluster's data folder)",
        )
    if me not in (0, entry.pw_uid):
        raise BackupError(
            f"verger runs as uid {me} and cannot act as backup.run_as {run_as!r}",
            f"run verger as {run_as} or as root",
        )
    if me == entry.pw_uid:
        return None
    return User(run_as, entry.pw_uid, entry.pw_gid, entry.pw_dir)


@dataclass
class Runner:
    """Runs programs as the configured user, hiding ``secrets`` in anything shown."""

    user: User | None = None
    secrets: list[str] = field(default_factory=list)

    @property
    def uid(self) -> int:
        return self.user.uid if self.user else os.geteuid()

    @property
    def gid(self) -> int:
        return self.user.gid if self.user else os.getegid()

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, "********")
        return text

    def environment(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """verger's environment without its secrets, as run_as, tagged with this
        process as the owner.

        The tag passes down to what the program starts itself (pgBackRest's
        workers), which the next command ends if this one was killed.
        """
        # verger's own environment may hold the passphrase (as
        # VERGER_BACKUP_PASSPHRASE or whatever backup.passphrase names); no
        # program, and no scratch server, inherits it from there.
        env = {
            name: value
            for name, value in os.environ.items()
            if not value or value not in self.secrets
        }
        if self.user is not None:
            env.update(HOME=self.user.home, USER=self.user.name, LOGNAME=self.user.name)
        env[OWNER] = owner_tag()
        env.update(extra or {})
        return env

    def switch(self) -> tuple[int | None, int | None, list[int] | None]:
        """``user``, ``group`` and ``extra_groups`` for ``subprocess``."""
        if self.user is None:
            return None, None, None
        return self.user.uid, self.user.gid, []

    def spawn(self) -> dict[str, Any]:
        """How every program starts: as run_as, ending when verger dies."""
        user, group, extra_groups = self.switch()
        return {
            "cwd": self.workdir(),
            "user": user,
            "group": group,
            "extra_groups": extra_groups,
            "preexec_fn": ending_with_me(),
        }

    def run(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        timeout: float | None = None,
        check: bool = True,
        what: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run to completion and capture output; a failure raises ``ToolError``."""
        options = self.spawn()
        if cwd is not None:
            options["cwd"] = cwd
        try:
            done = subprocess.run(
                list(args),
                env=self.environment(env),
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                check=False,
                **options,
            )
        except subprocess.TimeoutExpired:
            raise ToolError(
                f"{what or Path(args[0]).name} did not finish within {timeout:g}s",
                "see the log for what it was doing, then retry",
            ) from None
        except FileNotFoundError:
            raise ToolError(
                f"{args[0]} is not installed", "run scripts/setup.sh to install it"
            ) from None
        if check and done.returncode != 0:
            raise self.failure(args, done.returncode, done.stdout + done.stderr, what)
        return done

    def failure(
        self, args: Sequence[str], code: int, output: str, what: str | None = None
    ) -> ToolError:
        """A one-line error for a failed program, with its last lines as detail."""
        lines = [line for line in self.mask(output).splitlines() if line.strip()]
        # The first line naming an error says why; programs often end with a
        # line about cleaning up instead.
        marked = [
            line
            for line in lines
            if any(word in line.lower() for word in ("error", "fatal", "panic"))
        ]
        last = (marked or lines or ["no output"])[0 if marked else -1].strip()
        return ToolError(
            f"{what or Path(args[0]).name} failed (exit {code}): {last[:300]}",
            "run with --debug for the full output",
            detail="\n".join(lines[-40:]),
        )

    def workdir(self) -> str:
        """A folder the user can enter, since some programs stat their cwd."""
        if self.user is None:
            return os.getcwd()
        return "/"

    def own(self, path: Path, mode: int = 0o700) -> Path:
        """Create ``path`` (if needed) owned by the configured user with ``mode``."""
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, self.uid, self.gid)
        path.chmod(mode)
        return path

    def check_reachable(self, path: Path) -> None:
        """Refuse a folder whose parents the configured user cannot enter."""
        if self.user is None:
            return
        for parent in [path, *path.parents]:
            if not parent.exists():
                continue
            info = parent.stat()
            if info.st_uid == self.user.uid:
                continue
            if info.st_mode & 0o001:
                continue
            if info.st_gid == self.user.gid and info.st_mode & 0o010:
                continue
            raise BackupError(
                f"{self.user.name} cannot enter {parent}, on the way to {path}",
                f"chmod o+x {parent}, or point backup.scratch and the repository "
                f"path at a folder {self.user.name} can reach",
            )
