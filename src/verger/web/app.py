"""The dashboard's HTTP side: the page, its files, the JSON API, and the token at the door.

The page takes the token once, as ``/?token=...``: it is kept in an
HttpOnly, SameSite=Strict cookie and the browser is sent to the bare URL,
so that the token leaves the address bar and the history. The API takes
that cookie or ``Authorization: Bearer TOKEN``. Everything the page needs is
in ``static/``; a Content-Security-Policy lets the browser load nothing from
anywhere else.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from aiohttp import web

from verger.config.types import split_listen
from verger.web.board import Board
from verger.web.metrics import METRICS, RANGES

log = logging.getLogger("verger.web")

STATIC = Path(__file__).parent / "static"
COOKIE = "verger_dashboard"
TOKEN_FILE = "dashboard.token"
HINT = "run 'verger dashboard' on the agent's host: it prints the URL with the token"
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

BOARD: web.AppKey[Board] = web.AppKey("board", Board)
TOKEN: web.AppKey[str] = web.AppKey("token", str)


def token_path(state_dir: Path) -> Path:
    return state_dir / TOKEN_FILE


def read_token(state_dir: Path) -> str | None:
    """The dashboard token kept in the state folder, or None before the first start."""
    try:
        token = token_path(state_dir).read_text().strip()
    except OSError:
        return None
    return token or None


def ensure_token(state_dir: Path) -> str:
    """The dashboard token, made once and kept (owner-only) so that a URL stays valid."""
    token = read_token(state_dir)
    if token is not None:
        return token
    state_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    tmp = token_path(state_dir).with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    os.replace(tmp, token_path(state_dir))
    return token


def _same(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def _refused(request: web.Request) -> web.Response:
    message = "missing or wrong dashboard token"
    if request.path.startswith("/api/"):
        return web.json_response({"error": message, "hint": HINT}, status=401)
    page = (STATIC / "refused.html").read_text()
    return web.Response(
        status=401, text=page, content_type="text/html", charset="utf-8"
    )


@web.middleware
async def _guard(request: web.Request, handler: Any) -> web.StreamResponse:
    """Let in the cookie or the bearer token; trade ``?token=`` for the cookie."""
    token = request.app[TOKEN]
    offered = request.query.get("token")
    if offered is not None and not request.path.startswith("/api/"):
        if not _same(offered, token):
            return _refused(request)
        response = web.Response(status=303, headers={"Location": request.path})
        response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/")
        return response
    bearer = request.headers.get("Authorization", "")
    bearer_token = bearer[7:] if bearer.startswith("Bearer ") else None
    if not (_same(request.cookies.get(COOKIE), token) or _same(bearer_token, token)):
        return _refused(request)
    response = await handler(request)
    assert isinstance(response, web.StreamResponse)
    return response


@web.middleware
async def _headers(request: web.Request, handler: Any) -> web.StreamResponse:
    response: web.StreamResponse = await handler(request)
    response.headers["Content-Security-Policy"] = POLICY
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    return response


def _bad(message: str, hint: str) -> web.Response:
    return web.json_response({"error": message, "hint": hint}, status=400)


def _environment(request: web.Request) -> str | None:
    board = request.app[BOARD]
    environment = request.query.get("environment") or board.default_environment()
    return environment if environment in board.environments() else None


def _unknown_environment(request: web.Request) -> web.Response:
    known = ", ".join(request.app[BOARD].environments())
    return _bad(
        f"no environment {request.query.get('environment')!r}", f"use one of: {known}"
    )


async def _page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def _summary(request: web.Request) -> web.Response:
    environment = _environment(request)
    if environment is None:
        return _unknown_environment(request)
    return web.json_response(await request.app[BOARD].summary(environment))


async def _series(request: web.Request) -> web.Response:
    metric = request.query.get("metric", "")
    range_name = request.query.get("range", "1h")
    environment = _environment(request)
    if metric not in METRICS:
        return _bad(f"no metric {metric!r}", f"use one of: {', '.join(METRICS)}")
    if range_name not in RANGES:
        return _bad(f"no range {range_name!r}", f"use one of: {', '.join(RANGES)}")
    if environment is None:
        return _unknown_environment(request)
    board = request.app[BOARD]
    return web.json_response(await board.series(metric, range_name, environment))


async def _incidents(request: web.Request) -> web.Response:
    try:
        limit = max(1, min(200, int(request.query.get("limit", "10"))))
    except ValueError:
        return _bad("limit must be a number", "such as ?limit=10")
    return web.json_response({"incidents": request.app[BOARD].incidents(limit)})


async def _releases(request: web.Request) -> web.Response:
    return web.json_response({"releases": request.app[BOARD].releases()})


def make_app(board: Board, token: str) -> web.Application:
    """The dashboard as an aiohttp application: the page, its files and the API."""
    app = web.Application(middlewares=[_headers, _guard])
    app[BOARD] = board
    app[TOKEN] = token
    app.router.add_get("/", _page)
    app.router.add_static("/static", STATIC)
    app.router.add_get("/api/v1/summary", _summary)
    app.router.add_get("/api/v1/series", _series)
    app.router.add_get("/api/v1/incidents", _incidents)
    app.router.add_get("/api/v1/releases", _releases)
    return app


async def start_dashboard(listen: str, board: Board, token: str) -> web.AppRunner:
    """Serve the dashboard on ``listen`` until the runner is cleaned up."""
    runner = web.AppRunner(make_app(board, token), access_log=None)
    await runner.setup()
    host, port = split_listen(listen)
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError:
        await runner.cleanup()
        raise
    log.info("dashboard on http://%s/ ('verger dashboard' prints its URL)", listen)
    return runner
