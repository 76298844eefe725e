"""The monitor's own HTTP endpoint, when ``monitor.listen`` is set.

``/metrics`` gives the newest value of every series the sources read, in
Prometheus's text format, so that a Prometheus past one host can scrape the
agent; ``/heartbeat/NAME`` (GET or POST) is the URL a cron job calls when it
has run. Neither needs the agent's token: bind it to loopback, or to an
address only your own hosts reach.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from aiohttp import web

from verger.config.types import split_listen
from verger.monitor.sources.base import Reading
from verger.state import Store

log = logging.getLogger("verger.monitor")

LATEST: web.AppKey[dict[tuple[str, str], Reading]] = web.AppKey("latest", dict)
STATE: web.AppKey[Store] = web.AppKey("state", Store)
HEARTBEATS: web.AppKey[list[str]] = web.AppKey("heartbeats", list)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def exposition(latest: Mapping[tuple[str, str], Reading]) -> str:
    """The readings as Prometheus's text format, one family per metric name."""
    families: dict[str, list[Reading]] = {}
    for reading in latest.values():
        families.setdefault(reading.name, []).append(reading)
    lines = []
    for name in sorted(families):
        lines.append(f"# TYPE {name} untyped")
        for reading in families[name]:
            labels = ",".join(
                f'{k}="{_escape(v)}"' for k, v in sorted(reading.labels.items())
            )
            lines.append(f"{name}{{{labels}}} {float(reading.value)!r}")
    return "\n".join(lines) + "\n"


async def _metrics(request: web.Request) -> web.Response:
    latest: dict[tuple[str, str], Reading] = request.app[LATEST]
    text = exposition(latest)
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


async def _heartbeat(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    known = request.app[HEARTBEATS]
    if name not in known:
        return web.Response(status=404, text=f"no heartbeat named {name!r}\n")
    request.app[STATE].beat(name)
    log.info("heartbeat %s reported in", name)
    return web.Response(text="ok\n")


async def start_http(
    listen: str,
    latest: dict[tuple[str, str], Reading],
    state: Store,
    heartbeats: list[str],
) -> web.AppRunner:
    """Serve /metrics and /heartbeat/NAME on ``listen`` until the runner is cleaned up."""
    app = web.Application()
    app[LATEST] = latest
    app[STATE] = state
    app[HEARTBEATS] = heartbeats
    app.router.add_get("/metrics", _metrics)
    app.router.add_route("*", "/heartbeat/{name}", _heartbeat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = split_listen(listen)
    await web.TCPSite(runner, host, port).start()
    log.info("monitor endpoint on %s: /metrics and /heartbeat/NAME", listen)
    return runner
