"""Release folders and the processes that serve them in an environment's slots."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from verger.config import Loaded
from verger.deploy import process
from verger.errors import DeployError, ToolError
from verger.state import Row, Store

log = logging.getLogger("verger.deploy")

# What is never copied from the source into a release folder.
IGNORED = (".verger", ".git", "__pycache__", ".venv", ".pytest_cache", ".mypy_cache")


@dataclass
class Slots:
    """Builds releases and starts, adopts and stops their processes."""

    loaded: Loaded
    store: Store

    @property
    def releases_dir(self) -> Path:
        return self.loaded.state_dir / "releases"

    @property
    def logs_dir(self) -> Path:
        return self.loaded.state_dir / "logs"

    def folder(self, environment: str, release_id: int, version: str) -> Path:
        return self.releases_dir / environment / f"{release_id}-{_safe(version)}"

    def log_path(self, release: Row) -> Path:
        name = f"{release.id}-{_safe(release.version)}.log"
        return self.logs_dir / str(release.environment) / name

    def handle(self, release: Row) -> process.Handle | None:
        if release.pid is None:
            return None
        return process.Handle(int(release.pid), str(release.pid_started or ""))

    def alive(self, release: Row | None) -> bool:
        return release is not None and process.alive(self.handle(release))

    # -- build ------------------------------------------------------------

    def check_source(self, source: Path) -> None:
        """Refuse a source that is missing, or that a copy would copy into itself.

        A source that holds the state folder (the app's own folder) is fine:
        the copy skips every ``.verger`` folder. A source inside it is not: the
        release folder is inside it too.
        """
        if not source.is_dir():
            raise DeployError(
                f"no release folder at {source}",
                "pass the folder holding the app, or run from it",
            )
        state = self.loaded.state_dir.resolve()
        if source.resolve().is_relative_to(state):
            raise DeployError(
                f"{source} is verger's state folder or inside it, where release "
                "folders are built; a copy of it would copy itself",
                f"deploy the app's folder ({self.loaded.root}) or another folder "
                f"outside {state}",
            )

    async def build(self, release: Row) -> None:
        """Copy the source into the release folder and run the build command there.

        A build that fails for any reason removes its half-built folder.
        """
        source, folder = Path(release.source), Path(release.folder)
        self.check_source(source)
        try:
            await asyncio.to_thread(_copy, source, folder)
            if self.loaded.config.build:
                await self._run_build(release, folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    async def _run_build(self, release: Row, folder: Path) -> None:
        log_path = self.log_path(release)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as out:
            proc = await asyncio.create_subprocess_shell(
                self.loaded.config.build or "",
                cwd=folder,
                env=self.environment_of(release, port=None),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
            code = await proc.wait()
        if code != 0:
            lines = [line for line in process.tail(log_path, 5) if line.strip()]
            said = f": {lines[-1].strip()}" if lines else ""
            raise ToolError(
                f"the build command exited with code {code}{said}",
                f"run the build by hand in a copy of {release.source}; its output "
                f"is in {log_path}",
                detail="\n".join(lines),
            )

    # -- processes --------------------------------------------------------

    def environment_of(self, release: Row, port: int | None) -> dict[str, str]:
        env_config = self.loaded.config.environments[release.environment]
        env = {**os.environ, **env_config.env}
        env.update(
            VERGER_APP=self.loaded.config.app,
            VERGER_ENVIRONMENT=release.environment,
            VERGER_VERSION=release.version,
            VERGER_RELEASE=str(release.id),
        )
        if port is not None:
            env["PORT"] = str(port)
        return env

    def start(self, release: Row, port: int, slot: str) -> process.Handle:
        """Start the release's process on ``port``; recorded before it serves anyone."""
        handle = process.spawn(
            self.loaded.config.start,
            cwd=Path(release.folder),
            env=self.environment_of(release, port),
            log_path=self.log_path(release),
            shell=True,
        )
        self.store.update_release(
            release.id,
            pid=handle.pid,
            pid_started=handle.started,
            port=port,
            slot=slot,
        )
        log.info(
            "Started %s release %s in the %s slot on port %d (pid %d).",
            release.environment,
            release.version,
            slot,
            port,
            handle.pid,
        )
        return handle

    async def stop(self, release: Row, status: str, grace: float = 10.0) -> None:
        """Stop a release's process and give the release its final status."""
        self.store.update_release(release.id, status="stopping", stop_at=None)
        handle = self.handle(release)
        if handle is not None and process.alive(handle):
            await asyncio.to_thread(process.stop, handle, grace)
            log.info(
                "Stopped %s release %s (pid %d).",
                release.environment,
                release.version,
                handle.pid,
            )
        self.store.update_release(release.id, status=status, stop_at=None)

    async def stop_process(self, release: Row, grace: float = 10.0) -> None:
        """Stop a release's process but keep its status, so the next agent starts it."""
        handle = self.handle(release)
        if handle is not None and process.alive(handle):
            await asyncio.to_thread(process.stop, handle, grace)

    def prune(self, environment: str, keep: int = 5) -> None:
        """Remove the folders of old stopped releases, keeping the newest ``keep``."""
        seen = 0
        for release in self.store.releases(environment, limit=500):
            if release.status in ("starting", "green", "live", "previous"):
                continue
            seen += 1
            if seen > keep and Path(release.folder).exists():
                shutil.rmtree(release.folder, ignore_errors=True)


def _safe(version: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in version)[:60]


def _copy(source: Path, folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        shutil.copytree(
            source, folder, ignore=shutil.ignore_patterns(*IGNORED), symlinks=True
        )
    except (OSError, RecursionError) as exc:
        raise DeployError(
            f"cannot copy {source} into its release folder: {_first_problem(exc)}",
            "check that verger can read every file in the source",
        ) from exc
    log.debug("Copied %s to %s in %.2fs.", source, folder, time.monotonic() - started)


def _first_problem(exc: BaseException) -> str:
    """One line for a failed copy; shutil.Error carries a list of (src, dst, why)."""
    if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list):
        problems = exc.args[0]
        if problems:
            source, _, why = problems[0]
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            return f"{source}: {why}{more}"
    return f"{type(exc).__name__}: {exc}"
