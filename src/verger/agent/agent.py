"""The agent: the long-running verger process on a host.

It keeps each environment's router and the releases' processes running
(restarting what dies, with backoff), runs deploys as tasks, stops previous
releases when their warm time is over, and answers the CLI on loopback HTTP
with a token. Routers and releases run in sessions of their own: when the
agent dies they keep serving, and the next agent adopts them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verger.agent.files import AgentFiles, new_token
from verger.config import Loaded, split_listen
from verger.deploy import gate, process
from verger.deploy.events import Events
from verger.deploy.machine import Context, Deployment, drain_and_stop, recover
from verger.deploy.routers import Router, Upstream, make_router
from verger.deploy.slots import Slots
from verger.deploy.version import check_version
from verger.errors import AgentError, BusyError, DeployError, VergerError
from verger.notify import DeployEvent, Notifier, make_notifier
from verger.scheduler import run_scheduler
from verger.state import Row, open_store

log = logging.getLogger("verger.agent")

SUPERVISE_EVERY = 0.25
ROUTER_READY_TIMEOUT = 10.0
# Seconds between tries to listen on a dashboard port another program holds.
DASHBOARD_RETRY = 15.0


@dataclass
class Backoff:
    """When a process that keeps dying may be started again."""

    failures: int = 0
    next_try: float = 0.0
    started: float = 0.0

    def failed(self) -> float:
        if time.monotonic() - self.started > 30:
            self.failures = 0
        delay = min(30.0, 0.5 * 2.0**self.failures)
        self.failures += 1
        self.next_try = time.monotonic() + delay
        return delay

    def ready(self) -> bool:
        return time.monotonic() >= self.next_try


@dataclass
class Running:
    """A deploy running in this agent."""

    deploy_id: int
    environment: str
    events: Events
    task: asyncio.Task[None] | None = None


@dataclass
class Agent:
    loaded: Loaded
    files: AgentFiles = field(init=False)
    token: str = field(default_factory=new_token)
    running: dict[str, Running] = field(default_factory=dict)
    events: dict[int, Events] = field(default_factory=dict)
    backoff: dict[str, Backoff] = field(default_factory=dict)
    router_problems: dict[str, str] = field(default_factory=dict)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    stop_all: bool = True
    # Where the rule evaluator sends its alerts; alerting sets it.
    alert_sink: Any = None
    # The monitor's metric store while it runs, for the dashboard.
    metrics: Any = None
    # The dashboard's runner while it listens; why it cannot, and when to retry.
    dashboard: Any = None
    dashboard_problem: str | None = None
    dashboard_retry_at: float = 0.0

    def __post_init__(self) -> None:
        self.files = AgentFiles(self.loaded.state_dir)
        self.config = self.loaded.config
        self.store = open_store(self.config.state, self.loaded.root)
        self.slots = Slots(self.loaded, self.store)
        self.routers: dict[str, Router] = {
            name: make_router(
                env.router,
                name,
                env.listen,
                self.files.run_dir / name,
                env.drain_timeout,
            )
            for name, env in self.config.environments.items()
        }
        self.notifier = _make_notifier(self.loaded)
        self.config_digest = config_digest(self.loaded.path)
        self.ctx = Context(
            self.loaded, self.store, self.slots, self.routers, self.notify
        )

    # -- start and stop ---------------------------------------------------

    def start_monitor(self) -> asyncio.Task[None] | None:
        """The monitor loop as a task of its own, when verger.yml has monitor:."""
        if self.config.monitor is None:
            return None
        from verger.monitor.alerting import make_dispatcher
        from verger.monitor.build import build_monitor

        try:
            if self.alert_sink is None:
                self.alert_sink = make_dispatcher(self.config, self.store)
            loop = build_monitor(
                self.config, self.loaded.root, self.routers, self.store, self.alert_sink
            )
        except Exception as exc:  # supervision goes on without monitoring
            log.error("Monitoring cannot start: %s; the agent runs without it.", exc)
            return None
        self.metrics = loop.store
        return asyncio.create_task(self._monitor(loop))

    async def _monitor(self, loop: Any) -> None:
        endpoint = None
        # The dispatcher's own clock ends group waits between evaluations.
        dispatching = asyncio.create_task(self._dispatch())
        try:
            endpoint = await self._monitor_endpoint(loop)
            await loop.run(self.stopping)
        except Exception as exc:
            log.exception("Monitoring stopped: %s; supervision goes on.", exc)
        finally:
            if endpoint is not None:
                await endpoint.cleanup()
            self.metrics = None
            loop.store.close()
            await dispatching

    async def _dispatch(self) -> None:
        """Deliver what the rules raise until the agent stops, then hand over the rest."""
        dispatcher = self.alert_sink
        try:
            await dispatcher.run(self.stopping)
        except Exception as exc:
            log.exception("Alert delivery stopped: %s; supervision goes on.", exc)
        finally:
            with contextlib.suppress(Exception):
                await dispatcher.drain(5.0)

    async def _monitor_endpoint(self, loop: Any) -> Any:
        """/metrics and /heartbeat/NAME on ``monitor.listen``, if it is set."""
        monitor = self.config.monitor
        if monitor is None or monitor.listen is None:
            return None
        from verger.monitor.http import start_http

        try:
            return await start_http(
                monitor.listen, loop.latest, self.store, list(monitor.heartbeats)
            )
        except OSError as exc:
            log.error(
                "The monitor endpoint cannot listen on %s: %s; monitoring goes on "
                "without it.",
                monitor.listen,
                exc,
            )
            return None

    async def start_dashboard(self) -> None:
        """The dashboard and its JSON API on ``dashboard.listen``, if it is set.

        When the port is taken the agent runs on without it and tries again
        every ``DASHBOARD_RETRY`` seconds; ``dashboard_problem`` says why.
        """
        section = self.config.dashboard
        if section is None or self.dashboard is not None:
            return
        from verger.web import Board, ensure_token, start_dashboard

        board = Board(self.config, self.store, lambda: self.metrics)
        self.dashboard_retry_at = time.monotonic() + DASHBOARD_RETRY
        try:
            token = ensure_token(self.files.state_dir)
            self.dashboard = await start_dashboard(section.listen, board, token)
        except OSError as exc:
            problem = _listen_problem(section.listen, exc)
            # Said once per reason: the retries that follow change nothing.
            say = log.error if problem != self.dashboard_problem else log.debug
            say(
                "The dashboard cannot listen on %s: %s; the agent runs without it "
                "and tries again every %.0f s.",
                section.listen,
                problem,
                DASHBOARD_RETRY,
            )
            self.dashboard_problem = problem
            return
        if self.dashboard_problem is not None:
            log.info(
                "The dashboard listens on %s now: its port is free.", section.listen
            )
        self.dashboard_problem = None

    def dashboard_state(self) -> dict[str, Any]:
        """Whether the dashboard listens, where, and if not, why: for the CLI."""
        section = self.config.dashboard
        return {
            "configured": section is not None,
            "listen": section.listen if section is not None else None,
            "listening": self.dashboard is not None,
            "problem": self.dashboard_problem,
        }

    async def _retry_dashboard(self) -> None:
        waiting = self.dashboard is None and self.dashboard_problem is not None
        if waiting and time.monotonic() >= self.dashboard_retry_at:
            await self.start_dashboard()

    def take_lock(self) -> Any:
        """Hold the agent lock for this state folder, or refuse to start."""
        self.files.state_dir.mkdir(parents=True, exist_ok=True)
        # Held open for the agent's whole life: the lock lasts as long as the file.
        handle = open(self.files.lock, "a+")  # noqa: SIM115
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise AgentError(
                f"another agent is already running for {self.loaded.path}",
                "use 'verger status' to see it, or 'verger down' to stop it",
            ) from None
        return handle

    async def start(self) -> None:
        """Adopt or start every router and release, then mark lost deploys."""
        self.files.run_dir.mkdir(parents=True, exist_ok=True)
        for name, env in self.config.environments.items():
            self.store.ensure_environment(name, env.router)
        for row in self.store.unfinished_deploys():
            if row.status == "running":
                self.store.update_deploy(row.id, status="interrupted")
                log.info(
                    "Deploy #%d of %s in %s was interrupted at step %s; the next "
                    "deploy or rollback will finish or undo it.",
                    row.id,
                    row.version,
                    row.environment,
                    row.step,
                )
        await asyncio.gather(*(self.ensure_router(name) for name in self.routers))
        await self.ensure_releases()

    async def shutdown(self) -> None:
        """Stop deploys, then (unless keeping them serving) routers and releases."""
        for running in list(self.running.values()):
            if running.task is not None:
                running.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await running.task
        if self.stop_all:
            # Routers first: they finish the requests in flight, then nothing
            # reaches the releases, which can stop.
            await asyncio.gather(*(self.stop_router(name) for name in self.routers))
            await asyncio.gather(
                *(self.slots.stop_process(r) for r in self.store.running_releases())
            )
        await self.notifier.drain(5.0)
        self.files.remove_info()

    # -- routers ----------------------------------------------------------

    def router_handle(self, name: str) -> process.Handle | None:
        row = self.store.environment(name)
        if row is None or row.router_pid is None:
            return None
        return process.Handle(int(row.router_pid), str(row.router_started or ""))

    def live_upstream(self, name: str) -> Upstream | None:
        row = self.store.environment(name)
        live = self.store.release(row.live_release) if row else None
        if live is None or live.port is None:
            return None
        return Upstream(live.slot or "blue", "127.0.0.1", int(live.port))

    async def ensure_router(self, name: str) -> None:
        """Adopt the environment's router if it runs, or start it with the live routing."""
        router = self.routers[name]
        handle = self.router_handle(name)
        if handle is not None and process.alive(handle):
            if self._router_changed(name):
                await self._replace_router(name, handle)
            elif await self._wait_ready(router, 2.0):
                log.info("Adopted the %s router (pid %d).", name, handle.pid)
                self.router_problems.pop(name, None)
                return
            else:
                await asyncio.to_thread(process.stop, handle, 2.0)
        await self.start_router(name)

    def _router_changed(self, name: str) -> bool:
        row = self.store.environment(name)
        router = self.routers[name]
        return row is not None and (
            row.router != router.kind or row.router_listen not in (None, router.listen)
        )

    async def _replace_router(self, name: str, handle: process.Handle) -> None:
        """Stop a router whose kind or listen address the config changed."""
        row = self.store.environment(name)
        assert row is not None
        router = self.routers[name]
        old = make_router(
            row.router, name, row.router_listen or router.listen, router.run_dir
        )
        log.warning(
            "The %s router changes from %s on %s to %s on %s; stopping the old one "
            "(requests in flight finish, new connections wait for the new one).",
            name, row.router, row.router_listen, router.kind, router.listen,
        )  # fmt: skip
        await asyncio.to_thread(
            process.stop, handle, router.drain_timeout, old.stop_signal
        )

    async def start_router(self, name: str) -> None:
        router = self.routers[name]
        host, port = split_listen(router.listen)
        if process.port_taken(host, port):
            holder = process.listener(port) or "another process"
            self.router_problems[name] = (
                f"port {port} ({router.listen}) is taken by {holder}"
            )
            # Tried again with backoff, not on every turn of the loop.
            delay = self.backoff.setdefault(f"router-{name}", Backoff()).failed()
            log.error(
                "Cannot start the %s router: %s; trying again in %.1fs.",
                name,
                self.router_problems[name],
                delay,
            )
            return
        router.run_dir.mkdir(parents=True, exist_ok=True)
        router.prepare(self.live_upstream(name))
        handle = process.spawn(
            router.command(),
            cwd=router.run_dir,
            env=dict(os.environ),
            log_path=self.files.logs_dir / f"router-{name}.log",
        )
        self.store.set_router(
            name, handle.pid, handle.started, router.kind, router.listen
        )
        if await self._wait_ready(router, ROUTER_READY_TIMEOUT, handle):
            log.info(
                "Started the %s router on %s (pid %d).", name, router.listen, handle.pid
            )
            self.router_problems.pop(name, None)
            return
        lines = process.tail(self.files.logs_dir / f"router-{name}.log", 3)
        self.router_problems[name] = "the router did not start: " + (
            lines[-1] if lines else "no output"
        )
        log.error("The %s router did not start: %s", name, "; ".join(lines))

    async def _wait_ready(
        self, router: Router, timeout: float, handle: process.Handle | None = None
    ) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if handle is not None and not process.alive(handle):
                return False
            with contextlib.suppress(VergerError, OSError):
                if await router.ready():
                    return True
            await asyncio.sleep(0.05)
        return False

    async def stop_router(self, name: str) -> None:
        handle = self.router_handle(name)
        if handle is not None:
            router = self.routers[name]
            await asyncio.to_thread(
                process.stop, handle, router.drain_timeout, router.stop_signal
            )
            log.info("Stopped the %s router.", name)
        self.store.set_router(name, None, None)

    # -- releases ---------------------------------------------------------

    async def ensure_releases(self) -> None:
        """Adopt releases that still run; start again those that should and do not."""
        if not self.running:
            await self._finish_stops()
        for release in self.store.running_releases():
            if self.slots.alive(release):
                continue
            if release.status == "starting" and self._deploying(release):
                continue
            if release.status in ("starting", "green"):
                # A release that never went live is not worth bringing back.
                if not self._deploying(release):
                    self.store.update_release(release.id, status="failed")
                continue
            await self.restart_release(release)

    async def _finish_stops(self) -> None:
        """Stop releases an earlier agent was draining or stopping when it died."""
        for release in self.store.releases_with_status("draining", "stopping"):
            log.info(
                "Release %s in %s was being stopped by an earlier agent; stopping it.",
                release.version,
                release.environment,
            )
            await self.slots.stop(release, "retired", grace=5.0)

    def _deploying(self, release: Row) -> bool:
        running = self.running.get(release.environment)
        if running is None:
            return False
        row = self.store.deploy(running.deploy_id)
        return row is not None and row.release_id == release.id

    async def restart_release(self, release: Row) -> None:
        key = f"release-{release.id}"
        backoff = self.backoff.setdefault(key, Backoff())
        if not backoff.ready():
            return
        if release.port is None or not Path(release.folder).is_dir():
            self.store.update_release(release.id, status="failed")
            return
        if release.pid is not None:
            delay = backoff.failed()
            log.warning(
                "Release %s in %s (pid %s) is not running; starting it again on "
                "port %s (next retry after %.1fs if it dies again).",
                release.version,
                release.environment,
                release.pid,
                release.port,
                delay,
            )
            self.store.audit(
                "verger",
                "restarted",
                release.environment,
                version=release.version,
                pid=release.pid,
                reason="the release's process ended",
            )
        backoff.started = time.monotonic()
        self.slots.start(release, int(release.port), release.slot or "blue")

    async def supervise(self) -> None:
        """The agent's loop: keep routers and releases up, retire previous releases."""
        while not self.stopping.is_set():
            try:
                await self._supervise_once()
            except VergerError as exc:
                log.error("Supervision: %s", exc.message)
            except Exception:
                log.exception("Supervision failed; trying again.")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), SUPERVISE_EVERY)

    async def _supervise_once(self) -> None:
        await self._retry_dashboard()
        for name in self.routers:
            if not process.alive(self.router_handle(name)):
                backoff = self.backoff.setdefault(f"router-{name}", Backoff())
                if backoff.ready():
                    if self.router_handle(name) is not None:
                        delay = backoff.failed()
                        log.warning(
                            "The %s router is not running; starting it again "
                            "(next retry after %.1fs).",
                            name,
                            delay,
                        )
                    backoff.started = time.monotonic()
                    await self.start_router(name)
        await self.ensure_releases()
        now = time.time()
        for release in self.store.running_releases():
            if (
                release.status == "previous"
                and release.stop_at
                and release.stop_at <= now
            ):
                if release.environment in self.running:
                    continue
                log.info(
                    "The warm time of %s in %s is over; draining and stopping it.",
                    release.version,
                    release.environment,
                )
                await drain_and_stop(self.ctx, release, "retired")

    # -- deploys ----------------------------------------------------------

    def notify(self, event: str, deploy: Row | None, reason: str = "") -> None:
        if deploy is None:
            return
        self.notifier.send(
            DeployEvent(
                event,  # type: ignore[arg-type]
                self.config.app,
                deploy.environment,
                deploy.version,
                deploy.id,
                reason or deploy.reason or "",
            )
        )

    async def begin(self, request: dict[str, Any]) -> int:
        """Start a deploy or rollback task and return its id."""
        self._refuse_if_config_changed()
        environment = str(request.get("environment", ""))
        kind = str(request.get("kind", "deploy"))
        if environment not in self.config.environments:
            known = ", ".join(self.config.environments)
            raise DeployError(
                f"no environment {environment!r} in {self.loaded.path.name}",
                f"use one of: {known}",
            )
        self._refuse_if_busy(environment)
        self._refuse_if_router_down(environment)
        actor = str(request.get("actor") or "unknown")
        version = str(request.get("version") or "")
        forced = bool(request.get("force"))
        if kind == "deploy":
            check_version(version)
            self.slots.check_source(Path(str(request.get("source", ""))))
            self._check_promotion(environment, version, forced)

        deploy_id = self.store.add_deploy(
            environment, kind, version or "?", actor, forced=forced
        )
        events = Events(deploy_id)
        self.events[deploy_id] = events
        running = Running(deploy_id, environment, events)
        self.running[environment] = running
        running.task = asyncio.create_task(self._run(running, kind, request))
        return deploy_id

    async def _run(self, running: Running, kind: str, request: dict[str, Any]) -> None:
        try:
            before = await self._routed(running.environment)
            for decision in await recover(
                self.ctx, running.environment, {running.deploy_id}
            ):
                running.events.emit("say", f"Recovered: {decision}.")
            # Recovery that moved the users back to the previous release did
            # what a rollback does; a rollback does not then go back again.
            after = await self._routed(running.environment)
            switched = None not in (before, after) and before != after
            deployment = Deployment(self.ctx, running.deploy_id, running.events)
            if kind == "rollback":
                await deployment.rollback(request.get("to"), recovered=switched)
            else:
                await deployment.deploy(Path(str(request["source"])))
        except asyncio.CancelledError:
            running.events.finish(status="interrupted", reason="the agent is stopping")
            raise
        except Exception as exc:
            log.exception("Deploy #%d failed unexpectedly.", running.deploy_id)
            self.store.update_deploy(
                running.deploy_id, status="failed", reason=str(exc)
            )
            running.events.finish(status="failed", reason=f"unexpected error: {exc}")
        finally:
            self.running.pop(running.environment, None)

    async def _routed(self, environment: str) -> str | None:
        """The address the router sends users to, or None when it cannot tell."""
        with contextlib.suppress(VergerError, OSError):
            upstream = await self.routers[environment].live()
            return upstream.address if upstream else ""
        return None

    def _refuse_if_config_changed(self) -> None:
        if config_digest(self.loaded.path) != self.config_digest:
            raise DeployError(
                f"{self.loaded.path.name} changed since the agent started, "
                "and the agent still runs the old one",
                "load it with 'verger down --keep-serving' then 'verger up'; "
                "routers and releases keep serving meanwhile",
            )

    def _refuse_if_busy(self, environment: str) -> None:
        running = self.running.get(environment)
        if running is None:
            return
        row = self.store.deploy(running.deploy_id)
        assert row is not None
        age = time.time() - row.started_at
        raise BusyError(
            f"a {row.kind} is already running in {environment}: #{row.id} "
            f"{row.version} by {row.actor}, started {age:.0f}s ago, at step {row.step}",
            f"wait for it to finish ('verger status {environment}'), then try again",
        )

    def _refuse_if_router_down(self, environment: str) -> None:
        problem = self.router_problems.get(environment)
        if problem:
            raise DeployError(
                f"the {environment} router is not running: {problem}",
                "free the port (the agent tries again by itself), or change "
                f"environments.{environment}.listen and run 'verger down "
                "--keep-serving' then 'verger up'",
            )
        if not process.alive(self.router_handle(environment)):
            raise DeployError(
                f"the {environment} router is not running; the agent is starting "
                "it again",
                f"try again in a few seconds; 'verger logs {environment} --router' "
                "shows why it stopped",
            )

    def _check_promotion(self, environment: str, version: str, forced: bool) -> None:
        requires = self.config.environments[environment].requires
        if requires is None or forced:
            return
        refused = gate.refusal(self.store, environment, requires, version)
        if refused is not None:
            raise refused


def config_digest(path: Path) -> str:
    """A digest of the config file, to notice it changed under a running agent."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""


def _listen_problem(listen: str, exc: OSError) -> str:
    """Why a port cannot be listened on, in the words 'verger up' shows."""
    if exc.errno == errno.EADDRINUSE:
        return f"port {split_listen(listen)[1]} is taken by another program"
    return exc.strerror or str(exc)


def _make_notifier(loaded: Loaded) -> Notifier:
    return make_notifier(loaded.config.notify)


async def serve(loaded: Loaded, stop_all_on_exit: bool = True) -> None:
    """Run the agent until SIGTERM or a shutdown request."""
    from verger.agent.api import start_api

    agent = Agent(loaded)
    lock = agent.take_lock()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, agent.stopping.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: None)
    try:
        await agent.start()
        runner, port = await start_api(agent)
        # Before agent.json: 'verger up' reads the dashboard's state right after.
        monitoring = agent.start_monitor()
        await agent.start_dashboard()
        agent.files.write_info(port, agent.token)
        log.info(
            "The agent is up (pid %d), answering on 127.0.0.1:%d.", os.getpid(), port
        )
        # A task of its own: a scheduling error cannot stop supervision, nor the reverse.
        scheduling = asyncio.create_task(
            run_scheduler(agent.loaded, agent.store, agent.stopping)
        )
        await agent.supervise()
        log.info("The agent is stopping.")
        if agent.dashboard is not None:
            await agent.dashboard.cleanup()
        await scheduling
        if monitoring is not None:
            await monitoring
        await runner.cleanup()
        await agent.shutdown()
    finally:
        agent.files.remove_info()
        lock.close()
