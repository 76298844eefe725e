"""Inhibition, silences and maintenance windows: what fires but is held back."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from alerting_fakes import (
    T0,
    Recorder,
    alert,
    by_path,
    dispatcher,
    recording_server,
    resolved,
    section,
    step,
)

from verger.config.alerting import Maintenance
from verger.monitor.alerting import Window
from verger.monitor.alerting.inhibit import family
from verger.state import Store


def test_family_strips_the_severity_word() -> None:
    """error_rate_critical and error_rate_high are one family; a family label wins."""
    assert family({"alertname": "error_rate_critical"}) == "error_rate"
    assert family({"alertname": "error_rate_high"}) == "error_rate"
    assert family({"alertname": "HighErrorRate"}) == "higherrorrate"
    assert family({"alertname": "p95_high", "family": "latency"}) == "latency"


def test_critical_holds_back_its_high_twin(store: Store) -> None:
    """While error_rate_critical fires, error_rate_high with the same labels sends nothing."""

    async def main() -> None:
        async with recording_server(ok=202) as rec:
            d = dispatcher(store, section(rec, route={"group_wait": "0s"}))
            critical = alert("error_rate_critical", "critical")
            high = alert("error_rate_high", "high")
            other = alert("error_rate_high", "high", environment="staging")
            for offset in range(0, 300, 10):
                await step(d, [critical, high, other], T0 + offset)
            assert by_path(rec) == {"/page": 1, "/email": 1}
            [email] = rec.bodies("/email")
            assert email["alerts"][0]["labels"]["environment"] == "staging"
            assert d.muted[high.fingerprint] == (
                "inhibited: its critical twin error_rate_critical fires"
            )

    asyncio.run(main())


def test_high_twin_is_sent_once_the_critical_clears(store: Store) -> None:
    """When the critical resolves and the high still fires, the high is sent."""

    async def main() -> None:
        async with recording_server(ok=202) as rec:
            d = dispatcher(store, section(rec, route={"group_wait": "0s"}))
            critical = alert("error_rate_critical", "critical")
            high = alert("error_rate_high", "high")
            await step(d, [critical, high], T0)
            await step(d, [resolved(critical, T0 + 100), high], T0 + 100)
            assert by_path(rec) == {"/page": 1, "/email": 1}

    asyncio.run(main())


def test_api_down_holds_back_what_depends_on_it(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Alerts labelled depends_on: api are held while api fires in the same environment."""

    async def main() -> None:
        async with recording_server(ok=202) as rec:
            d = dispatcher(store, section(rec, route={"group_wait": "0s"}))
            api = alert("api_down", "critical", component="api")
            dependent = [
                alert("p95_high", "high", depends_on="api"),
                alert("error_rate_high", "high", depends_on="api"),
            ]
            elsewhere = alert(
                "p95_high", "high", depends_on="api", environment="staging"
            )
            await step(d, [api, *dependent, elsewhere], T0)
            assert by_path(rec) == {"/page": 1, "/email": 1}
            assert rec.bodies("/email")[0]["group_labels"]["environment"] == "staging"

    with caplog.at_level(logging.INFO, "verger.monitor.alerting"):
        asyncio.run(main())
    assert (
        "Holding back 2 alerts (error_rate_high, p95_high): inhibited: api_down "
        "fires, which it depends on"
    ) in caplog.text


def test_configured_inhibit_rule_with_equal_labels(store: Store) -> None:
    """An inhibit: rule holds targets only where the equal labels are the same."""

    async def main() -> None:
        async with recording_server(ok=202) as rec:
            rules = [
                {
                    "source": {"alertname": "host_down"},
                    "target": {"severity": "medium"},
                    "equal": ["instance"],
                }
            ]
            d = dispatcher(
                store, section(rec, route={"group_wait": "0s"}, inhibit=rules)
            )
            alerts = [
                alert("host_down", "critical", instance="db1"),
                alert("slow_query", "medium", instance="db1"),
                alert("slow_query", "medium", instance="db2"),
            ]
            await step(d, alerts, T0)
            [ticket] = rec.bodies("/ticket")
            assert [a["labels"]["instance"] for a in ticket["alerts"]] == ["db2"]

    asyncio.run(main())


def test_silence_mutes_matching_alerts_until_expired(store: Store) -> None:
    """A silence holds back what it matches; once expired the alert is sent."""

    async def main() -> None:
        async with recording_server() as rec:
            d = dispatcher(store, section(rec, route={"group_wait": "0s"}))
            silence_id = store.add_silence(
                ["alertname=cpu_busy", "environment=~prod.*"],
                T0,
                T0 + 7200,
                "resize",
                "ann",
            )
            busy = alert("cpu_busy", "high")
            for offset in range(0, 600, 10):
                await step(d, [busy], T0 + offset)
            assert rec.received == []
            assert d.muted[busy.fingerprint] == f"silenced by #{silence_id} (resize)"
            store.expire_silence(silence_id, T0 + 600, "ann")
            await step(d, [busy], T0 + 610)
            assert len(rec.bodies("/email")) == 1

    asyncio.run(main())


def test_silence_ends_on_time(store: Store) -> None:
    """A silence for 1h stops muting after that hour without anyone expiring it."""

    async def main() -> None:
        async with recording_server() as rec:
            d = dispatcher(store, section(rec, route={"group_wait": "0s"}))
            store.add_silence(["alertname=cpu_busy"], T0, T0 + 3600, "resize", "ann")
            busy = alert("cpu_busy", "high")
            await step(d, [busy], T0 + 3590)
            assert rec.received == []
            await step(d, [busy], T0 + 3600)
            assert len(rec.bodies("/email")) == 1

    asyncio.run(main())


def test_resolved_notice_passes_a_silence(store: Store) -> None:
    """An alert sent as firing and silenced later still gets its resolved notice."""

    async def main() -> None:
        async with recording_server(ok=202) as rec:
            d = dispatcher(store, section(rec, route={"group_wait": "0s"}))
            down = alert("api_down", "critical")
            await step(d, [down], T0)
            store.add_silence(
                ["alertname=api_down"], T0 + 10, T0 + 7200, "on it", "ann"
            )
            for offset in range(10, 600, 10):
                await step(d, [down], T0 + offset)
            assert len(rec.bodies("/page")) == 1
            await step(d, [resolved(down, T0 + 600)], T0 + 600)
            assert [b["event_action"] for b in rec.bodies("/page")] == [
                "trigger",
                "resolve",
            ]

    asyncio.run(main())


def _at(zone: str, *parts: int, fold: int = 0) -> float:
    return datetime(*parts, tzinfo=ZoneInfo(zone), fold=fold).timestamp()  # type: ignore[misc]


def _window(**fields: object) -> Window:
    return Window.from_config(Maintenance.model_validate({"name": "nightly", **fields}))


def test_window_crossing_midnight() -> None:
    """Monday 22:00 for 4h covers Monday night until 02:00 Tuesday, and not Tuesday night."""
    window = _window(
        timezone="Europe/Paris",
        weekly={"days": ["mon"], "start": "22:00"},
        duration="4h",
    )
    zone = "Europe/Paris"
    assert window.active(_at(zone, 2026, 6, 15, 21, 59)) is None
    assert window.active(_at(zone, 2026, 6, 15, 22, 0)) is not None
    assert window.active(_at(zone, 2026, 6, 16, 1, 59)) is not None
    assert window.active(_at(zone, 2026, 6, 16, 2, 0)) is None
    assert window.active(_at(zone, 2026, 6, 16, 23, 0)) is None


def test_window_across_the_autumn_clock_change() -> None:
    """Saturday 23:00 for 4h in New York ends at 03:00 local on the night clocks fall back."""
    zone = "America/New_York"
    window = _window(
        timezone=zone, weekly={"days": ["sat"], "start": "23:00"}, duration="4h"
    )
    # 2026-11-01 01:00-02:00 happens twice; the window is five hours long that night.
    start, end = window.active(_at(zone, 2026, 11, 1, 1, 30, fold=1)) or (0.0, 0.0)
    assert start == _at(zone, 2026, 10, 31, 23, 0)
    assert end == _at(zone, 2026, 11, 1, 3, 0)
    assert end - start == 5 * 3600
    assert window.active(_at(zone, 2026, 11, 1, 2, 59)) is not None
    assert window.active(_at(zone, 2026, 11, 1, 3, 0)) is None


def test_window_across_the_spring_clock_change() -> None:
    """A cron window at 01:30 for 2h ends at 03:30 local on the night clocks spring forward."""
    zone = "America/New_York"
    window = _window(timezone=zone, cron="30 1 * * *", duration="2h")
    # 2026-03-08 02:00 jumps to 03:00: the window is one hour long that night.
    start, end = window.active(_at(zone, 2026, 3, 8, 3, 15)) or (0.0, 0.0)
    assert end - start == 3600
    assert window.active(_at(zone, 2026, 3, 8, 3, 29)) is not None
    assert window.active(_at(zone, 2026, 3, 8, 3, 30)) is None
    # On an ordinary night it is two hours long.
    start, end = window.active(_at(zone, 2026, 3, 9, 2, 0)) or (0.0, 0.0)
    assert end - start == 7200


def test_window_starting_in_the_skipped_hour_begins_at_the_jump() -> None:
    """A window set for 02:30, a time the spring change skips, starts when clocks jump."""
    zone = "Europe/Berlin"
    window = _window(timezone=zone, cron="30 2 * * *", duration="1h")
    # 2026-03-29 02:00 CET jumps to 03:00 CEST; the window ends at 03:30 as usual.
    assert window.active(_at(zone, 2026, 3, 29, 1, 59)) is None
    start, end = window.active(_at(zone, 2026, 3, 29, 3, 0)) or (0.0, 0.0)
    assert start == _at(zone, 2026, 3, 29, 3, 0)
    assert end == _at(zone, 2026, 3, 29, 3, 30)
    assert window.active(_at(zone, 2026, 3, 29, 3, 30)) is None


def production(rec: Recorder) -> int:
    """Pages about production."""
    return sum(p["payload"]["component"] == "production" for p in rec.bodies("/page"))


def test_maintenance_window_mutes_matching_alerts(store: Store) -> None:
    """During a window alerts matching it are muted; others and those after are sent."""

    async def main() -> None:
        async with recording_server(ok=202) as rec:
            zone = "America/Chicago"
            start = _at(zone, 2026, 11, 1, 0, 30)
            windows = [
                {
                    "name": "db upgrade",
                    "timezone": zone,
                    "weekly": {"days": ["sun"], "start": "00:00"},
                    "duration": "3h",
                    "match": {"environment": "production"},
                }
            ]
            settings = section(rec, route={"group_wait": "0s"}, maintenance=windows)
            d = dispatcher(store, settings)
            muted = alert("api_down", "critical")
            sent = alert("api_down", "critical", environment="staging")
            await step(d, [muted, sent], start)
            assert d.muted[muted.fingerprint] == "in the maintenance window db upgrade"
            pages = rec.bodies("/page")
            assert len(pages) == 1
            assert pages[0]["payload"]["component"] == "staging"
            # 03:00 CST is four hours of real time after 00:00 CDT that night.
            await step(d, [muted, sent], start + 3.5 * 3600 - 60)
            assert production(rec) == 0
            await step(d, [muted, sent], start + 3.5 * 3600)
            assert production(rec) == 1

    asyncio.run(main())


def test_api_down_holds_error_rate_latency_and_slo_alerts(store: Store) -> None:
    """With the default rules' names, api_down holds error rate, latency and SLO alerts."""

    async def main() -> None:
        async with recording_server(ok=202) as rec:
            d = dispatcher(store, section(rec, route={"group_wait": "0s"}))
            held = [
                alert("error_rate_critical", "critical"),
                alert("latency_high", "high"),
                alert("slo_burn_fast", "critical"),
            ]
            sent = alert("error_rate_critical", "critical", environment="staging")
            await step(d, [alert("api_down", "critical"), *held, sent], T0)
            pages = rec.bodies("/page")
            assert sorted(p["payload"]["group"] for p in pages) == [
                "api_down",
                "error_rate_critical",
            ]
            assert {d.muted[a.fingerprint] for a in held} == {
                "inhibited: api_down fires with environment=production"
            }
            assert len(store.incidents()) == 2

    asyncio.run(main())
