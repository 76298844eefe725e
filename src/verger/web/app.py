"""The dashboard's HTTP side: the page, its files, the JSON API, and the token at the door.

The page takes the token once, as ``/?token=...``, and trades it for a
session cookie: an expiry and an HMAC of it keyed by the token, so the token
itself never reaches the browser's cookie jar (cookies are not separated by
port: every service on the same host name receives them). The session
outlives an agent restart, as the token does, and ends after ``SESSION``
seconds. The browser is sent to the bare URL, so that the token leaves the
address bar and the history. The API takes that cookie or
``Authorization: Bearer TOKEN``. Everything the page needs is in
``static/``; a Content-Security-Policy lets the browser load nothing from
anywhere else.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from verger.config.types import split_listen
from verger.web.board import Board
from verger.web.metrics import METRICS, RANGES

log = logging.getLogger("verger.web")
# aiohttp's own complaints about requests, kept apart from the agent's others.
server_log = logging.getLogger("verger.web.server")

STATIC = Path(__file__).parent / "static"
COOKIE = "verger_dashboard"
SESSION = 12 * 3600
TOKEN_FILE = "dashboard.token"
HINT = "run 'verger dashboard' on the agent's host: it prints the URL with the token"
# The query parameters the token's redirect keeps: the page's own view.
KEPT = ("environment", "range")
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


def cookie_name(port: int) -> str:
    """The session cookie of the dashboard on ``port``: two dashboards keep theirs."""
    return f"{COOKIE}_{port}"


def _port(request: web.Request) -> int:
    """The port this request came in on, as the listening socket says (not Host)."""
    sockname = (
        request.transport.get_extra_info("sockname") if request.transport else None
    )
    return int(sockname[1]) if sockname else 0


def _signature(token: str, expires: int) -> str:
    message = f"dashboard-session:{expires}".encode()
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


def new_session(token: str, now: float | None = None) -> str:
    """A session value for the cookie: its expiry and an HMAC of it, not the token."""
    expires = int(time.time() if now is None else now) + SESSION
    return f"{expires}.{_signature(token, expires)}"


def valid_session(value: str | None, token: str, now: float | None = None) -> bool:
    """Whether a cookie's session was made with ``token`` and has not expired."""
    if value is None:
        return False
    expires_text, _, signature = value.partition(".")
    if not expires_text.isdigit():
        return False
    expires = int(expires_text)
    if expires < (time.time() if now is None else now):
        return False
    return hmac.compare_digest(signature.encode(), _signature(token, expires).encode())


def _bearer(request: web.Request) -> str | None:
    """The token of ``Authorization: Bearer TOKEN``, the scheme in any case."""
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


def _answer(request: web.Request, status: int, message: str, hint: str) -> web.Response:
    """An error as JSON for the API, as a line of text for anything else."""
    if request.path.startswith("/api/"):
        return web.json_response({"error": message, "hint": hint}, status=status)
    return web.Response(status=status, text=f"{message}\n")


def _refused(request: web.Request) -> web.Response:
    message = "missing or wrong dashboard token"
    if request.path.startswith("/api/"):
        return _answer(request, 401, message, HINT)
    page = (STATIC / "refused.html").read_text()
    return web.Response(
        status=401, text=page, content_type="text/html", charset="utf-8"
    )


def _login(request: web.Request, token: str) -> web.Response:
    """Trade a right ``?token=`` for the session cookie, back to the page at ``/``.

    The redirect goes to ``/`` whatever the path was (``//host/`` would be
    another site), with only the page's own parameters kept.
    """
    kept = {name: request.query[name] for name in KEPT if name in request.query}
    location = "/" + (f"?{urlencode(kept)}" if kept else "")
    response = web.Response(status=303, headers={"Location": location})
    response.set_cookie(
        cookie_name(_port(request)),
        new_session(token),
        max_age=SESSION,
        httponly=True,
        samesite="Strict",
        path="/",
    )
    # Older versions kept the token itself in this cookie: make the browser drop it.
    response.del_cookie(COOKIE, path="/")
    return response


@web.middleware
async def _guard(request: web.Request, handler: Any) -> web.StreamResponse:
    """Let in the session cookie or the bearer token; trade ``?token=`` for the cookie.

    A ``?token=`` is a fresh login: a wrong one is refused even beside a
    valid cookie, so that a bad link never looks as if it worked.
    """
    token = request.app[TOKEN]
    offered = request.query.get("token")
    if offered is not None and not request.path.startswith("/api/"):
        if not _same(offered, token):
            return _refused(request)
        return _login(request, token)
    cookie = request.cookies.get(cookie_name(_port(request)))
    if not (valid_session(cookie, token) or _same(_bearer(request), token)):
        return _refused(request)
    response = await handler(request)
    assert isinstance(response, web.StreamResponse)
    return response


def _http_error(request: web.Request, error: web.HTTPException) -> web.Response:
    """aiohttp's own refusals (no route, wrong method) in the dashboard's words."""
    status = error.status
    # The static folder has no listing: a bare /static/ is a page that is not there.
    if status == 403 and request.path.startswith("/static"):
        status = 404
    if status == 404:
        return _answer(request, 404, f"no page {request.path}", "open / instead")
    if status == 405:
        return _answer(request, 405, f"{request.method} is not allowed here", "use GET")
    return _answer(request, status, error.reason, "open / instead")


@web.middleware
async def _headers(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        response = _http_error(request, error)
    response.headers["Content-Security-Policy"] = POLICY
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    return response


class _ShortClientErrors(logging.Filter):
    """aiohttp's log of a malformed request as one line: no traceback, no request line.

    The request line may hold ``?token=``; the agent log must not.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            code = error.code
            record.msg = "The dashboard refused a malformed request (HTTP %s, %s)."
            record.args = (code, type(error).__name__)
            if record.levelno > logging.WARNING:
                record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


server_log.addFilter(_ShortClientErrors())


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
    runner = web.AppRunner(make_app(board, token), access_log=None, logger=server_log)
    await runner.setup()
    host, port = split_listen(listen)
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError:
        await runner.cleanup()
        raise
    log.info("dashboard on http://%s/ ('verger dashboard' prints its URL)", listen)
    return runner
