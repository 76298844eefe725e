"""koinonia-sms: a small SMS API for churches, the application verger's demo releases.

Run it with ``PORT=8000 python server.py``; README.md lists the settings and the
FAULT file that makes a release misbehave on purpose.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import store
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

FAULTS = ("crash-at-start", "errors-when-live", "slow-when-live")
SLOW_SECONDS = 1.5
FAULT_RECHECK = 1.0  # seconds between looks at the FAULT file while serving
CLOSE_GRACE = 1.0  # seconds open connections get to send one last request
# Paths a fault never touches: verger's health checks and scrapes must pass.
OPEN_PATHS = ("/health", "/metrics")
SMOKE_HEADER = "X-Smoke-Test"
ID = r"{id:\d{1,18}}"
PHONE = re.compile(r"^\+[1-9][0-9]{6,14}$")  # E.164
SEPARATORS = re.compile(r"[\s().-]")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

log = logging.getLogger("koinonia-sms")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """A request the API refuses, answered as ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def read_version() -> str:
    """VERGER_VERSION, else the VERSION file in the working folder, else ``dev``."""
    version = os.environ.get("VERGER_VERSION", "").strip()
    if not version and Path("VERSION").is_file():
        version = Path("VERSION").read_text().strip()
    return version or "dev"


def read_fault() -> str | None:
    """The fault named by the FAULT file in the working folder, if there is one."""
    if not Path("FAULT").is_file():
        return None
    fault = Path("FAULT").read_text().strip()
    if fault not in FAULTS:
        sys.exit(f"koinonia-sms: FAULT file says {fault!r}; expected one of {FAULTS}")
    return fault


def read_live_fault(current: str | None) -> str | None:
    """The FAULT file looked at again while serving: a live fault can come and go.

    ``crash-at-start`` and unknown content change nothing once the process
    serves; the first applies at start only, the second is logged.
    """
    try:
        fault: str | None = Path("FAULT").read_text().strip()
    except FileNotFoundError:
        fault = None
    except OSError as exc:
        log.warning("cannot read the FAULT file: %s; keeping %s", exc, current)
        return current
    if fault == "crash-at-start":
        return current
    if fault is not None and fault not in FAULTS:
        log.warning("FAULT file says %r; expected one of %s", fault, FAULTS)
        return current
    if fault != current:
        log.info("FAULT is now %s", fault or "gone")
    return fault


class Metrics:
    """The Prometheus series /metrics serves, in a registry of their own."""

    def __init__(self, version: str) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated upstream
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.requests = Counter(
            "koinonia_http_requests",
            "HTTP requests answered, by method, route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "koinonia_http_request_duration_seconds",
            "Time to answer an HTTP request, by route.",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.messages = Counter(
            "koinonia_messages_sent",
            "Messages sent to a church.",
            registry=self.registry,
        )
        self.deliveries = Counter(
            "koinonia_sms_deliveries",
            "SMS handed to the provider, one per member a message reached.",
            ["provider"],
            registry=self.registry,
        )
        info = Gauge(
            "koinonia_build_info",
            "Always 1; labelled with the version.",
            ["version"],
            registry=self.registry,
        )
        info.labels(version).set(1)

    def observe(self, request: web.Request, status: int, seconds: float) -> None:
        # The route pattern, not the path, so that ids do not make new series.
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        self.requests.labels(request.method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)


class Service:
    """The application: its database, its provider, its metrics and its HTTP routes."""

    def __init__(self, target: store.Target, version: str, fault: str | None) -> None:
        self.version = version
        self.fault = None if fault == "crash-at-start" else fault
        self.fault_checked = time.monotonic()
        self.db = store.Database(target, version)
        self.sms = store.SandboxSms()
        self.metrics = Metrics(version)
        self.executor = ThreadPoolExecutor(8, thread_name_prefix="db")
        self.ready = False
        self.closing = False
        self.problem = "schema not created yet"

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.middleware], client_max_size=64 * 1024)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics_text)
        app.router.add_post("/churches", self.create_church)
        app.router.add_get(f"/churches/{ID}", self.get_church)
        app.router.add_post(f"/churches/{ID}/members", self.add_member)
        app.router.add_get(f"/churches/{ID}/members", self.list_members)
        app.router.add_post(f"/churches/{ID}/messages", self.send_message)
        app.router.add_get(f"/messages/{ID}", self.get_message)
        app.router.add_get("/sandbox/outbox", self.outbox)
        return app

    async def prepare(self) -> None:
        """Create the schema, retrying each second until the database answers."""
        while not self.ready:
            try:
                await self.in_thread(self.db.create_schema)
                self.ready = True
                log.info("schema ready in %s", self.db.target.describe())
            except Exception as exc:
                self.problem = f"database unreachable: {exc}".strip()
                log.warning("%s; retrying in 1s", self.problem)
                await asyncio.sleep(1)

    async def call(self, work: Any, *args: Any, write: bool = False) -> Any:
        """Run a store function in a worker thread, in a transaction of its own."""
        return await self.in_thread(
            functools.partial(self.db.run, work, *args, write=write)
        )

    async def in_thread(self, job: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, job)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> Any:
        started = time.perf_counter()
        try:
            response = await self.guarded(request, handler)
        except ApiError as exc:
            response = error(exc.status, exc.message)
        except store.NotFound as exc:
            response = error(404, str(exc))
        except store.Conflict:
            response = error(
                409, "that phone number is already a member of this church"
            )
        except web.HTTPException as exc:
            response = error(exc.status, exc.reason)
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            response = error(500, "internal error")

        response.headers["X-App-Version"] = self.version
        if self.closing:
            response.force_close()
        self.metrics.observe(request, response.status, time.perf_counter() - started)
        return response

    async def guarded(self, request: web.Request, handler: Handler) -> Any:
        """Apply the FAULT file to user traffic; answer 503 until the schema exists."""
        if request.path in OPEN_PATHS:
            return await handler(request)

        if time.monotonic() - self.fault_checked >= FAULT_RECHECK:
            self.fault_checked = time.monotonic()
            self.fault = read_live_fault(self.fault)

        # Smoke tests mark their requests, so a live fault passes them: it shows
        # only under user traffic, the way a real bad release often does.
        if self.fault and request.headers.get(SMOKE_HEADER) != "1":
            if self.fault == "errors-when-live":
                raise ApiError(500, "simulated fault: errors-when-live")
            if self.fault == "slow-when-live":
                await asyncio.sleep(SLOW_SECONDS)

        if not self.ready:
            raise ApiError(503, self.problem)
        return await handler(request)

    async def health(self, request: web.Request) -> web.Response:
        answer: dict[str, Any] = {"version": self.version}
        if not self.ready:
            return web.json_response(
                {**answer, "status": "unavailable", "error": self.problem}, status=503
            )
        try:
            await asyncio.wait_for(self.call(store.ping), timeout=2)
        except Exception as exc:
            reason = str(exc).strip() or type(exc).__name__
            return web.json_response(
                {**answer, "status": "unavailable", "error": reason}, status=503
            )
        return web.json_response({**answer, "status": "ok"})

    async def metrics_text(self, request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def create_church(self, request: web.Request) -> web.Response:
        data = await json_object(request)
        name = text(data, "name", 200)
        church = await self.call(store.create_church, name, write=True)
        return web.json_response(church, status=201)

    async def get_church(self, request: web.Request) -> web.Response:
        return web.json_response(await self.call(store.get_church, ident(request)))

    async def add_member(self, request: web.Request) -> web.Response:
        data = await json_object(request)
        member = {
            "name": text(data, "name", 200),
            "phone": phone(data),
            "email": email(data),
        }
        added = await self.call(store.add_member, ident(request), member, write=True)
        return web.json_response(added, status=201)

    async def list_members(self, request: web.Request) -> web.Response:
        members = await self.call(store.list_members, ident(request))
        return web.json_response({"members": members})

    async def send_message(self, request: web.Request) -> web.Response:
        data = await json_object(request)
        body = text(data, "body", 1600)
        args = (self.sms, ident(request), body)
        message = await self.call(store.send_message, *args, write=True)
        self.metrics.messages.inc()
        self.metrics.deliveries.labels(self.sms.name).inc(message["delivered"])
        return web.json_response(message, status=201)

    async def get_message(self, request: web.Request) -> web.Response:
        return web.json_response(await self.call(store.get_message, ident(request)))

    async def outbox(self, request: web.Request) -> web.Response:
        limit = request.query.get("limit", "50")
        if not limit.isdigit() or not 1 <= int(limit) <= 500:
            raise ApiError(400, "limit must be a whole number from 1 to 500")
        to = SEPARATORS.sub("", request.query.get("to", ""))
        if to and not to.startswith("+"):
            to = f"+{to}"  # a + left unencoded in a query string arrives as a space
        sent = await self.call(store.outbox, to or None, int(limit))
        return web.json_response({"provider": self.sms.name, "messages": sent})


async def json_object(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        raise ApiError(400, "the request body must be JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return data


def ident(request: web.Request) -> int:
    return int(request.match_info["id"])


def text(data: dict[str, Any], key: str, limit: int) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, f"{key} is required and must be a non-empty string")
    if len(value) > limit:
        raise ApiError(400, f"{key} is longer than {limit} characters")
    return value.strip()


def phone(data: dict[str, Any]) -> str:
    number = SEPARATORS.sub("", text(data, "phone", 40))
    if not PHONE.match(number):
        raise ApiError(
            400, "phone must be an international number such as +15551234567"
        )
    return number


def email(data: dict[str, Any]) -> str | None:
    if data.get("email") in (None, ""):
        return None
    address = text(data, "email", 200)
    if not EMAIL.match(address):
        raise ApiError(400, "email must be an address such as ruth@example.org")
    return address


async def serve(service: Service, port: int) -> None:
    """Serve until SIGTERM or SIGINT, then refuse new connections and finish others."""
    runner = web.AppRunner(
        service.app(), access_log=None, handle_signals=False, shutdown_timeout=30
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        sys.exit(f"koinonia-sms: cannot listen on 127.0.0.1:{port}: {exc.strerror}")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info(
        "version %s listening on http://127.0.0.1:%d (database %s%s)",
        service.version,
        port,
        service.db.target.describe(),
        f", FAULT {service.fault}" if service.fault else "",
    )

    preparing = asyncio.create_task(service.prepare())
    await stop.wait()
    log.info("stopping: no new connections; finishing requests in flight")
    preparing.cancel()
    await site.stop()
    await close_keep_alive(service, runner)
    await runner.cleanup()
    service.executor.shutdown(wait=True)
    log.info("stopped")


async def close_keep_alive(service: Service, runner: web.AppRunner) -> None:
    """Answer each open connection's next request with Connection: close, for a while.

    Closing an idle keep-alive connection at once races with a request the
    client may be sending on it; this way the client learns first.
    """
    service.closing = True
    deadline = time.monotonic() + CLOSE_GRACE
    while runner.server and runner.server.connections and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    version = read_version()
    fault = read_fault()
    if fault == "crash-at-start":
        sys.exit(
            "koinonia-sms: FAULT file says crash-at-start; exiting before listening"
        )

    port = os.environ.get("PORT", "8000")
    if not port.isdigit() or not 0 < int(port) < 65536:
        sys.exit(f"koinonia-sms: PORT must be a port number, got {port!r}")
    try:
        target = store.Target.from_env(dict(os.environ))
    except ValueError as exc:
        sys.exit(f"koinonia-sms: {exc}")

    asyncio.run(serve(Service(target, version, fault), int(port)))


if __name__ == "__main__":
    main()
