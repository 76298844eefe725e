"""The agent's HTTP API on loopback, for the CLI; every request carries the token."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

from aiohttp import web

from verger.errors import VergerError

if TYPE_CHECKING:
    from verger.agent.agent import Agent

AGENT_KEY = web.AppKey("agent", object)


def _agent(request: web.Request) -> Agent:
    agent: Agent = request.app[AGENT_KEY]  # type: ignore[assignment]
    return agent


@web.middleware
async def _auth(request: web.Request, handler: Any) -> web.StreamResponse:
    agent = _agent(request)
    given = request.headers.get("Authorization", "").removeprefix("Bearer ")
    if not hmac.compare_digest(given.encode(), agent.token.encode()):
        return web.json_response(
            {"error": "missing or wrong agent token", "hint": "use the verger CLI"},
            status=401,
        )
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except VergerError as exc:
        return web.json_response(
            {"error": exc.message, "hint": exc.hint, "kind": type(exc).__name__},
            status=409,
        )


async def _ping(request: web.Request) -> web.Response:
    agent = _agent(request)
    return web.json_response({"ok": True, "app": agent.config.app})


async def _begin(request: web.Request) -> web.Response:
    body = await request.json()
    deploy_id = await _agent(request).begin(body)
    return web.json_response({"deploy_id": deploy_id})


async def _events(request: web.Request) -> web.Response:
    agent = _agent(request)
    deploy_id = int(request.match_info["deploy_id"])
    after = int(request.query.get("after", "0"))
    events = agent.events.get(deploy_id)
    if events is None:
        row = agent.store.deploy(deploy_id)
        status = row.status if row else "unknown"
        return web.json_response({"events": [], "done": True, "status": status})
    items = await events.wait_after(after, timeout=10.0)
    return web.json_response({"events": items, "done": events.done and not items})


async def _shutdown(request: web.Request) -> web.Response:
    agent = _agent(request)
    body = await request.json() if request.can_read_body else {}
    agent.stop_all = not bool(body.get("keep_serving"))
    agent.stopping.set()
    return web.json_response({"ok": True})


async def _problems(request: web.Request) -> web.Response:
    agent = _agent(request)
    return web.json_response(
        {"routers": agent.router_problems, "dashboard": agent.dashboard_problem}
    )


async def _dashboard(request: web.Request) -> web.Response:
    return web.json_response(_agent(request).dashboard_state())


async def start_api(agent: Agent) -> tuple[web.AppRunner, int]:
    """Start the API on a free loopback port; return the runner and the port."""
    app = web.Application(middlewares=[_auth])
    app[AGENT_KEY] = agent
    app.router.add_get("/v1/ping", _ping)
    app.router.add_post("/v1/deploys", _begin)
    app.router.add_get("/v1/deploys/{deploy_id}/events", _events)
    app.router.add_post("/v1/shutdown", _shutdown)
    app.router.add_get("/v1/problems", _problems)
    app.router.add_get("/v1/dashboard", _dashboard)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    return runner, port
