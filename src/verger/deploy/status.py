"""What each environment is really doing, read from the store, the processes and the router."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from verger.config import Loaded
from verger.deploy import process
from verger.deploy.routers import make_router
from verger.deploy.slots import Slots
from verger.errors import VergerError
from verger.state import Row, Store


async def environment_status(
    loaded: Loaded,
    store: Store,
    only: str | None = None,
    agent_running: bool = True,
    router_problems: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """One record per environment: router, live, previous and unfinished deploy.

    With no agent running, a deploy recorded as running cannot be: it is
    reported as interrupted (in the last deploy too), which is what the next
    agent will call it. ``router_problems`` are the running agent's reasons
    for routers it could not start.
    """
    problems = router_problems or {}
    slots = Slots(loaded, store)
    result = []
    for name, env in loaded.config.environments.items():
        if only is not None and name != only:
            continue
        row = store.environment(name)
        router = make_router(
            env.router,
            name,
            env.listen,
            loaded.state_dir / "run" / name,
            env.drain_timeout,
        )
        router_alive = row is not None and process.alive(
            process.Handle(int(row.router_pid or 0), str(row.router_started or ""))
        )
        routed: dict[str, Any] | None = None
        if router_alive:
            with contextlib.suppress(VergerError, OSError):
                upstream = await router.live()
                routed = (
                    None
                    if upstream is None
                    else {
                        "slot": upstream.slot,
                        "address": upstream.address,
                    }
                )
        live = store.release(row.live_release) if row else None
        releases = store.releases(name, limit=20)
        unfinished = store.unfinished_deploys(name)
        last = store.deploys(name, limit=1)
        result.append(
            {
                "environment": name,
                "listen": env.listen,
                "router": {
                    "kind": env.router,
                    "pid": row.router_pid if row else None,
                    "running": router_alive,
                    "routes_to": routed,
                    "problem": None if router_alive else problems.get(name),
                },
                "live": _release(live, slots),
                "previous": [
                    _release(r, slots) for r in releases if r.status == "previous"
                ],
                "unfinished": [_deploy(d, agent_running) for d in unfinished],
                "last_deploy": _deploy(last[0], agent_running) if last else None,
                "consistent": _consistent(live, routed),
            }
        )
    return result


def _consistent(live: Row | None, routed: dict[str, Any] | None) -> bool:
    if routed is None:
        return live is None
    return live is not None and routed["address"].endswith(f":{live.port}")


def _release(release: Row | None, slots: Slots) -> dict[str, Any] | None:
    if release is None:
        return None
    return {
        "id": release.id,
        "version": release.version,
        "status": release.status,
        "slot": release.slot,
        "port": release.port,
        "pid": release.pid,
        "running": slots.alive(release),
        "stop_at": release.stop_at,
        "since": release.updated_at,
    }


def _deploy(row: Row, agent_running: bool = True) -> dict[str, Any]:
    status = row.status
    if status == "running" and not agent_running:
        status = "interrupted"
    return {
        "id": row.id,
        "kind": row.kind,
        "version": row.version,
        "status": status,
        "step": row.step,
        "verdict": row.verdict,
        "reason": row.reason,
        "actor": row.actor,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
        "switch_ms": None if row.switch_seconds is None else row.switch_seconds * 1000,
        "age_s": time.time() - row.started_at,
    }
