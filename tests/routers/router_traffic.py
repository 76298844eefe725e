"""Clients that send traffic through a router and keep count of what came back."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from verger.deploy.routers.base import Router
from verger.deploy.routers.stats import Stats


@dataclass
class Answer:
    """One response: its status, the backend's JSON description, and the raw body."""

    status: int
    body: bytes
    headers: dict[str, str]

    @property
    def document(self) -> dict[str, Any]:
        if not self.body.startswith(b"{"):
            return {}
        data: dict[str, Any] = json.loads(self.body)
        return data

    @property
    def name(self) -> str:
        return str(self.document.get("name", ""))


class Client:
    """One keep-alive connection through the router, counting the connections it opens.

    ``connections`` stays 1 as long as the router keeps the connection open;
    aiohttp opens a new one (and counts it here) whenever the router closed it.
    """

    def __init__(self, url: str, timeout: float = 30) -> None:
        self.url = url
        self.connections = 0
        tracing = aiohttp.TraceConfig()
        tracing.on_connection_create_end.append(self._opened)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1, keepalive_timeout=120),
            trace_configs=[tracing],
            timeout=aiohttp.ClientTimeout(total=timeout),
        )

    async def _opened(self, *args: Any) -> None:
        self.connections += 1

    async def request(
        self, method: str, path: str, body: bytes | None = None, **kwargs: Any
    ) -> Answer:
        async with self.session.request(
            method, self.url + path, data=body, **kwargs
        ) as response:
            data = await response.read()
            return Answer(response.status, data, dict(response.headers))

    async def get(self, path: str = "/", **kwargs: Any) -> Answer:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, body: bytes, **kwargs: Any) -> Answer:
        return await self.request("POST", path, body, **kwargs)

    async def close(self) -> None:
        await self.session.close()


def body_matches(answer: Answer, sent: bytes) -> bool:
    """Whether the backend received exactly ``sent`` as the request body."""
    document = answer.document
    return bool(
        document.get("body_bytes") == len(sent)
        and document.get("body_sha256") == hashlib.sha256(sent).hexdigest()
    )


@dataclass
class Load:
    """What a group of keep-alive clients saw while a test did something else."""

    requests: int = 0
    failures: list[str] = field(default_factory=list)
    names: set[str] = field(default_factory=set)
    connections: list[int] = field(default_factory=list)


async def keep_busy(url: str, clients: int, stop: asyncio.Event, pause: float) -> Load:
    """Send GETs and POSTs with bodies from keep-alive clients until ``stop``."""
    load = Load()

    async def one(index: int) -> None:
        client = Client(url)
        sequence = 0
        try:
            while not stop.is_set():
                sequence += 1
                await exchange(client, index, sequence, load)
                await asyncio.sleep(pause)
        finally:
            load.connections.append(client.connections)
            await client.close()

    await asyncio.gather(*(one(index) for index in range(clients)))
    return load


async def exchange(client: Client, index: int, sequence: int, load: Load) -> None:
    """One GET or POST, checked; any failure is noted, not raised."""
    load.requests += 1
    try:
        if sequence % 2:
            answer = await client.get(f"/load?client={index}&n={sequence}")
            ok = answer.status == 200
        else:
            sent = (f"{index}:{sequence}:".encode() * 700)[
                : 1000 + sequence * 37 % 30000
            ]
            answer = await client.post(f"/load?client={index}&n={sequence}", sent)
            ok = answer.status == 200 and body_matches(answer, sent)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        load.failures.append(f"client {index} request {sequence}: {exc!r}")
        return
    if not ok:
        load.failures.append(f"client {index} request {sequence}: {answer.status}")
    load.names.add(answer.name)


async def settled_stats(router: Router, requests: int, timeout: float = 5) -> Stats:
    """The router's stats once at least ``requests`` are counted (some count late)."""
    deadline = time.monotonic() + timeout
    stats = await router.stats()
    while stats.requests < requests and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        stats = await router.stats()
    return stats
