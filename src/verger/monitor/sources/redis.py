"""Redis: memory, hit rate and queue lengths, over a plain RESP connection."""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

from verger.monitor.sources.base import Reading, Source, up

log = logging.getLogger("verger.monitor")

_LENGTH = {b"list": b"LLEN", b"zset": b"ZCARD", b"set": b"SCARD", b"stream": b"XLEN"}


class RespError(Exception):
    """Redis answered with an error."""


async def _command(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *args: bytes
) -> bytes | int | None:
    writer.write(
        b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
    )
    await writer.drain()
    line = await reader.readline()
    kind, rest = line[:1], line[1:].rstrip(b"\r\n")
    if kind == b"-":
        raise RespError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"+":
        return rest
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data = await reader.readexactly(size + 2)
        return data[:-2]
    raise RespError(f"unexpected reply {line[:20]!r}")


class RedisSource(Source):
    """One Redis server and the queue keys to count."""

    kind = "redis"

    def __init__(self, url: str, queues: list[str], every: float) -> None:
        super().__init__(f"redis {url}", every)
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self.db = (parts.path or "/0").strip("/") or "0"
        self.password = parts.password
        self.queues = queues
        self.instance = f"{self.host}:{self.port}"
        self.failing = False

    async def collect(self, now: float) -> list[Reading]:
        try:
            readings = await asyncio.wait_for(self._read(), 5)
        except (OSError, RespError, TimeoutError, asyncio.IncompleteReadError) as exc:
            if not self.failing:
                log.warning("Redis %s cannot be read: %s", self.instance, exc)
            self.failing = True
            return [up("redis", self.instance, False)]
        self.failing = False
        return [*readings, up("redis", self.instance, True)]

    async def _read(self) -> list[Reading]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            if self.password:
                await _command(reader, writer, b"AUTH", self.password.encode())
            await _command(reader, writer, b"SELECT", self.db.encode())
            info = await _command(reader, writer, b"INFO")
            readings = _info(info if isinstance(info, bytes) else b"")
            for key in self.queues:
                kind = await _command(reader, writer, b"TYPE", key.encode())
                length = 0
                verb = _LENGTH.get(kind if isinstance(kind, bytes) else b"")
                if verb is not None:
                    got = await _command(reader, writer, verb, key.encode())
                    length = got if isinstance(got, int) else 0
                readings.append(
                    Reading("verger_redis_queue_length", {"key": key}, length)
                )
            return readings
        finally:
            writer.close()
            await writer.wait_closed()


def _info(text: bytes) -> list[Reading]:
    fields = dict(
        line.split(":", 1)
        for line in text.decode(errors="replace").splitlines()
        if ":" in line and not line.startswith("#")
    )
    hits = float(fields.get("keyspace_hits", 0))
    misses = float(fields.get("keyspace_misses", 0))
    readings = [
        Reading("verger_redis_memory_bytes", {}, float(fields.get("used_memory", 0))),
        Reading("verger_redis_keyspace_hits_total", {}, hits),
        Reading("verger_redis_keyspace_misses_total", {}, misses),
        Reading(
            "verger_redis_connected_clients",
            {},
            float(fields.get("connected_clients", 0)),
        ),
    ]
    if hits + misses:
        readings.append(
            Reading("verger_redis_hit_ratio", {}, round(hits / (hits + misses), 6))
        )
    return readings
