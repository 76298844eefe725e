"""The deploy state machine.

A deploy goes build, start, health, smoke, switch, watch, keep_previous. Each
step is recorded in the state store before it is taken, so that after a
crash of the agent at any point, ``recover`` can tell what was done and
finish or undo it, while the live release keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verger.config import Loaded
from verger.deploy import process
from verger.deploy.events import Events
from verger.deploy.health import run_smoke, wait_healthy
from verger.deploy.routers import Router, Upstream
from verger.deploy.slots import Slots
from verger.deploy.watch import Verdict, watch_window
from verger.errors import DeployError, VergerError
from verger.state import Row, Store

log = logging.getLogger("verger.deploy")

HOST = "127.0.0.1"

Notify = Callable[..., None]


@dataclass
class Context:
    """What a deploy works with; the agent holds one for its whole life."""

    loaded: Loaded
    store: Store
    slots: Slots
    routers: dict[str, Router]
    notify: Notify


async def pause_point(point: str) -> None:
    """Wait at a named point when VERGER_PAUSE_AT names it.

    Crash-safety tests set it on the agent to kill it at an exact point of a
    deploy (``step:switch``, ``switched``...); it is never set otherwise.
    """
    if point in os.environ.get("VERGER_PAUSE_AT", "").split(","):
        log.warning("Pausing at %s for 60s because VERGER_PAUSE_AT names it.", point)
        await asyncio.sleep(60)


class Deployment:
    """One deploy or rollback of one environment, run as a task in the agent."""

    def __init__(self, ctx: Context, deploy_id: int, events: Events) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.events = events
        row = ctx.store.deploy(deploy_id)
        assert row is not None
        self.row = row
        self.id = deploy_id
        self.environment = row.environment
        self.config = ctx.loaded.config
        self.env_config = self.config.environments[self.environment]
        self.router = ctx.routers[self.environment]
        self.green: Row | None = None
        self.blue: Row | None = None
        self.switched = False

    # -- plumbing ---------------------------------------------------------

    def say(self, message: str, **data: Any) -> None:
        self.events.emit("say", message, **data)

    async def step(self, name: str, message: str = "") -> None:
        """Record a step as started before taking it."""
        self.store.record_step(self.id, name, "started", message or None)
        self.events.emit("step", message, step=name)
        await pause_point(f"step:{name}")

    def step_done(self, name: str, detail: str = "") -> None:
        self.store.record_step(self.id, name, "done", detail or None)

    def reload(self, release: Row) -> Row:
        row = self.store.release(release.id)
        assert row is not None
        return row

    def upstream(self, release: Row, slot: str) -> Upstream:
        return Upstream(slot, HOST, int(release.port))

    # -- the deploy -------------------------------------------------------

    async def deploy(self, source: Path) -> None:
        """Run a deploy to its end; every outcome is recorded and announced."""
        self.ctx.notify("started", self.row)
        try:
            await self._deploy(source)
        except asyncio.CancelledError:
            self.store.update_deploy(self.id, status="interrupted")
            raise
        except VergerError as exc:
            await self._fail(exc)
        except Exception as exc:
            # Whatever broke, what the deploy started is undone the same way.
            log.exception("Deploy #%d failed unexpectedly.", self.id)
            await self._fail(
                VergerError(
                    f"unexpected error: {type(exc).__name__}: {exc}",
                    f"the live release keeps serving; see {self.ctx.loaded.state_dir}"
                    "/agent.log, and report it",
                )
            )

    async def _deploy(self, source: Path) -> None:
        self.blue = self._live_release()
        self.green = self._new_release(source)
        self.store.update_deploy(
            self.id,
            release_id=self.green.id,
            previous_release_id=self.blue.id if self.blue else None,
        )

        await self.step("build", f"Building {self.row.version} in {self.green.folder}.")
        await self.ctx.slots.build(self.green)
        self.step_done("build")

        await self._start_and_check(self.green)

        verdict = await self._switch_and_watch()
        if verdict.breached:
            await self._roll_back_after(verdict)
            return
        await self._keep_previous(verdict)

    def _live_release(self) -> Row | None:
        env = self.store.environment(self.environment)
        live = self.store.release(env.live_release) if env else None
        if live is not None and not self.ctx.slots.alive(live):
            self.say(
                f"The live release {live.version} is not running; "
                "there is no warm release to switch back to."
            )
            return None
        return live

    def _new_release(self, source: Path) -> Row:
        release_id = self.store.add_release(
            self.environment, self.row.version, "", str(source)
        )
        folder = self.ctx.slots.folder(self.environment, release_id, self.row.version)
        self.store.update_release(release_id, folder=str(folder))
        release = self.store.release(release_id)
        assert release is not None
        return release

    async def _start_and_check(self, release: Row) -> None:
        port = process.free_port(HOST)
        await self.step(
            "start", f"Starting {release.version} in the green slot on port {port}."
        )
        self.store.update_release(release.id, status="starting")
        handle = self.ctx.slots.start(release, port, "green")
        release = self.reload(release)
        self.step_done("start", f"pid {handle.pid}")

        health = self.config.health
        await self.step(
            "health",
            f"Waiting for {health.healthy_after} passing health checks of "
            f"{health.path} (up to {health.start_timeout:g}s).",
        )
        base_url = f"http://{HOST}:{port}"
        took = await wait_healthy(
            base_url, health, handle, self.ctx.slots.log_path(release)
        )
        self.step_done("health", f"{took:.1f}s")
        self.say(f"{release.version} is healthy after {took:.1f}s.")

        if self.config.smoke:
            await self.step("smoke", f"Running {len(self.config.smoke)} smoke tests.")
            await run_smoke(
                base_url,
                list(self.config.smoke),
                Path(release.folder),
                self.ctx.slots.environment_of(release, port),
                on_result=lambda test, ok, detail: self.say(
                    f"Smoke test {test.label!r} {'passed' if ok else 'failed'}: {detail}."
                ),
            )
            self.step_done("smoke")
        self.store.update_release(release.id, status="green")

    async def _switch_and_watch(self) -> Verdict:
        assert self.green is not None
        green = self.reload(self.green)
        await self.step("switch", f"Switching {self.environment} to {green.version}.")
        took = await self._switch_to(green, "green")
        # Counted from the switch on: before it, the answers were blue's, or the
        # router's own 503s while nothing was live, and none of them green's.
        baseline = await self.router.stats()
        self.switched = True
        if self.blue is not None:
            self.store.update_release(self.blue.id, status="previous", slot="blue")
        self.store.update_deploy(self.id, switch_seconds=took)
        self.step_done("switch", f"{took * 1000:.1f}ms")
        self.say(
            f"Switched {self.environment} to {green.version} in {took * 1000:.1f}ms.",
            switch_ms=took * 1000,
        )

        watch = self.config.watch
        await self.step(
            "watch",
            f"Watching for {watch.duration:g}s: breach at error rate above "
            f"{watch.max_error_rate:.1%} or p95 above {watch.max_p95 * 1000:.0f}ms.",
        )
        verdict = await watch_window(self.router, watch, baseline)
        self.store.update_deploy(self.id, verdict=verdict.outcome)
        self.step_done("watch", f"{verdict.outcome}: {verdict.reason}")
        return verdict

    async def _switch_to(self, release: Row, slot: str) -> float:
        started = time.perf_counter()
        await self.router.switch(self.upstream(release, slot))
        took = time.perf_counter() - started
        await pause_point("switched")
        self.store.set_live(self.environment, release.id)
        self.store.update_release(release.id, status="live", slot=slot)
        return took

    async def _roll_back_after(self, verdict: Verdict) -> None:
        assert self.green is not None
        reason = f"watch window breached: {verdict.reason}"
        if self.blue is None or not self.ctx.slots.alive(self.blue):
            self.store.update_deploy(self.id, status="failed", reason=reason)
            self.say(
                f"{reason}; there is no warm previous release, so it keeps serving."
            )
            self.ctx.notify("failed", self.store.deploy(self.id), reason=reason)
            self.events.finish(status="failed", reason=reason)
            return

        await self.step("rollback", f"{reason}; switching back to {self.blue.version}.")
        started = time.perf_counter()
        await self._switch_to(self.reload(self.blue), "blue")
        took = time.perf_counter() - started
        self.store.update_release(self.green.id, status="draining")
        self.step_done("rollback", f"{took * 1000:.1f}ms")
        self.say(
            f"Switched back to {self.blue.version} in {took * 1000:.1f}ms.",
            rollback_ms=took * 1000,
        )
        self.store.update_deploy(
            self.id, status="rolled_back", reason=reason, rollback_seconds=took
        )
        self.store.audit(self.row.actor, "rolled back", self.environment, reason=reason)
        self.ctx.notify("rolled_back", self.store.deploy(self.id), reason=reason)
        self.events.finish(status="rolled_back", reason=reason, rollback_ms=took * 1000)
        await drain_and_stop(self.ctx, self.reload(self.green), "rolled_back")

    async def _keep_previous(self, verdict: Verdict) -> None:
        assert self.green is not None
        await self.step("keep_previous")
        older = [
            r
            for r in self.store.running_releases()
            if r.environment == self.environment
            and r.status == "previous"
            and r.id not in (self.green.id, self.blue.id if self.blue else None)
        ]
        if self.blue is not None:
            stop_at = time.time() + self.config.keep_previous
            self.store.update_release(self.blue.id, stop_at=stop_at)
            self.say(
                f"Keeping {self.blue.version} warm for {self.config.keep_previous:g}s "
                "for an instant rollback."
            )
        self.step_done("keep_previous")
        outcome, reason = verdict.outcome, verdict.reason
        self.store.update_deploy(
            self.id, status="succeeded", verdict=outcome, reason=reason
        )
        self.store.audit(
            self.row.actor, "deployed", self.environment, version=self.row.version
        )
        if outcome == "inconclusive":
            self.say(f"The watch window was inconclusive: {reason}.{self._gated()}")
        self.ctx.notify("succeeded", self.store.deploy(self.id), reason=reason)
        self.events.finish(status="succeeded", verdict=outcome, reason=reason)
        for release in older:
            await drain_and_stop(self.ctx, release, "retired")
        self.ctx.slots.prune(self.environment)

    def _gated(self) -> str:
        """What an inconclusive window here means for the environments requiring it."""
        later = [
            name
            for name, env in self.config.environments.items()
            if env.requires == self.environment
        ]
        if not later:
            return ""
        return (
            f" That is not a pass: {' and '.join(later)} will not take "
            f"{self.row.version} until a watch window in {self.environment} that "
            "saw traffic passes."
        )

    async def _fail(self, exc: VergerError) -> None:
        """Undo what a failed deploy started; the live release keeps serving."""
        reason = exc.message
        if self.green is not None:
            green = self.reload(self.green)
            if (
                self.switched
                and self.blue is not None
                and self.ctx.slots.alive(self.blue)
            ):
                await self._switch_to(self.reload(self.blue), "blue")
            if not self.switched or self.blue is not None:
                await self.ctx.slots.stop(green, "failed", grace=5.0)
        self.store.update_deploy(self.id, status="failed", reason=reason)
        current = self.store.deploy(self.id)
        if current is not None:
            self.store.record_step(self.id, current.step, "failed", reason)
        # The CLI prints the reason once, from the result; the log keeps it too.
        log.warning("%s #%d failed: %s.", self.row.kind.capitalize(), self.id, reason)
        self.ctx.notify("failed", self.store.deploy(self.id), reason=reason)
        self.events.finish(status="failed", reason=reason, hint=exc.hint)

    # -- rollback ---------------------------------------------------------

    async def rollback(self, to_version: str | None, recovered: bool = False) -> None:
        """Switch back to an earlier release, starting it again if it is cold.

        ``recovered`` says that undoing an interrupted deploy just switched the
        users back to the release before it: that was the rollback asked for,
        unless ``to_version`` names another release.
        """
        try:
            env = self.store.environment(self.environment)
            live = self.store.release(env.live_release) if env else None
            if recovered and live is not None and to_version in (None, live.version):
                self._rolled_back_by_recovery(live)
                return
            await self._rollback(to_version)
        except asyncio.CancelledError:
            self.store.update_deploy(self.id, status="interrupted")
            raise
        except VergerError as exc:
            await self._fail(exc)

    async def _rollback(self, to_version: str | None) -> None:
        live = self._live_release()
        target = self._rollback_target(live, to_version)
        self.store.update_deploy(
            self.id,
            release_id=target.id,
            previous_release_id=live.id if live else None,
            version=target.version,
        )
        self.say(f"Rolling {self.environment} back to {target.version}.")
        if not self.ctx.slots.alive(target):
            if not Path(target.folder).is_dir():
                raise DeployError(
                    f"the release folder of {target.version} is gone ({target.folder})",
                    f"deploy {target.version} again with 'verger deploy "
                    f"{self.environment} PATH --version {target.version}'",
                )
            self.green = target
            await self._start_and_check(target)

        await self.step("switch", f"Switching {self.environment} to {target.version}.")
        started = time.perf_counter()
        await self._switch_to(self.reload(target), "blue")
        took = time.perf_counter() - started
        self.switched = True
        self.store.update_deploy(self.id, switch_seconds=took, rollback_seconds=took)
        self.step_done("switch", f"{took * 1000:.1f}ms")
        self.say(
            f"Switched {self.environment} to {target.version} in {took * 1000:.1f}ms."
        )

        if live is not None:
            stop_at = time.time() + self.config.keep_previous
            self.store.update_release(live.id, status="previous", stop_at=stop_at)
        self.store.update_deploy(self.id, status="succeeded", verdict="skipped")
        self.store.audit(
            self.row.actor, "rolled back", self.environment, to=target.version
        )
        self.ctx.notify(
            "rolled_back", self.store.deploy(self.id), reason="manual rollback"
        )
        self.events.finish(
            status="succeeded", version=target.version, rollback_ms=took * 1000
        )

    def _rolled_back_by_recovery(self, live: Row) -> None:
        reason = (
            f"undoing the interrupted deploy switched {self.environment} back to "
            f"{live.version}, which was the rollback"
        )
        self.store.update_deploy(
            self.id,
            release_id=live.id,
            version=live.version,
            status="succeeded",
            verdict="skipped",
            reason=reason,
        )
        self.say(
            f"Undoing the interrupted deploy was the rollback: {live.version} serves "
            f"{self.environment} again; 'verger rollback {self.environment}' once "
            "more goes further back."
        )
        self.store.audit(
            self.row.actor, "rolled back", self.environment, to=live.version
        )
        self.ctx.notify("rolled_back", self.store.deploy(self.id), reason=reason)
        self.events.finish(status="succeeded", version=live.version, reason=reason)

    def _rollback_target(self, live: Row | None, to_version: str | None) -> Row:
        """The release to go back to: never one of the version already live."""
        live_version = live.version if live is not None else None
        if to_version is not None and to_version == live_version:
            raise DeployError(
                f"{to_version} is already live in {self.environment}",
                f"name another release with --to; 'verger history {self.environment}'"
                " lists them",
            )
        releases = self.store.releases(self.environment, limit=200)
        candidates = [
            r
            for r in releases
            if r.status in ("previous", "retired", "rolled_back", "live")
            and r.version != live_version
        ]
        if to_version is not None:
            named = [r for r in candidates if r.version == to_version]
            if not named:
                raise DeployError(
                    f"no earlier release {to_version!r} in {self.environment}",
                    f"see 'verger history {self.environment}' for the releases there",
                )
            return named[0]
        older = [
            r
            for r in candidates
            if r.status in ("previous", "retired") and (live is None or r.id < live.id)
        ]
        if not older:
            besides = f" other than the live {live_version}" if live_version else ""
            raise DeployError(
                f"there is no earlier release in {self.environment}{besides} "
                "to roll back to",
                "name one with --to VERSION, or deploy a fixed version",
            )
        return older[0]


async def drain_and_stop(ctx: Context, release: Row, status: str) -> None:
    """Wait for requests in flight on a release to finish, then stop it."""
    environment = ctx.loaded.config.environments[release.environment]
    router = ctx.routers[release.environment]
    address = f"{HOST}:{release.port}"
    # Out of the supervised statuses first, so that nothing starts it again.
    ctx.store.update_release(release.id, status="draining", stop_at=None)
    deadline = time.monotonic() + environment.drain_timeout
    inflight = 0
    while time.monotonic() < deadline:
        try:
            inflight = await router.inflight(address)
        except VergerError:
            break
        if inflight == 0:
            break
        await asyncio.sleep(0.1)
    if inflight:
        log.warning(
            "Drain timeout of %gs passed with %d requests in flight on %s %s; "
            "stopping it cuts them.",
            environment.drain_timeout,
            inflight,
            release.environment,
            release.version,
        )
    await ctx.slots.stop(release, status)


async def recover(ctx: Context, environment: str, running: set[int]) -> list[str]:
    """Finish or undo deploys that an earlier agent left unfinished.

    The router is the truth about what users reach. A deploy whose new release
    is not live is undone (its process stopped). A deploy whose new release is
    live but whose watch window did not end is undone by switching back to
    the previous release when it is still warm, and finished otherwise.
    """
    decisions = []
    for row in ctx.store.unfinished_deploys(environment):
        if row.id in running:
            continue
        decisions.append(await _recover_one(ctx, row))
    return decisions


async def _recover_one(ctx: Context, row: Row) -> str:
    green = ctx.store.release(row.release_id)
    blue = ctx.store.release(row.previous_release_id)
    live = await ctx.routers[row.environment].live()
    if green is None or live is None or green.port != live.port:
        decision = await _undo_before_switch(ctx, row, green)
    elif row.step == "keep_previous" or row.kind == "rollback":
        decision = _finish_after_switch(ctx, row, green, blue)
    elif blue is not None and ctx.slots.alive(blue):
        decision = await _switch_back(ctx, row, green, blue)
    else:
        _mark_live(ctx, green)
        ctx.store.update_deploy(
            row.id, status="succeeded", reason=f"interrupted at {row.step}; kept live"
        )
        decision = (
            f"kept deploy #{row.id} ({row.version}) live: interrupted at {row.step} "
            "with no warm previous release to switch back to"
        )
    log.info("Recovery: %s.", decision)
    ctx.store.audit("verger", "recovered", row.environment, decision=decision)
    return decision


def _mark_live(ctx: Context, release: Row) -> None:
    ctx.store.set_live(release.environment, release.id)
    ctx.store.update_release(release.id, status="live")


async def _undo_before_switch(ctx: Context, row: Row, green: Row | None) -> str:
    if green is not None and row.kind == "deploy":
        await ctx.slots.stop(green, "failed", grace=5.0)
        # A build the dead agent started has no handle; its folder names it.
        stopped = await asyncio.to_thread(process.stop_in_folder, Path(green.folder))
        if stopped:
            log.info(
                "Stopped %d process group(s) left working in %s.",
                len(stopped),
                green.folder,
            )
    ctx.store.update_deploy(
        row.id, status="undone", reason=f"interrupted at {row.step}"
    )
    return f"undid deploy #{row.id} ({row.version}), interrupted at {row.step}"


def _finish_after_switch(ctx: Context, row: Row, green: Row, blue: Row | None) -> str:
    _mark_live(ctx, green)
    if blue is not None and blue.id != green.id:
        stop_at = time.time() + ctx.loaded.config.keep_previous
        ctx.store.update_release(blue.id, status="previous", stop_at=stop_at)
    ctx.store.update_deploy(
        row.id, status="succeeded", reason="finished after an interruption"
    )
    return f"finished deploy #{row.id} ({row.version}), interrupted at {row.step}"


async def _switch_back(ctx: Context, row: Row, green: Row, blue: Row) -> str:
    await ctx.routers[row.environment].switch(Upstream("blue", HOST, int(blue.port)))
    ctx.store.set_live(row.environment, blue.id)
    ctx.store.update_release(blue.id, status="live", slot="blue")
    await drain_and_stop(ctx, green, "failed")
    ctx.store.update_deploy(
        row.id, status="undone", reason=f"interrupted at {row.step}"
    )
    return (
        f"undid deploy #{row.id} ({row.version}), interrupted at {row.step}: "
        f"switched back to {blue.version}"
    )
