"""Routing, grouping and the timing of notifications, driven with explicit times."""

from __future__ import annotations

import asyncio
import logging

import pytest
from alerting_fakes import (
    T0,
    alert,
    by_path,
    dispatcher,
    recording_server,
    resolved,
    section,
    step,
)

from verger.config.alerting import AlertingSection
from verger.monitor.alert import AlertState
from verger.monitor.alerting import Dispatcher
from verger.state import Store


def test_tiers_go_to_page_email_and_ticket(store: Store) -> None:
    """By default critical pages, high emails and medium opens a ticket."""

    async def main() -> None:
        async with recording_server() as rec:
            d = dispatcher(store, section(rec))
            alerts = [
                alert("api_down", "critical"),
                alert("cpu_busy", "high"),
                alert("slow_query", "medium"),
            ]
            await step(d, alerts, T0)
            assert rec.received == []
            await step(d, alerts, T0 + 10)
            assert by_path(rec) == {"/page": 1, "/email": 1, "/ticket": 1}

    asyncio.run(main())


def test_group_wait_gathers_alerts_into_one_notification(store: Store) -> None:
    """Alerts of one group arriving within group_wait are sent together, once."""

    async def main() -> None:
        async with recording_server() as rec:
            d = dispatcher(store, section(rec, route={"group_wait": "30s"}))
            first = alert("disk_full", "high", instance="a")
            second = alert("disk_full", "high", instance="b")
            await step(d, [first], T0)
            await step(d, [first, second], T0 + 10)
            await step(d, [first, second], T0 + 20)
            assert rec.received == []
            await step(d, [first, second], T0 + 30)
            [body] = rec.bodies("/email")
            assert len(body["alerts"]) == 2
            assert body["text"].startswith("[FIRING:2] shop: disk_full")

    asyncio.run(main())


def test_group_interval_holds_a_new_alert_until_it_passes(store: Store) -> None:
    """A new alert in a group already notified is sent at the next group interval."""

    async def main() -> None:
        async with recording_server() as rec:
            settings = section(rec, route={"group_wait": "0s", "group_interval": "5m"})
            d = dispatcher(store, settings)
            first = alert("disk_full", "high", instance="a")
            second = alert("disk_full", "high", instance="b")
            await step(d, [first], T0)
            for offset in range(10, 300, 10):
                await step(d, [first, second], T0 + offset)
            assert len(rec.bodies("/email")) == 1
            await step(d, [first, second], T0 + 300)
            bodies = rec.bodies("/email")
            assert len(bodies) == 2 and bodies[1]["reason"] == "changed"
            assert [a["labels"]["instance"] for a in bodies[1]["alerts"]] == ["a", "b"]

    asyncio.run(main())


def test_repeat_interval_reminds_of_an_unchanged_group(store: Store) -> None:
    """An unchanged firing group is sent again only once repeat_interval passed."""

    async def main() -> None:
        async with recording_server() as rec:
            route = {
                "group_wait": "0s",
                "group_interval": "1m",
                "repeat_interval": "1h",
            }
            d = dispatcher(store, section(rec, route=route))
            firing = alert("cpu_busy", "high")
            for offset in range(0, 3600, 60):
                await step(d, [firing], T0 + offset)
            assert len(rec.bodies("/email")) == 1
            await step(d, [firing], T0 + 3600)
            bodies = rec.bodies("/email")
            assert [b["reason"] for b in bodies] == ["new", "repeat"]

    asyncio.run(main())


def test_resolved_notice_is_sent_once(store: Store) -> None:
    """When the condition clears, one resolved notice follows, then nothing more."""

    async def main() -> None:
        async with recording_server() as rec:
            d = dispatcher(store, section(rec, route={"group_wait": "0s"}))
            firing = alert("cpu_busy", "high")
            await step(d, [firing], T0)
            await step(d, [resolved(firing, T0 + 100)], T0 + 400)
            for offset in range(410, 2000, 100):
                await step(d, [], T0 + offset)
            bodies = rec.bodies("/email")
            assert [b["status"] for b in bodies] == ["firing", "resolved"]
            assert bodies[1]["text"].startswith("[RESOLVED:1]")
            assert d.groups == {}

    asyncio.run(main())


def test_an_alert_gone_from_the_update_is_resolved(store: Store) -> None:
    """A firing alert the evaluator stops sending is taken as resolved."""

    async def main() -> None:
        async with recording_server() as rec:
            d = dispatcher(store, section(rec, route={"group_wait": "0s"}))
            await step(d, [alert("cpu_busy", "high")], T0)
            await step(d, [], T0 + 400)
            assert [b["status"] for b in rec.bodies("/email")] == ["firing", "resolved"]

    asyncio.run(main())


def test_pending_alerts_are_not_sent(store: Store) -> None:
    """A pending alert (its for: not yet passed) reaches nobody."""

    async def main() -> None:
        async with recording_server() as rec:
            d = dispatcher(store, section(rec, route={"group_wait": "0s"}))
            pending = alert("cpu_busy", "high", state=AlertState.PENDING)
            for offset in range(0, 600, 10):
                await step(d, [pending], T0 + offset)
            assert rec.received == []

    asyncio.run(main())


def test_flapping_target_sends_no_storm(store: Store) -> None:
    """A target flapping for an hour (with no keep_firing_for to damp it) sends at
    most a firing and a resolved notice per group interval."""

    async def main() -> None:
        async with recording_server() as rec:
            route = {
                "group_wait": "10s",
                "group_interval": "5m",
                "repeat_interval": "4h",
            }
            d = dispatcher(store, section(rec, route=route))
            base = alert("probe_failed", "high", probe="api")
            evaluations = 0
            for offset in range(0, 3600, 10):
                # Three evaluations failing, two passing, over and over.
                flapped = (offset // 10) % 5 >= 3
                current = [resolved(base, T0 + offset)] if flapped else [base]
                await step(d, current, T0 + offset)
                evaluations += 1
            sent = len(rec.bodies("/email"))
            assert evaluations == 360
            assert 1 <= sent <= 2 * (1 + 3600 // 300)
            assert rec.bodies("/email")[0]["status"] == "firing"

    asyncio.run(main())


def test_an_alert_firing_again_after_its_resolved_notice_is_sent_at_once(
    store: Store,
) -> None:
    """Once the receiver was told all is well, an alert that fires again is sent
    after group_wait, not held back for the rest of the group interval."""

    async def main() -> None:
        async with recording_server(ok=202) as rec:
            route = {"group_wait": "2s", "group_interval": "5m"}
            d = dispatcher(store, section(rec, route=route))
            base = alert("error_rate_critical", "critical", environment="production")
            t = T0
            while t <= T0 + 20:
                await step(d, [base], t)
                t += 1
            while t <= T0 + 320:
                await step(d, [resolved(base, T0 + 21)], t)
                t += 1
            actions = [b["event_action"] for b in rec.bodies("/page")]
            assert actions == ["trigger", "resolve"]

            again = alert(
                "error_rate_critical", "critical", active_at=t, environment="production"
            )
            start = t
            while t <= start + 10:
                await step(d, [again], t)
                t += 1
            actions = [b["event_action"] for b in rec.bodies("/page")]
            assert actions == ["trigger", "resolve", "trigger"]

    asyncio.run(main())


def test_two_hundred_probes_from_one_cause_page_once(store: Store) -> None:
    """200 probes failing together give one page for their group, and one incident."""

    async def main() -> None:
        async with recording_server(ok=202) as rec:
            d = dispatcher(store, section(rec, route={"group_wait": "30s"}))
            probes = [
                alert("probe_failed", "critical", probe=f"p{i:03d}") for i in range(200)
            ]
            for offset in range(0, 600, 10):
                await step(d, probes, T0 + offset)
            [page] = rec.bodies("/page")
            assert page["event_action"] == "trigger"
            assert page["payload"]["custom_details"]["firing"] == 200
            assert page["payload"]["summary"].startswith(
                "[FIRING:200] shop: probe_failed"
            )
            details = page["payload"]["custom_details"]["alerts"]
            assert len(details) == 31 and details[-1] == "- and 170 more"
            assert len(store.incidents()) == 1
            assert store.incidents()[0].alerts == 200

    asyncio.run(main())


def test_one_page_per_group_when_two_environments_fail(store: Store) -> None:
    """Alerts in two environments form two groups: two pages with two dedup keys."""

    async def main() -> None:
        async with recording_server(ok=202) as rec:
            d = dispatcher(store, section(rec, route={"group_wait": "0s"}))
            alerts = [
                alert("probe_failed", "critical", probe=f"p{i}", environment=env)
                for env in ("production", "staging")
                for i in range(20)
            ]
            await step(d, alerts, T0)
            pages = rec.bodies("/page")
            assert len(pages) == 2
            assert len({page["dedup_key"] for page in pages}) == 2

    asyncio.run(main())


def test_receiver_failing_three_times_then_ok_gets_exactly_one(
    any_store: Store,
) -> None:
    """A receiver answering 500 three times, then 200, receives exactly one delivery."""

    async def main() -> None:
        async with recording_server() as rec:
            rec.statuses = [500, 500, 500]
            d = dispatcher(any_store, section(rec, route={"group_wait": "0s"}))
            firing = alert("cpu_busy", "high")
            for offset in range(0, 1200, 10):
                await step(d, [firing], T0 + offset)
            assert rec.answered == [500, 500, 500, 200]
            assert len(rec.bodies("/email")) == 1

    asyncio.run(main())


def test_receiver_down_past_the_retries_is_tried_again_next_interval(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """After the retries run out the failure is logged and the next interval delivers once."""

    async def main() -> None:
        async with recording_server() as rec:
            rec.statuses = [503] * 5
            route = {"group_wait": "0s", "group_interval": "1m"}
            d = dispatcher(store, section(rec, route=route))
            firing = alert("cpu_busy", "high")
            await step(d, [firing], T0)
            assert rec.bodies("/email") == []
            for offset in range(10, 300, 10):
                await step(d, [firing], T0 + offset)
            assert len(rec.bodies("/email")) == 1

    with caplog.at_level(logging.INFO, "verger.monitor.alerting"):
        asyncio.run(main())
    assert "Could not send [FIRING:1] shop: cpu_busy" in caplog.text
    assert "HTTP 503" in caplog.text


def test_a_refused_request_is_not_retried(store: Store) -> None:
    """A 400 answer is permanent: one try per group interval, not a retry loop."""

    async def main() -> None:
        async with recording_server() as rec:
            rec.statuses = [400, 400]
            route = {"group_wait": "0s", "group_interval": "1m"}
            d = dispatcher(store, section(rec, route=route))
            await step(d, [alert("cpu_busy", "high")], T0)
            assert rec.answered == [400]

    asyncio.run(main())


def test_restarted_dispatcher_sends_nothing_already_delivered(any_store: Store) -> None:
    """A new dispatcher on the same store re-sends nothing, then resolves once."""

    async def main() -> None:
        async with recording_server(ok=202) as rec:
            settings = section(rec, route={"group_wait": "10s"})
            alerts = [alert("api_down", "critical"), alert("cpu_busy", "high")]
            first = dispatcher(any_store, settings)
            for offset in range(0, 60, 10):
                await step(first, alerts, T0 + offset)
            assert by_path(rec) == {"/page": 1, "/email": 1}

            again = dispatcher(any_store, settings)
            for offset in range(60, 600, 10):
                await step(again, alerts, T0 + offset)
            assert by_path(rec) == {"/page": 1, "/email": 1}

            cleared = [resolved(a, T0 + 600) for a in alerts]
            await step(again, cleared, T0 + 600)
            for offset in range(610, 1500, 10):
                await step(again, [], T0 + offset)
            assert by_path(rec) == {"/page": 2, "/email": 2}
            assert rec.bodies("/page")[1]["event_action"] == "resolve"

    asyncio.run(main())


def test_condition_cleared_while_the_agent_was_down_is_resolved_once(
    any_store: Store,
) -> None:
    """A firing alert that cleared during a restart gets one resolved notice from the new one."""

    async def main() -> None:
        async with recording_server(ok=202) as rec:
            settings = section(rec, route={"group_wait": "0s"})
            firing = alert("api_down", "critical")
            first = dispatcher(any_store, settings)
            await step(first, [firing], T0)

            again = dispatcher(any_store, settings)
            await step(again, [resolved(firing, T0 + 300)], T0 + 900)
            for offset in range(910, 1500, 10):
                await step(again, [], T0 + offset)
            assert [b["event_action"] for b in rec.bodies("/page")] == [
                "trigger",
                "resolve",
            ]

            third = dispatcher(any_store, settings)
            for offset in range(1500, 1600, 10):
                await step(third, [], T0 + offset)
            assert len(rec.bodies("/page")) == 2

    asyncio.run(main())


def test_alert_the_evaluator_forgot_over_a_restart_is_resolved(store: Store) -> None:
    """After a restart, a delivered firing alert absent from the first update is resolved once."""

    async def main() -> None:
        async with recording_server() as rec:
            settings = section(rec, route={"group_wait": "0s"})
            first = dispatcher(store, settings)
            await step(first, [alert("cpu_busy", "high")], T0)

            again = dispatcher(store, settings)
            for offset in range(600, 1200, 10):
                await step(again, [], T0 + offset)
            bodies = rec.bodies("/email")
            assert [b["status"] for b in bodies] == ["firing", "resolved"]
            assert bodies[1]["alerts"][0]["labels"]["alertname"] == "cpu_busy"

    asyncio.run(main())


def test_a_pending_alert_after_a_restart_is_not_resolved(store: Store) -> None:
    """An alert that is pending again after a restart is not told as resolved."""

    async def main() -> None:
        async with recording_server() as rec:
            settings = section(rec, route={"group_wait": "0s"})
            firing = alert("cpu_busy", "high")
            first = dispatcher(store, settings)
            await step(first, [firing], T0)

            again = dispatcher(store, settings)
            pending = alert("cpu_busy", "high", state=AlertState.PENDING)
            for offset in range(600, 900, 10):
                await step(again, [pending], T0 + offset)
            for offset in range(900, 1200, 10):
                await step(again, [firing], T0 + offset)
            assert [b["status"] for b in rec.bodies("/email")] == ["firing"]

    asyncio.run(main())


def test_route_tree_matches_children_and_continue(store: Store) -> None:
    """A child route takes what it matches; continue lets a later sibling take it too."""

    async def main() -> None:
        async with recording_server(ok=202) as rec:
            route = {
                "receiver": "ticket",
                "group_wait": "0s",
                "routes": [
                    {"match": {"team": "db"}, "receiver": "email", "continue": True},
                    {"match_re": {"severity": "crit.*"}, "receiver": "page"},
                ],
            }
            d = dispatcher(store, section(rec, route=route))
            alerts = [
                alert("pool_exhausted", "critical", team="db"),
                alert("slow_query", "medium", team="web"),
            ]
            await step(d, alerts, T0)
            assert by_path(rec) == {"/email": 1, "/page": 1, "/ticket": 1}
            [email] = rec.bodies("/email")
            assert email["alerts"][0]["labels"]["alertname"] == "pool_exhausted"

    asyncio.run(main())


def test_group_by_splits_and_joins_groups(store: Store) -> None:
    """group_by decides the groups: by instance, each instance is a notification."""

    async def main() -> None:
        async with recording_server() as rec:
            route = {"group_wait": "0s", "group_by": ["alertname", "instance"]}
            d = dispatcher(store, section(rec, route=route))
            alerts = [alert("disk_full", "high", instance=f"h{i}") for i in range(3)]
            await step(d, alerts, T0)
            bodies = rec.bodies("/email")
            assert len(bodies) == 3
            assert {b["group_labels"]["instance"] for b in bodies} == {"h0", "h1", "h2"}

    asyncio.run(main())


def test_resolved_after_a_restart_with_changed_routes_reaches_the_old_group(
    store: Store,
) -> None:
    """Routes edited over a restart: the group that fired gets its resolve; its incident closes."""

    async def main() -> None:
        async with recording_server(ok=202) as rec:
            firing = alert("api_down", "critical")
            first = dispatcher(store, section(rec, route={"group_wait": "0s"}))
            await step(first, [firing], T0)
            regrouped = section(
                rec, route={"group_wait": "0s", "group_by": ["alertname"]}
            )
            again = dispatcher(store, regrouped)
            await step(again, [resolved(firing, T0 + 300)], T0 + 900)
            trigger, resolve = rec.bodies("/page")
            assert resolve["event_action"] == "resolve"
            assert resolve["dedup_key"] == trigger["dedup_key"]
            [incident] = store.incidents()
            assert incident.status == "resolved" and incident.resolved_at == T0 + 300

    asyncio.run(main())


def test_a_receiver_removed_over_a_restart_is_forgotten(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """A group sent to a receiver no longer configured is logged and cleared, not retried."""

    async def main() -> None:
        async with recording_server() as rec:
            await step(
                dispatcher(store, section(rec, route={"group_wait": "0s"})),
                [alert("cpu_busy", "high")],
                T0,
            )
            only_page = AlertingSection.model_validate(
                {"receivers": {"page": {"webhook": rec.url("/page")}}}
            )
            await step(dispatcher(store, only_page), [], T0 + 600)
            assert store.notifications_firing() == []
            assert by_path(rec) == {"/email": 1}

    with caplog.at_level(logging.INFO, "verger.monitor.alerting"):
        asyncio.run(main())
    assert "Receiver email is no longer configured" in caplog.text


def test_run_loop_ends_group_wait_on_time_between_updates(store: Store) -> None:
    """run() flushes on its own clock, so a group wait ends without another update."""

    async def main() -> None:
        async with recording_server() as rec:
            clock = [T0]
            d = dispatcher(
                store, section(rec, route={"group_wait": "5s"}), clock=lambda: clock[0]
            )
            await d.update([alert("cpu_busy", "high")], T0)
            stop = asyncio.Event()
            loop = asyncio.create_task(d.run(stop, tick=0.01))
            await asyncio.sleep(0.1)
            assert rec.received == []
            clock[0] = T0 + 5
            for _ in range(200):
                if rec.received:
                    break
                await asyncio.sleep(0.01)
            stop.set()
            await loop
            assert len(rec.bodies("/email")) == 1

    asyncio.run(main())


def test_pending_again_after_a_restart_then_gone_is_resolved_once(store: Store) -> None:
    """An alert pending again after a restart that then clears gets one resolved notice."""

    async def main() -> None:
        async with recording_server() as rec:
            settings = section(rec, route={"group_wait": "0s"})
            await step(dispatcher(store, settings), [alert("cpu_busy", "high")], T0)
            again = dispatcher(store, settings)
            pending = alert("cpu_busy", "high", state=AlertState.PENDING)
            for offset in range(600, 900, 10):
                await step(again, [pending], T0 + offset)
            for offset in range(900, 1500, 10):
                await step(again, [], T0 + offset)
            assert [b["status"] for b in rec.bodies("/email")] == ["firing", "resolved"]
            assert store.notifications_firing() == []

    asyncio.run(main())


def test_default_tiers_repeat_pages_hourly_and_email_every_four_hours(
    store: Store,
) -> None:
    """By default a firing page repeats every hour, an email every four hours."""

    async def main() -> None:
        async with recording_server(ok=202) as rec:
            d = dispatcher(store, section(rec))
            alerts = [alert("api_down", "critical"), alert("cpu_busy", "high")]
            for offset in range(0, 4 * 3600 + 120, 60):
                await step(d, alerts, T0 + offset)
            assert by_path(rec) == {"/page": 5, "/email": 2}

    asyncio.run(main())


def test_drain_at_shutdown_leaves_an_unfinished_delivery_to_the_next_agent(
    store: Store,
) -> None:
    """A delivery cut off by drain is not recorded, so the next dispatcher sends it once."""

    async def main() -> None:
        async with recording_server() as rec:
            rec.statuses = [503] * 3
            settings = section(rec, route={"group_wait": "0s"})
            busy = alert("cpu_busy", "high")
            first = Dispatcher(
                settings, store, app="shop", delays=(5.0,), deadline=30.0
            )
            await first.update([busy], T0)
            await asyncio.sleep(0.2)
            assert not await first.drain(0.1)
            assert store.notifications_firing() == []
            again = dispatcher(store, settings)
            await step(again, [busy], T0 + 60)
            assert rec.answered == [503, 503, 503, 200]
            assert len(rec.bodies("/email")) == 1

    asyncio.run(main())
