"""The dashboard's door and its HTTP answers: sessions, redirects, errors, the log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from web_support import TOKEN, board_for, write_project

from verger.config import load_config
from verger.state import open_store
from verger.web import Board, cookie_name, make_app, start_dashboard
from verger.web.app import SESSION, new_session, valid_session

Check = Callable[[TestClient[Any, Any], Board], Awaitable[None]]


def _serve(root: Path, check: Check) -> None:
    async def main() -> None:
        with board_for(root, seeded=False) as (board, _):
            async with TestClient(TestServer(make_app(board, TOKEN))) as client:
                await check(client, board)

    asyncio.run(main())


async def _raw(port: int, request: bytes) -> bytes:
    """Send bytes as they are (no client tidies them up) and read the whole answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


async def _login(client: TestClient[Any, Any]) -> str:
    answer = await client.get(f"/?token={TOKEN}", allow_redirects=False)
    assert answer.status == 303
    return str(answer.cookies[cookie_name(client.server.port or 0)].value)


def test_the_session_is_signed_by_the_token_and_ends(tmp_path: Path) -> None:
    """A session value is not the token, outlives a new app on the same token, and expires."""
    session = new_session(TOKEN, now=1000.0)
    assert TOKEN not in session
    assert valid_session(session, TOKEN, now=1000.0 + SESSION - 1)
    assert not valid_session(session, TOKEN, now=1000.0 + SESSION + 1)
    assert not valid_session(session, "another-token", now=1000.0)
    assert not valid_session(TOKEN, TOKEN, now=1000.0)
    expires, _, signature = session.partition(".")
    assert not valid_session(f"{int(expires) + 3600}.{signature}", TOKEN, now=1000.0)

    async def check(client: TestClient[Any, Any], board: Board) -> None:
        value = await _login(client)
        # The next agent (a new app, the same token kept on disk) takes it.
        async with TestClient(TestServer(make_app(board, TOKEN))) as again:
            name = cookie_name(again.server.port or 0)
            answer = await again.get("/api/v1/releases", cookies={name: value})
            assert answer.status == 200
            # A cookie named for another port, or holding the raw token, is refused.
            other = await again.get("/api/v1/releases", cookies={"x": value})
            assert other.status == 401
            raw = await again.get("/api/v1/releases", cookies={name: TOKEN})
            assert raw.status == 401

    _serve(tmp_path, check)


def test_the_token_redirect_stays_on_this_dashboard(tmp_path: Path) -> None:
    """?token= always redirects to / with only environment and range kept, never to //host."""

    async def check(client: TestClient[Any, Any], board: Board) -> None:
        port = client.server.port or 0
        answer = await _raw(
            port,
            f"GET //evil.example/?token={TOKEN} HTTP/1.1\r\nHost: x\r\n"
            "Connection: close\r\n\r\n".encode(),
        )
        head = answer.split(b"\r\n\r\n")[0].decode()
        assert head.startswith("HTTP/1.1 303")
        assert "\r\nLocation: /\r\n" in head
        kept = await client.get(
            f"/x?token={TOKEN}&environment=staging&range=6h&other=1",
            allow_redirects=False,
        )
        assert kept.headers["Location"] == "/?environment=staging&range=6h"

    _serve(tmp_path, check)


def test_bearer_in_any_case_and_a_wrong_query_token_is_a_failed_login(
    tmp_path: Path,
) -> None:
    """'bearer' lowercase lets in; a wrong ?token= is refused even beside a valid cookie."""

    async def check(client: TestClient[Any, Any], board: Board) -> None:
        for scheme in ("bearer", "BEARER", "Bearer"):
            answer = await client.get(
                "/api/v1/releases", headers={"Authorization": f"{scheme} {TOKEN}"}
            )
            assert answer.status == 200, scheme
        basic = await client.get(
            "/api/v1/releases", headers={"Authorization": f"Basic {TOKEN}"}
        )
        assert basic.status == 401
        await _login(client)
        assert (await client.get("/")).status == 200
        wrong = await client.get("/?token=wrong", allow_redirects=False)
        assert wrong.status == 401
        assert "Set-Cookie" not in wrong.headers

    _serve(tmp_path, check)


def test_errors_are_json_for_the_api_and_every_answer_has_the_headers(
    tmp_path: Path,
) -> None:
    """404 and 405 under /api/ are JSON with a hint; any answer has CSP and nosniff."""

    async def check(client: TestClient[Any, Any], board: Board) -> None:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        missing = await client.get("/api/v1/nothing", headers=auth)
        assert missing.status == 404
        body = await missing.json()
        assert body["error"] == "no page /api/v1/nothing" and body["hint"]
        wrong_method = await client.post("/api/v1/summary", headers=auth)
        assert wrong_method.status == 405
        assert (await wrong_method.json())["hint"] == "use GET"
        bare = await client.get("/static/", headers=auth)
        assert bare.status == 404
        page = await client.get("/nothing", headers=auth)
        assert page.status == 404
        refused = await client.get("/api/v1/summary")
        assert refused.status == 401
        for answer in (missing, wrong_method, bare, page, refused):
            assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
            assert answer.headers["X-Content-Type-Options"] == "nosniff"

    _serve(tmp_path, check)


def test_malformed_requests_leave_one_short_line_and_no_token_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A huge query, a bad Content-Length, a huge header: 400, one line each, no traceback."""
    loaded = load_config(str(write_project(tmp_path).path))
    secret = "s3cret-" + "t" * 20
    requests = [
        f"GET /?token={secret}&pad={'a' * 20000} HTTP/1.1\r\nHost: x\r\n\r\n",
        f"POST /?token={secret} HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        f"GET /?token={secret} HTTP/1.1\r\nHost: x\r\nX-Pad: {'b' * 20000}\r\n\r\n",
    ]

    async def main() -> list[bytes]:
        state = open_store(loaded.config.state, loaded.root)
        board = Board(loaded.config, state)
        runner = await start_dashboard("127.0.0.1:0", board, TOKEN)
        port = int(runner.addresses[0][1])
        try:
            return [await _raw(port, r.encode()) for r in requests]
        finally:
            await runner.cleanup()
            state.close()

    with caplog.at_level(logging.DEBUG):
        answers = asyncio.run(main())
    for answer in answers:
        assert answer.split(b"\r\n")[0].endswith(b" 400 Bad Request"), answer[:80]
    said = [r for r in caplog.records if r.name == "verger.web.server"]
    assert len(said) == len(requests), caplog.text
    for record in said:
        assert record.exc_info is None and record.levelno == logging.WARNING
        assert record.getMessage().startswith("The dashboard refused a malformed")
    assert secret not in caplog.text
    assert "Traceback" not in caplog.text
