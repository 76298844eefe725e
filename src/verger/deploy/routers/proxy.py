"""The built-in router process: one environment's HTTP/1.1 reverse proxy.

Run by the agent as a process of its own, so that users' requests keep flowing
while the agent restarts::

    python -m verger.deploy.routers.proxy --spec RUN_DIR/router-production.json

The spec (written by ``BuiltinRouter.prepare``) names the listen address, the
control socket, the state file and the timeouts. Users' requests go to the
live upstream through a keep-alive connection pool per upstream; the agent
reads and switches the live upstream over an HTTP API on the control socket:

- ``GET /ready``: the process is up and listening.
- ``GET /live``, ``PUT /live``: the live upstream, and the switch.
- ``GET /inflight?address=HOST:PORT``: requests in flight on an upstream.
- ``GET /stats``: ``Stats.to_dict()``.
- ``GET /pools``: the upstreams that still have a connection pool.

A switch is written to the state file before it takes effect, and the state
file is read at start, so a restarted router serves the same upstream.

After a switch the old upstream's requests finish on its pool, which closes
once none is left in flight. The router answers 503 while there is no live
upstream, 502 when the upstream cannot be reached and 504 when it does not
answer within the read timeout, and counts these as its own errors. A request
that meets a keep-alive connection the app closed while idle is sent again on
a fresh one: by aiohttp for bodiless idempotent requests, here for requests
whose body (64 KiB at most) it kept while streaming it. SIGTERM stops the
listener, lets requests in flight finish for up to 10 seconds, then exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import uvloop
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from verger.config.types import split_listen
from verger.deploy.routers.base import Upstream
from verger.deploy.routers.stats import Stats

log = logging.getLogger("verger.router")

# Headers that describe one connection, not the message (RFC 9110 section 7.6.1);
# ``Expect`` is answered here, and the upstream side sets its own framing.
HOP_BY_HOP = (
    "Connection",
    "Keep-Alive",
    "Proxy-Connection",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "TE",
    "Trailer",
    "Transfer-Encoding",
    "Upgrade",
    "Expect",
)
# The WebSocket handshake is made anew on the upstream connection.
WS_HANDSHAKE = (
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
    "Sec-WebSocket-Extensions",
    "Sec-WebSocket-Protocol",
    "Sec-WebSocket-Accept",
)
# The client's headers are passed as they are; aiohttp must not add its own.
SKIP_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
# A request body up to this size is kept while it streams, so that it can be
# sent again when a reused upstream connection turns out to be closed.
REPLAY_LIMIT = 64 * 1024
# The router's own answers, short and plain.
FAILURES = {
    502: "upstream unreachable\n",
    503: "no live release\n",
    504: "upstream timed out\n",
}


@dataclass(frozen=True)
class Spec:
    """What the router process needs to start: addresses, files and timeouts."""

    environment: str
    listen: str
    control: str
    state: str
    drain_timeout: float = 30.0
    connect_timeout: float = 5.0
    read_timeout: float = 120.0
    pool_idle_timeout: float = 2.0
    client_keepalive: float = 75.0

    @classmethod
    def load(cls, path: Path) -> Spec:
        """The spec written at ``path``."""
        return cls(**json.loads(path.read_text()))

    def dump(self, path: Path) -> None:
        """Write the spec to ``path``, atomically."""
        write_atomic(path, json.dumps(asdict(self), indent=2) + "\n")


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a reader sees the old or the new whole."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def read_state(path: Path) -> Upstream | None:
    """The live upstream kept in the state file, or None if there is none yet."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    live = data.get("live")
    return None if live is None else upstream_from_dict(live)


def write_state(path: Path, live: Upstream | None) -> None:
    """Keep the live upstream in the state file."""
    data = {"live": None if live is None else asdict(live)}
    write_atomic(path, json.dumps(data) + "\n")


def upstream_from_dict(data: dict[str, Any]) -> Upstream:
    """An upstream from its JSON form."""
    return Upstream(
        slot=str(data["slot"]), host=str(data["host"]), port=int(data["port"])
    )


def describe(upstream: Upstream) -> str:
    """An upstream as the log names it: ``blue 127.0.0.1:8001``."""
    return f"{upstream.slot} {upstream.address}"


class HeadWithBody(web.StreamResponse):
    """A response whose head waits for its first body bytes, to leave in one write."""

    _send_headers_immediately = False


class UpstreamBroke(Exception):
    """The upstream failed after the response began; the client connection closes."""


class Attempt:
    """What tracing learned about one upstream attempt: was the connection reused."""

    __slots__ = ("reused",)

    def __init__(self) -> None:
        self.reused = False


class Outcome:
    """How a request ended, for the stats: its status and whose failure it was."""

    __slots__ = ("router_error", "status")

    def __init__(self) -> None:
        # Until an upstream answers, a failure is the router's own 502.
        self.status = 502
        self.router_error = True

    def answered(self, status: int) -> None:
        self.status = status
        self.router_error = False

    def failed(self, status: int) -> web.Response:
        """The router's own answer for a failure to reach the upstream."""
        self.status = status
        self.router_error = True
        return web.Response(status=status, text=FAILURES[status])


async def _on_reuse(
    session: aiohttp.ClientSession, context: SimpleNamespace, params: object
) -> None:
    context.trace_request_ctx.reused = True


def _tracing() -> aiohttp.TraceConfig:
    """Tracing that marks attempts made on a reused keep-alive connection."""
    config = aiohttp.TraceConfig()
    config.on_connection_reuseconn.append(_on_reuse)
    config.freeze()
    return config


class Pool:
    """One upstream's keep-alive connections and its count of requests in flight.

    Two sessions share the one connector, so the same connections: requests
    with a body go through the traced one, which learns whether an attempt
    used a reused connection; the rest skip the cost of tracing.
    """

    __slots__ = ("base", "connector", "inflight", "session", "traced", "upstream")

    def __init__(
        self, upstream: Upstream, spec: Spec, tracing: aiohttp.TraceConfig
    ) -> None:
        self.upstream = upstream
        host = f"[{upstream.host}]" if ":" in upstream.host else upstream.host
        self.base = f"http://{host}:{upstream.port}"
        self.inflight = 0
        self.connector = aiohttp.TCPConnector(
            limit=0, keepalive_timeout=spec.pool_idle_timeout, ttl_dns_cache=60
        )
        self.session = self._session(spec, [])
        self.traced = self._session(spec, [tracing])

    def _session(
        self, spec: Spec, tracing: list[aiohttp.TraceConfig]
    ) -> aiohttp.ClientSession:
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=spec.connect_timeout,
            sock_connect=spec.connect_timeout,
            sock_read=spec.read_timeout,
        )
        return aiohttp.ClientSession(
            connector=self.connector,
            connector_owner=False,
            timeout=timeout,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=SKIP_AUTO_HEADERS,
            trace_configs=tracing,
            max_line_size=16384,
            max_field_size=16384,
        )

    async def close(self) -> None:
        """Close every connection to the upstream, idle or not."""
        await self.session.close()
        await self.traced.close()
        await self.connector.close()


class Body:
    """A request body streamed to the upstream, kept while small enough to resend."""

    __slots__ = ("complete", "kept", "reading", "size", "source", "started")

    def __init__(self, source: aiohttp.StreamReader) -> None:
        self.source = source
        self.kept: list[bytes] = []
        self.size = 0
        self.started = False
        self.reading = False
        self.complete = False

    async def stream(self) -> AsyncIterator[bytes]:
        """Yield the body as it arrives from the client."""
        self.started = True
        while chunk := await self._read():
            yield chunk
        self.complete = True

    async def _read(self) -> bytes:
        self.reading = True
        try:
            chunk = await self.source.readany()
        finally:
            self.reading = False
        self.size += len(chunk)
        if self.size <= REPLAY_LIMIT:
            self.kept.append(chunk)
        return chunk

    async def again(self) -> bytes | AsyncIterator[bytes] | None:
        """The body to send on a second attempt, or None if it cannot be sent again."""
        if not self.started:
            return self.stream()

        # The failed attempt's writer is cancelled, not yet stopped: let it
        # leave the client's stream before reading the rest of it here.
        for _ in range(10):
            if not self.reading:
                break
            await asyncio.sleep(0)
        if self.reading:
            return None

        while not self.complete and self.size <= REPLAY_LIMIT:
            if not await self._read():
                self.complete = True
        return b"".join(self.kept) if self.size <= REPLAY_LIMIT else None


class Proxy:
    """Sends users' requests to the live upstream and counts them."""

    def __init__(self, spec: Spec, live: Upstream | None) -> None:
        self.spec = spec
        self.tracing = _tracing()
        self.pools: dict[str, Pool] = {}
        self.live: Pool | None = None if live is None else self._pool(live)
        self.stats = Stats(started=time.time())
        self.background: set[asyncio.Task[None]] = set()
        self.switching = asyncio.Lock()

    # The hot path: no logging, no JSON, nothing that blocks.

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Answer one user request from the live upstream."""
        start = time.monotonic()
        pool = self.live
        if pool is None:
            self.stats.record(503, time.monotonic() - start, router_error=True)
            return web.Response(status=503, text=FAILURES[503])

        pool.inflight += 1
        outcome = Outcome()
        try:
            if request.headers.get("Upgrade", "").lower() == "websocket":
                return await self._websocket(request, pool, start, outcome)
            return await self._forward(request, pool, outcome)
        finally:
            pool.inflight -= 1
            if pool.inflight == 0 and pool is not self.live:
                self._retire(pool, "its last request in flight finished")
            if outcome.status != 101:
                self.stats.record(
                    outcome.status,
                    time.monotonic() - start,
                    router_error=outcome.router_error,
                )

    async def _forward(
        self, request: web.BaseRequest, pool: Pool, outcome: Outcome
    ) -> web.StreamResponse:
        """Send the request upstream and stream the answer back."""
        if request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")

        try:
            upstream = await self._send(request, pool)
        except TimeoutError:
            return outcome.failed(504)
        except (aiohttp.ClientError, OSError):
            return outcome.failed(502)

        outcome.answered(upstream.status)
        return await self._relay(request, upstream, outcome)

    async def _send(
        self, request: web.BaseRequest, pool: Pool
    ) -> aiohttp.ClientResponse:
        """The upstream's response head, sent again once on a stale connection.

        aiohttp itself resends an idempotent request without a body. A request
        with a body is sent again only if it failed on a reused connection
        before any answer (the app had closed it while idle, so it never saw
        the request) and the body can be sent whole a second time.
        """
        url = URL(pool.base + request.raw_path, encoded=True)
        headers = upstream_headers(request)
        if not request.body_exists:
            return await pool.session.request(
                request.method, url, headers=headers, allow_redirects=False
            )

        body = Body(request.content)
        attempt = Attempt()
        try:
            return await pool.traced.request(
                request.method,
                url,
                headers=headers,
                data=body.stream(),
                allow_redirects=False,
                trace_request_ctx=attempt,
            )
        except aiohttp.ClientConnectorError:
            raise
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            again = await body.again() if attempt.reused else None
            if again is None:
                raise
        return await pool.session.request(
            request.method, url, headers=headers, data=again, allow_redirects=False
        )

    async def _relay(
        self,
        request: web.BaseRequest,
        upstream: aiohttp.ClientResponse,
        outcome: Outcome,
    ) -> web.StreamResponse:
        """Stream the upstream's response to the client as it arrives."""
        # Body bytes that came with the head leave with it, in one write; a
        # head with nothing behind it yet is sent at once.
        try:
            first = upstream.content.read_nowait()
        except (aiohttp.ClientError, OSError, TimeoutError):
            upstream.close()
            return outcome.failed(502)
        waiting = not first and not upstream.content.is_eof()
        kind = web.StreamResponse if waiting else HeadWithBody
        response = kind(
            status=upstream.status,
            reason=upstream.reason,
            headers=downstream_headers(upstream.headers),
        )
        try:
            await response.prepare(request)
            if first:
                await response.write(first)
            while True:
                try:
                    chunk = await upstream.content.readany()
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    # Too late for a 502: the client sees the response cut short.
                    outcome.failed(502)
                    raise UpstreamBroke(str(exc)) from exc
                if not chunk:
                    break
                await response.write(chunk)
            await response.write_eof()
        except BaseException:
            # A half-read upstream connection must not go back to the pool.
            upstream.close()
            raise
        upstream.release()
        return response

    async def _websocket(
        self, request: web.BaseRequest, pool: Pool, start: float, outcome: Outcome
    ) -> web.StreamResponse:
        """Open the same WebSocket upstream and relay messages both ways."""
        headers = upstream_headers(request)
        for name in WS_HANDSHAKE:
            headers.popall(name, None)
        offered = request.headers.get("Sec-WebSocket-Protocol", "")
        protocols = [p.strip() for p in offered.split(",") if p.strip()]
        url = URL(pool.base + request.raw_path, encoded=True)
        try:
            upstream = await pool.session.ws_connect(
                url, headers=headers, protocols=protocols, max_msg_size=0
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status < 400:
                return outcome.failed(502)
            outcome.answered(exc.status)
            return web.Response(
                status=exc.status, text="upstream refused the upgrade\n"
            )
        except TimeoutError:
            return outcome.failed(504)
        except (aiohttp.ClientError, OSError):
            return outcome.failed(502)

        chosen = (upstream.protocol,) if upstream.protocol else ()
        client = web.WebSocketResponse(protocols=chosen, max_msg_size=0)
        await client.prepare(request)
        # Counted once upgraded: a WebSocket's lifetime is not a request's latency.
        outcome.answered(101)
        self.stats.record(101, time.monotonic() - start)
        async with upstream:
            await relay_websocket(client, upstream)
        return client

    # Decisions: each one logs a sentence.

    async def switch(self, upstream: Upstream) -> None:
        """Send every new request to ``upstream``; the old one drains, then closes.

        The state file is written first, so that a restarted router never
        serves an upstream older than the one a switch answered with; the
        write runs off the event loop, so its fsync stalls no request.
        """
        async with self.switching:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(
                None, write_state, Path(self.spec.state), upstream
            )
            self._switch(upstream)

    def _switch(self, upstream: Upstream) -> None:
        old = self.live
        pool = self._pool(upstream)
        self.live = pool
        was = "none" if old is None else describe(old.upstream)
        log.info("switch: new requests go to %s (was %s)", describe(upstream), was)
        if old is None or old is pool:
            return
        if old.inflight == 0:
            self._retire(old, "it had no requests in flight")
            return
        log.info(
            "drain: %d requests in flight on %s finish there",
            old.inflight,
            describe(old.upstream),
        )
        self._spawn(self._watch_drain(old))

    def _pool(self, upstream: Upstream) -> Pool:
        """The pool for ``upstream``'s address, made if there is none yet."""
        pool = self.pools.get(upstream.address)
        if pool is None:
            pool = Pool(upstream, self.spec, self.tracing)
            self.pools[upstream.address] = pool
        pool.upstream = upstream
        return pool

    def _retire(self, pool: Pool, why: str) -> None:
        """Close an old upstream's idle connections, now that nothing runs on them."""
        if self.pools.get(pool.upstream.address) is pool:
            del self.pools[pool.upstream.address]
        log.info("pool closed: %s, %s", describe(pool.upstream), why)
        self._spawn(pool.close())

    async def _watch_drain(self, pool: Pool) -> None:
        """Say so if an old upstream still has requests in flight after the drain."""
        await asyncio.sleep(self.spec.drain_timeout)
        if self.pools.get(pool.upstream.address) is pool and pool is not self.live:
            log.info(
                "drain: %d requests still in flight on %s after %gs; "
                "its pool closes when they finish",
                pool.inflight,
                describe(pool.upstream),
                self.spec.drain_timeout,
            )

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def inflight(self, address: str) -> int:
        """Requests in flight on an upstream address; 0 once its pool is gone."""
        pool = self.pools.get(address)
        return 0 if pool is None else pool.inflight

    async def close(self) -> None:
        """Close every pool."""
        for pool in list(self.pools.values()):
            await pool.close()
        self.pools.clear()
        if self.background:
            await asyncio.wait(self.background, timeout=1.0)


def upstream_headers(request: web.BaseRequest) -> CIMultiDict[str]:
    """The client's headers less hop-by-hop ones, plus the X-Forwarded-* set."""
    headers = request.headers.copy()
    strip_hop_by_hop(headers, request.headers.get("Connection"))

    peer = request.remote or ""
    prior = ", ".join(headers.popall("X-Forwarded-For", ()))
    headers["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
    # A TLS terminator in front of the router already says https; keep that.
    headers.setdefault("X-Forwarded-Proto", request.scheme)
    headers.setdefault("X-Forwarded-Host", request.host)
    return headers


def downstream_headers(headers: Any) -> CIMultiDict[str]:
    """The upstream's response headers less hop-by-hop ones."""
    copied: CIMultiDict[str] = CIMultiDict(headers)
    strip_hop_by_hop(copied, headers.get("Connection"))
    return copied


def strip_hop_by_hop(headers: CIMultiDict[str], connection: str | None) -> None:
    """Remove the hop-by-hop headers, and any header that ``Connection`` names."""
    for name in HOP_BY_HOP:
        headers.popall(name, None)
    if connection:
        for token in connection.split(","):
            if token.strip():
                headers.popall(token.strip(), None)


async def relay_websocket(
    client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse
) -> None:
    """Pass messages both ways until either side closes, then close the other."""
    towards_upstream = asyncio.ensure_future(_pump(client, upstream))
    towards_client = asyncio.ensure_future(_pump(upstream, client))
    done, pending = await asyncio.wait(
        (towards_upstream, towards_client), return_when=asyncio.FIRST_COMPLETED
    )
    for task in pending:
        task.cancel()
    for task in done:
        with contextlib.suppress(Exception):
            task.result()
    code = client.close_code or upstream.close_code or aiohttp.WSCloseCode.OK
    await client.close(code=code)
    await upstream.close(code=code)


async def _pump(source: Any, target: Any) -> None:
    """Copy text and binary messages from one WebSocket to another."""
    async for message in source:
        if message.type == aiohttp.WSMsgType.TEXT:
            await target.send_str(message.data)
        elif message.type == aiohttp.WSMsgType.BINARY:
            await target.send_bytes(message.data)


def control_app(proxy: Proxy) -> web.Application:
    """The HTTP API the agent reaches over the control socket."""

    async def ready(request: web.Request) -> web.Response:
        return web.json_response(
            {"pid": os.getpid(), "environment": proxy.spec.environment}
        )

    async def live(request: web.Request) -> web.Response:
        pool = proxy.live
        return web.json_response(
            {"live": None if pool is None else asdict(pool.upstream)}
        )

    async def switch(request: web.Request) -> web.Response:
        try:
            upstream = upstream_from_dict(await request.json())
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": f"bad upstream: {exc}"}, status=400)
        try:
            await proxy.switch(upstream)
        except OSError as exc:
            return web.json_response({"error": f"state file: {exc}"}, status=500)
        return await live(request)

    async def inflight(request: web.Request) -> web.Response:
        address = request.query.get("address", "")
        return web.json_response(
            {"address": address, "inflight": proxy.inflight(address)}
        )

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(proxy.stats.to_dict())

    async def pools(request: web.Request) -> web.Response:
        counts = {address: pool.inflight for address, pool in proxy.pools.items()}
        return web.json_response({"pools": counts})

    app = web.Application()
    app.router.add_get("/ready", ready)
    app.router.add_get("/live", live)
    app.router.add_put("/live", switch)
    app.router.add_get("/inflight", inflight)
    app.router.add_get("/stats", stats)
    app.router.add_get("/pools", pools)
    return app


async def serve(spec: Spec, live: Upstream | None) -> int:
    """Serve until SIGTERM or SIGINT; the exit status."""
    loop = asyncio.get_running_loop()
    proxy = Proxy(spec, live)
    server = web.Server(
        proxy.handle, keepalive_timeout=spec.client_keepalive, access_log=None
    )
    host, port = split_listen(spec.listen)
    try:
        listener = await loop.create_server(
            server, host, port, reuse_address=True, backlog=1024
        )
    except OSError as exc:
        log.error("cannot listen on %s: %s", spec.listen, exc)
        return 1

    control = web.AppRunner(control_app(proxy), handle_signals=False, access_log=None)
    await control.setup()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(spec.control)
    await web.UnixSite(control, spec.control).start()
    # The control socket switches users' traffic: only its owner may use it.
    os.chmod(spec.control, 0o600)

    serving = "none" if live is None else describe(live)
    log.info(
        "listening on %s, control at %s, live: %s", spec.listen, spec.control, serving
    )

    # Everything made so far lives as long as the process: keep the collector
    # from walking it again, which would show as a pause in users' latency.
    gc.collect()
    gc.freeze()

    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()

    await shut_down(proxy, server, listener, control)
    return 0


async def shut_down(
    proxy: Proxy, server: web.Server, listener: asyncio.Server, control: web.AppRunner
) -> None:
    """Stop taking connections, let requests in flight finish briefly, then close."""
    inflight = sum(pool.inflight for pool in proxy.pools.values())
    log.info("stopping: %d requests in flight get up to 10s to finish", inflight)
    listener.close()
    # Idle keep-alive connections close now; busy ones after their request.
    server.pre_shutdown()
    await server.shutdown(timeout=min(proxy.spec.drain_timeout, 10.0))
    await control.cleanup()
    await proxy.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(proxy.spec.control)


def configure_logging(environment: str) -> None:
    """One line per decision on stderr; nothing per request."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s router[{environment}] %(message)s")
    )
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    # A request that fails mid-response is counted in the stats; aiohttp would
    # also print a traceback per such request.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    # If whoever read stderr is gone, losing log lines beats stopping the router.
    logging.raiseExceptions = False


def main(argv: list[str] | None = None) -> int:
    """Run the router described by ``--spec`` in the foreground."""
    parser = argparse.ArgumentParser(prog="verger.deploy.routers.proxy")
    parser.add_argument("--spec", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        spec = Spec.load(args.spec)
    except (OSError, ValueError, TypeError) as exc:
        sys.stderr.write(f"router: cannot read the spec {args.spec}: {exc}\n")
        return 2
    configure_logging(spec.environment)
    try:
        live = read_state(Path(spec.state))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        # Serving nothing, or a guess, could send users to a stopped slot.
        log.error("cannot read the state file %s: %s", spec.state, exc)
        return 2

    # The agent that started us may die; its terminal going away must not stop us.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    status: int = uvloop.run(serve(spec, live))
    return status


if __name__ == "__main__":
    sys.exit(main())
