"""A small application server for router tests, run as a process of its own.

    python tests/support/backend.py --port 8001 --name blue

Every answer names the backend, so a test can tell which slot served it:

- ``GET /health``: ``ok``.
- any other path, any method: JSON with the name, method, path, the size and
  SHA-256 of the request body, the ``X-Forwarded-*`` headers and all the
  headers it was sent.
- ``/slow?seconds=S``: the same, after S seconds.
- ``/status?code=N``: the same, with status N.
- ``/chunked?count=N&pause=P``: N chunks, P seconds apart, chunked encoding.
- ``POST /echo``: the request body streamed back as it arrives.
- ``/ws``: a WebSocket that echoes every message.
- ``/connections``: how many other connections are open to this backend.

``--keepalive`` sets how long an idle keep-alive connection is kept (apps
usually close them after a few seconds). ``--drop-reused`` makes the backend
close a reused keep-alive connection on its next request without answering,
which is what a router meets when the app closed the connection just as the
router sent a request on it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import signal

from aiohttp import WSMsgType, web


class Backend:
    """The request handlers, with the name and connection bookkeeping they share."""

    def __init__(self, name: str, drop_reused: bool) -> None:
        self.name = name
        self.drop_reused = drop_reused
        self.server: web.Server | None = None
        # Requests seen on each connection, to find reused ones; a test backend
        # lives for one test, so holding the handlers here costs nothing.
        self.seen: dict[object, int] = {}

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Route one request by its path."""
        count = self.seen.get(request.protocol, 0) + 1
        self.seen[request.protocol] = count
        if self.drop_reused and count == 2:
            return self.drop(request)

        path = request.path
        if path == "/health":
            return web.Response(text="ok")
        if path == "/connections":
            assert self.server is not None
            return web.Response(text=str(len(self.server.connections) - 1))
        if path == "/chunked":
            return await self.chunked(request)
        if path == "/echo":
            return await self.echo(request)
        if path == "/ws":
            return await self.websocket(request)
        if path == "/slow":
            await asyncio.sleep(float(request.query.get("seconds", "1")))
        status = int(request.query.get("code", "200")) if path == "/status" else 200
        return await self.describe(request, status)

    def drop(self, request: web.BaseRequest) -> web.StreamResponse:
        """Close the connection without an answer, as an app closing it while idle."""
        assert request.transport is not None
        request.transport.abort()
        raise asyncio.CancelledError

    async def describe(
        self, request: web.BaseRequest, status: int = 200
    ) -> web.Response:
        """Answer with the backend's name and what it was sent."""
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
        forwarded = {
            k.lower(): v
            for k, v in request.headers.items()
            if k.lower().startswith("x-forwarded-")
        }
        body = {
            "name": self.name,
            "method": request.method,
            "path": request.path_qs,
            "host": request.headers.get("Host", ""),
            "body_bytes": size,
            "body_sha256": digest.hexdigest(),
            "forwarded": forwarded,
            "chunked_request": "chunked"
            in request.headers.get("Transfer-Encoding", ""),
            "headers": {k.lower(): v for k, v in request.headers.items()},
        }
        text = json.dumps(body)
        return web.Response(status=status, text=text, content_type="application/json")

    async def chunked(self, request: web.BaseRequest) -> web.StreamResponse:
        """Stream numbered chunks with pauses between them."""
        count = int(request.query.get("count", "3"))
        pause = float(request.query.get("pause", "0.2"))
        response = web.StreamResponse(headers={"X-Backend": self.name})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for index in range(count):
            await response.write(f"chunk {index} from {self.name}\n".encode())
            if index + 1 < count:
                await asyncio.sleep(pause)
        await response.write_eof()
        return response

    async def echo(self, request: web.BaseRequest) -> web.StreamResponse:
        """Stream the request body back as it arrives."""
        response = web.StreamResponse(headers={"X-Backend": self.name})
        response.enable_chunked_encoding()
        await response.prepare(request)
        async for chunk in request.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response

    async def websocket(self, request: web.BaseRequest) -> web.WebSocketResponse:
        """Echo every message, prefixed with the backend's name."""
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await ws.send_str(f"{self.name}: {message.data}")
            elif message.type == WSMsgType.BINARY:
                await ws.send_bytes(message.data)
        return ws


async def serve(port: int, name: str, keepalive: float, drop_reused: bool) -> None:
    """Serve on 127.0.0.1:port until SIGTERM or SIGINT."""
    backend = Backend(name, drop_reused)
    server = web.Server(backend.handle, keepalive_timeout=keepalive)
    backend.server = server
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(server, "127.0.0.1", port, reuse_address=True)

    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()

    listener.close()
    await server.shutdown(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--keepalive", type=float, default=5.0)
    parser.add_argument("--drop-reused", action="store_true")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.name, args.keepalive, args.drop_reused))


if __name__ == "__main__":
    main()
