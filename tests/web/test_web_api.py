"""The dashboard's JSON API and token, over real state and metric stores."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from web_support import ERRORS, RATE, TOKEN, board_for, live_release

from verger.monitor.rules import Evaluator, parse, tiers
from verger.web import COOKIE, NO_DATA, Board, cookie_name, make_app

AUTH = {"Authorization": f"Bearer {TOKEN}"}
Check = Callable[[TestClient[Any, Any], Board], Awaitable[None]]


def _serve(root: Path, check: Check, seeded: bool = True) -> None:
    async def main() -> None:
        with board_for(root, seeded) as (board, _):
            async with TestClient(TestServer(make_app(board, TOKEN))) as client:
                await check(client, board)

    asyncio.run(main())


def test_without_the_token_the_api_and_page_say_how_to_get_the_url(
    tmp_path: Path,
) -> None:
    """A request with no or a wrong token is refused with 401 and names 'verger dashboard'."""

    async def check(client: TestClient[Any, Any], board: Board) -> None:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            answer = await client.get("/api/v1/summary", headers=headers)
            assert answer.status == 401
            assert "verger dashboard" in (await answer.json())["hint"]
        page = await client.get("/")
        assert page.status == 401
        assert "verger dashboard" in await page.text()
        wrong = await client.get("/?token=wrong", allow_redirects=False)
        assert wrong.status == 401
        assert "Set-Cookie" not in wrong.headers
        static = await client.get("/static/dashboard.js")
        assert static.status == 401

    _serve(tmp_path, check)


def test_the_token_in_the_url_becomes_a_strict_cookie_and_leaves_the_url(
    tmp_path: Path,
) -> None:
    """?token= sets a strict 12 h session cookie named by port, not the token, and it lets in."""

    async def check(client: TestClient[Any, Any], board: Board) -> None:
        answer = await client.get(f"/?token={TOKEN}", allow_redirects=False)
        assert answer.status == 303
        assert answer.headers["Location"] == "/"
        name = cookie_name(client.server.port or 0)
        cookies = answer.headers.getall("Set-Cookie")
        cookie = next(c for c in cookies if c.startswith(f"{name}="))
        # The unnamed cookie of older versions, which held the token, is dropped.
        dropped = next(c for c in cookies if c.startswith(f"{COOKIE}="))
        assert "Max-Age=0" in dropped
        assert TOKEN not in cookie
        for part in ("HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"):
            assert part in cookie, part
        page = await client.get("/")
        assert page.status == 200
        assert "/static/dashboard.js" in await page.text()
        assert "default-src 'none'" in page.headers["Content-Security-Policy"]
        summary = await client.get("/api/v1/summary")
        assert summary.status == 200

    _serve(tmp_path, check)


def test_summary_tiles_are_the_rules_numbers_and_the_seeded_values(
    tmp_path: Path,
) -> None:
    """p95 and error rate are the latency and error-rate rules' own expressions, per environment."""

    async def check(client: TestClient[Any, Any], board: Board) -> None:
        answer = await client.get("/api/v1/summary", headers=AUTH)
        summary = await answer.json()
        tiles = summary["tiles"]
        assert summary["environment"] == "production"
        assert tiles["p95"]["value"] == pytest.approx(0.25)
        assert tiles["p95"]["text"] == "250 ms"
        assert tiles["error_rate"]["value"] == pytest.approx(ERRORS)
        assert tiles["error_rate"]["text"] == "2.00%"
        assert tiles["throughput"]["value"] == pytest.approx(RATE)
        assert tiles["uptime"]["value"] == pytest.approx(1 - ERRORS)
        assert tiles["uptime"]["target"] == 0.999
        # Below its 99.9% target: the tile says so even before a burn alert fires.
        assert tiles["uptime"]["status"] == "high"
        assert tiles["cpu"]["text"] == "42%"
        assert tiles["cache_hit_rate"]["text"] == "87.5%"
        assert tiles["queue_depth"]["value"] == 234
        assert tiles["database_latency"]["text"] == "120 ms"

        # The latency_high rule's left side, evaluated by the rule evaluator.
        rule = next(r for r in tiers() if r.name == "latency_high")
        left = rule.expr.rsplit(">", 1)[0]
        store = board.metrics()
        assert store is not None
        value = Evaluator(store).instant(parse(left), summary["at"])
        assert isinstance(value, list)
        assert value[0].value == pytest.approx(tiles["p95"]["value"], rel=1e-3)

        staging = await client.get("/api/v1/summary?environment=staging", headers=AUTH)
        quiet = (await staging.json())["tiles"]
        assert quiet["p95"]["value"] is None and quiet["p95"]["text"] == NO_DATA
        assert quiet["cpu"]["text"] == "42%"

    _serve(tmp_path, check)


def test_unknown_numbers_are_no_data_never_zero(tmp_path: Path) -> None:
    """With an empty metric store every tile is None and says 'no data'."""

    async def check(client: TestClient[Any, Any], board: Board) -> None:
        summary = await (await client.get("/api/v1/summary", headers=AUTH)).json()
        for name, tile in summary["tiles"].items():
            assert tile["value"] is None, name
            assert tile["text"] == NO_DATA, name
            assert tile["status"] == "unknown", name
        chart = await client.get("/api/v1/series?metric=cpu&range=1h", headers=AUTH)
        points = (await chart.json())["points"]
        assert points and all(v is None for _, v in points)

    _serve(tmp_path, check, seeded=False)


def test_series_follow_the_range_and_refuse_unknown_names(tmp_path: Path) -> None:
    """A longer range gives coarser steps over a longer span; a bad metric or range is a 400."""

    async def check(client: TestClient[Any, Any], board: Board) -> None:
        charts = {}
        for range_name in ("1h", "24h", "30d"):
            answer = await client.get(
                f"/api/v1/series?metric=p95&range={range_name}", headers=AUTH
            )
            charts[range_name] = await answer.json()
        hour, day, month = charts["1h"], charts["24h"], charts["30d"]
        assert hour["step"] == 30 and day["step"] == 720 and month["step"] == 21600
        span = hour["points"][-1][0] - hour["points"][0][0]
        assert 3500 <= span < 3600
        known = [v for _, v in hour["points"] if v is not None]
        assert len(known) >= 100 and known[-1] == pytest.approx(0.25)
        # The seeded hour is a handful of points in a day, one or none in 30 days.
        assert 0 < sum(v is not None for _, v in day["points"]) <= 6
        gauge = await client.get(
            "/api/v1/series?metric=queue_depth&range=6h", headers=AUTH
        )
        values = [v for _, v in (await gauge.json())["points"] if v is not None]
        assert values and set(values) == {234.0}
        for query in ("metric=p99&range=1h", "metric=p95&range=2h"):
            bad = await client.get(f"/api/v1/series?{query}", headers=AUTH)
            assert bad.status == 400
            assert "use one of" in (await bad.json())["hint"]
        bad_env = await client.get("/api/v1/summary?environment=qa", headers=AUTH)
        assert bad_env.status == 400

    _serve(tmp_path, check)


def test_releases_incidents_alerts_and_the_verified_backup(tmp_path: Path) -> None:
    """Live releases, incidents, firing alerts and the verified backup are the state
    store's; a newer failed or interrupted backup is not shown as the verified one."""

    async def check(client: TestClient[Any, Any], board: Board) -> None:
        state = board.state
        before = await (await client.get("/api/v1/summary", headers=AUTH)).json()
        assert before["backup"]["text"] == "no verified backup"
        assert before["alerts"]["firing"] == 0

        went_live = time.time() - 600
        live_release(state, "production", "v1.4.2", went_live)
        incident = state.add_incident(
            "g1", "p95 latency over 1s in production", "critical", {}, 1.0, 2.0, 1
        )
        state.update_incident(incident, status="resolved", resolved_at=3.0)
        old = state.add_backup("production", "pg_dump", "full", "tester")
        state.update_backup(old, status="verified", label="old", finished_at=10.0)
        new = state.add_backup("production", "pg_dump", "full", "tester")
        state.update_backup(
            new, status="verified", label="new", finished_at=20.0, verified_at=30.0
        )
        failed = state.add_backup("production", "pg_dump", "full", "tester")
        state.update_backup(failed, status="failed", finished_at=40.0)
        # Newer still, but stopped by a signal: never counted as verified.
        stopped = state.add_backup("production", "pg_dump", "full", "tester")
        state.update_backup(
            stopped, status="interrupted", label="stopped", finished_at=50.0
        )
        state.save_alert_states([_firing("latency_critical", "critical")], [])

        releases = (await (await client.get("/api/v1/releases", headers=AUTH)).json())[
            "releases"
        ]
        assert [r["environment"] for r in releases] == ["staging", "production"]
        assert releases[0]["version"] is None
        assert releases[0]["text"] == "no live release"
        assert releases[1]["version"] == "v1.4.2"
        assert releases[1]["since"] == pytest.approx(went_live)
        incidents = await (await client.get("/api/v1/incidents", headers=AUTH)).json()
        assert incidents["incidents"][0]["status"] == "resolved"
        summary = await (await client.get("/api/v1/summary", headers=AUTH)).json()
        assert summary["backup"]["verified"]["label"] == "new"
        assert summary["alerts"]["firing"] == 1
        assert summary["alerts"]["text"] == "1 critical"
        assert summary["tiles"]["p95"]["status"] == "critical"
        assert summary["tiles"]["cpu"]["status"] == "ok"

    _serve(tmp_path, check)


def _firing(rule: str, severity: str) -> dict[str, Any]:
    labels = {"alertname": rule, "severity": severity, "environment": "production"}
    return {
        "fingerprint": f"fp-{rule}",
        "rule": rule,
        "labels": json.dumps(labels),
        "annotations": "{}",
        "state": "firing",
        "active_at": 1.0,
        "fired_at": 2.0,
        "resolved_at": None,
        "keep_firing_since": None,
        "value": 6.0,
    }


def _labelled(rule: str, severity: str, environment: str | None) -> dict[str, Any]:
    alert = _firing(rule, severity)
    labels = json.loads(alert["labels"])
    labels.pop("environment")
    if environment is not None:
        labels["environment"] = environment
    return {
        **alert,
        "fingerprint": f"fp-{rule}-{environment}",
        "labels": json.dumps(labels),
    }


def test_tiles_take_their_colour_from_their_own_number_and_environment(
    tmp_path: Path,
) -> None:
    """A burn alert colours neither error rate nor uptime; alerts count the shown environment."""

    async def check(client: TestClient[Any, Any], board: Board) -> None:
        board.state.save_alert_states(
            [
                _labelled("slo_burn_fast", "critical", "production"),
                _labelled("error_rate_high", "high", "staging"),
                _labelled("error_rate_critical", "critical", None),
                _labelled("cpu_high", "high", None),
            ],
            [],
        )
        production = await (await client.get("/api/v1/summary", headers=AUTH)).json()
        tiles = production["tiles"]
        # 2% errors, but no error-rate rule fires about production.
        assert tiles["error_rate"]["status"] == "ok"
        # 98% over 30 days is under the 99.9% target: high, from the number.
        assert tiles["uptime"]["status"] == "high"
        assert tiles["cpu"]["status"] == "high"
        assert production["alerts"]["firing"] == 3
        assert production["alerts"]["status"] == "critical"

        answer = await client.get("/api/v1/summary?environment=staging", headers=AUTH)
        staging = await answer.json()
        # Its own rule about staging; the unlabelled one is about no environment.
        assert staging["tiles"]["error_rate"]["status"] == "high"
        assert staging["tiles"]["uptime"]["status"] == "unknown"
        assert staging["alerts"]["firing"] == 3
        assert staging["alerts"]["by_severity"]["high"] == 2

    _serve(tmp_path, check)


def test_without_monitoring_the_summary_says_so_and_claims_nothing(
    tmp_path: Path,
) -> None:
    """With no metric store, alerts are unknown (not 'none firing') and every tile unknown."""

    async def main() -> None:
        with board_for(tmp_path, seeded=False) as (board, _):
            off = Board(board.config, board.state)
            async with TestClient(TestServer(make_app(off, TOKEN))) as client:
                summary = await (
                    await client.get("/api/v1/summary", headers=AUTH)
                ).json()
        assert summary["monitoring"] is False
        assert summary["alerts"]["status"] == "unknown"
        assert summary["alerts"]["text"] == "monitoring is off"
        assert {tile["status"] for tile in summary["tiles"].values()} == {"unknown"}

    asyncio.run(main())
