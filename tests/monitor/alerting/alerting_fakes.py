"""Local stand-ins for services that cannot run here: recording HTTP and SMTP servers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from verger.config.alerting import AlertingSection
from verger.monitor.alert import Alert, AlertState
from verger.monitor.alerting import Dispatcher
from verger.state import Store

FAST = (0.01, 0.02, 0.04, 0.08)
T0 = 1_800_000_000.0


@dataclass
class Recorder:
    """An HTTP server on a free loopback port that records each POST by path.

    ``statuses`` holds the answers to give, in order, before answering 200
    (PagerDuty answers 202, which ``accepted`` sets).
    """

    port: int = 0
    statuses: list[int] = field(default_factory=list)
    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)
    ok: int = 200

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [body for where, body in self.received if where == path]


@asynccontextmanager
async def recording_server(ok: int = 200) -> AsyncIterator[Recorder]:
    recorder = Recorder(ok=ok)

    async def handle(request: web.Request) -> web.Response:
        status = recorder.statuses.pop(0) if recorder.statuses else recorder.ok
        recorder.answered.append(status)
        if status < 300:
            recorder.received.append((request.path, json.loads(await request.read())))
        return web.Response(status=status, text=json.dumps({"status": "ok"}))

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    recorder.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield recorder
    finally:
        await runner.cleanup()


def alert(
    name: str,
    severity: str = "critical",
    state: AlertState = AlertState.FIRING,
    active_at: float = T0,
    fired_at: float | None = None,
    resolved_at: float | None = None,
    **labels: str,
) -> Alert:
    """An alert as the evaluator would send it, with ``environment=production``."""
    labels = {
        "alertname": name,
        "severity": severity,
        "environment": "production",
        **labels,
    }
    if state is not AlertState.PENDING and fired_at is None:
        fired_at = active_at + 60
    return Alert(
        labels=labels,
        annotations={"summary": f"{name} {labels.get('probe', '')}".strip()},
        state=state,
        active_at=active_at,
        fired_at=fired_at,
        resolved_at=resolved_at,
        value=1.0,
    )


def resolved(firing: Alert, at: float) -> Alert:
    return Alert(
        labels=firing.labels,
        annotations=firing.annotations,
        state=AlertState.RESOLVED,
        active_at=firing.active_at,
        fired_at=firing.fired_at,
        resolved_at=at,
        value=0.0,
    )


def section(recorder: Recorder, **extra: Any) -> AlertingSection:
    """Three tiers on one recorder: /page (PagerDuty), /email and /ticket webhooks."""
    body: dict[str, Any] = {
        "receivers": {
            "page": {
                "pagerduty": {"routing_key": "R0UT1NGKEY", "url": recorder.url("/page")}
            },
            "email": {"webhook": recorder.url("/email")},
            "ticket": {"ticket": recorder.url("/ticket")},
        },
        **extra,
    }
    return AlertingSection.model_validate(body)


def dispatcher(store: Store, settings: AlertingSection, **options: Any) -> Dispatcher:
    return Dispatcher(settings, store, app="shop", delays=FAST, deadline=5.0, **options)


async def step(
    dispatcher: Dispatcher, alerts: list[Alert], now: float, settle: bool = True
) -> None:
    """One evaluation's update, then wait for the deliveries it started."""
    await dispatcher.update(alerts, now)
    if settle:
        assert await dispatcher.settle(10.0)


def by_path(recorder: Recorder) -> Mapping[str, int]:
    counts: dict[str, int] = {}
    for path, _ in recorder.received:
        counts[path] = counts.get(path, 0) + 1
    return counts
