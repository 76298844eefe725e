"""Incidents from critical alerts, and the silence and incident commands on the state store."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from alerting_fakes import (
    T0,
    alert,
    dispatcher,
    recording_server,
    resolved,
    section,
    step,
)

from verger.config.alerting import AlertingSection
from verger.monitor.alert import AlertState
from verger.state import Store, open_store

VERGER = [sys.executable, "-m", "verger"]
CONFIG = """\
app: shop
start: python -m http.server $PORT
environments:
  staging:
    listen: 127.0.0.1:18099
"""


def test_critical_group_opens_one_incident_with_detection_times(
    any_store: Store,
) -> None:
    """A critical group opens one incident, detected at the first fire, resolved when it clears."""

    async def main() -> None:
        async with recording_server(ok=202) as rec:
            d = dispatcher(any_store, section(rec, route={"group_wait": "0s"}))
            first = alert(
                "api_down", "critical", active_at=T0, fired_at=T0 + 300, probe="a"
            )
            second = alert(
                "api_down", "critical", active_at=T0 + 20, fired_at=T0 + 320, probe="b"
            )
            await step(d, [first], T0 + 300)
            await step(d, [first, second], T0 + 320)
            [row] = any_store.incidents()
            assert row.status == "detected"
            assert row.started_at == T0 and row.detected_at == T0 + 300
            assert row.alerts == 2
            cleared = [resolved(first, T0 + 900), resolved(second, T0 + 910)]
            await step(d, cleared, T0 + 910)
            [row] = any_store.incidents()
            assert row.status == "resolved" and row.resolved_by == "verger"
            assert row.resolved_at - row.detected_at == 610
            kinds = [note.kind for note in any_store.incident_notes(row.id)]
            assert kinds == ["detected", "resolved"]
            assert (
                rec.bodies("/page")[0]["payload"]["custom_details"]["incident"]
                == row.id
            )

    asyncio.run(main())


def test_high_and_silenced_alerts_open_no_incident(store: Store) -> None:
    """Only an unmuted critical alert opens an incident."""

    async def main() -> None:
        async with recording_server(ok=202) as rec:
            d = dispatcher(store, section(rec, route={"group_wait": "0s"}))
            store.add_silence(["alertname=disk_full"], T0, T0 + 3600, "resizing", "ann")
            alerts = [alert("cpu_busy", "high"), alert("disk_full", "critical")]
            await step(d, alerts, T0)
            assert store.incidents() == []

    asyncio.run(main())


def test_flapping_critical_reopens_its_incident(store: Store) -> None:
    """A group firing again soon after it cleared reopens its incident instead of a new one."""

    async def main() -> None:
        async with recording_server(ok=202) as rec:
            d = dispatcher(store, section(rec, route={"group_wait": "0s"}))
            down = alert("api_down", "critical")
            for cycle in range(5):
                at = T0 + cycle * 120
                await step(d, [down], at)
                await step(d, [resolved(down, at + 60)], at + 60)
            [row] = store.incidents()
            assert row.status == "resolved"
            kinds = [note.kind for note in store.incident_notes(row.id)]
            assert kinds.count("reopened") == 4
            # Long after, a new failure is a new incident.
            await step(d, [down], T0 + 5000)
            assert len(store.incidents()) == 2

    asyncio.run(main())


def test_incident_survives_a_restart(any_store: Store) -> None:
    """A dispatcher started again finds the group's open incident and resolves it."""

    async def main() -> None:
        async with recording_server(ok=202) as rec:
            settings = section(rec, route={"group_wait": "0s"})
            down = alert("api_down", "critical")
            await step(dispatcher(any_store, settings), [down], T0)
            again = dispatcher(any_store, settings)
            await step(again, [down], T0 + 60)
            await step(again, [resolved(down, T0 + 120)], T0 + 120)
            [row] = any_store.incidents()
            assert row.status == "resolved" and row.resolved_at == T0 + 120

    asyncio.run(main())


def test_critical_alerts_open_incidents_with_no_receivers(
    any_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """With no receivers, each critical group opens an incident; the log says no one was told."""

    async def main() -> None:
        d = dispatcher(any_store, AlertingSection.model_validate({}))
        firing = [
            alert(name, "critical", environment="staging")
            for name in ("error_rate_critical", "latency_critical")
        ]
        firing += [
            alert("api_down", "critical", probe=probe) for probe in ("a", "b")
        ] + [alert("cpu_high", "high")]
        with caplog.at_level(logging.WARNING, "verger.monitor.alerting"):
            await step(d, firing, T0 + 60)
            await step(d, firing, T0 + 70)
        rows = any_store.incidents()
        assert sorted((row.title, row.alerts) for row in rows) == [
            ("api_down (environment=production)", 2),
            ("error_rate_critical (environment=staging)", 1),
            ("latency_critical (environment=staging)", 1),
        ]
        assert {row.status for row in rows} == {"detected"}
        told = [
            r.getMessage() for r in caplog.records if "No one was told" in r.message
        ]
        assert len(told) == 4, told
        assert any(
            m.startswith("No one was told of 2 alerts (api_down): no route with a "
                         "receiver takes them (incident #")
            for m in told
        ), told  # fmt: skip
        assert any(m.startswith("No one was told of cpu_high:") for m in told), told

        await step(d, [resolved(a, T0 + 200) for a in firing], T0 + 200)
        assert {row.status for row in any_store.incidents()} == {"resolved"}
        caplog.clear()
        with caplog.at_level(logging.WARNING, "verger.monitor.alerting"):
            await step(d, firing[:1], T0 + 900)
            await step(d, firing[:1], T0 + 910)
        assert len(any_store.incidents()) == 4
        assert sum("No one was told" in r.message for r in caplog.records) == 1

    asyncio.run(main())


def test_incidents_that_cleared_while_no_agent_ran_resolve_at_start(
    any_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Started again, the dispatcher resolves open incidents whose alerts no longer fire."""

    async def main() -> None:
        quiet = AlertingSection.model_validate({})
        before = dispatcher(any_store, quiet)
        cleared = alert("api_down", "critical", probe="a")
        still = alert("error_rate_critical", "critical", environment="staging")
        again = alert("latency_critical", "critical", environment="canary")
        await step(before, [cleared, still, again], T0 + 60)
        await step(before, [cleared, still, again], T0 + 70)
        assert {row.status for row in any_store.incidents()} == {"detected"}
        assert await before.drain(1.0)

        # The agent comes back after the first cleared; the third is pending
        # again, as an evaluator started over finds it.
        pending = alert("latency_critical", "critical", AlertState.PENDING, T0 + 900,
                        environment="canary")  # fmt: skip
        after = dispatcher(any_store, quiet)
        with caplog.at_level(logging.INFO, "verger.monitor.alerting"):
            await step(after, [still, pending], T0 + 900)
        status = {row.title: row.status for row in any_store.incidents()}
        assert status == {
            "api_down (environment=production)": "resolved",
            "error_rate_critical (environment=staging)": "detected",
            "latency_critical (environment=canary)": "detected",
        }
        [row] = [r for r in any_store.incidents() if r.status == "resolved"]
        assert row.resolved_at == T0 + 900 and row.resolved_by == "verger"
        notes = [note.text for note in any_store.incident_notes(row.id)]
        assert notes[-1] == "every critical alert cleared while no agent ran"
        assert any(
            r.getMessage().startswith(f"Incident #{row.id} resolved: every critical")
            for r in caplog.records
        )

        # The pending one never fires again: its incident resolves when it goes.
        await step(after, [still], T0 + 960)
        status = {row.title: row.status for row in any_store.incidents()}
        assert status["latency_critical (environment=canary)"] == "resolved"
        assert status["error_rate_critical (environment=staging)"] == "detected"
        assert len(any_store.incidents()) == 3

    asyncio.run(main())


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "verger.yml").write_text(CONFIG, encoding="utf-8")
    return tmp_path


def run(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VERGER, "-c", str(project / "verger.yml"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=project,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "USER": "ann"},
    )


def test_silence_commands_add_list_and_expire(project: Path) -> None:
    """silence add, list and expire work on the store with no agent, and are audited."""
    added = run(
        project,
        "--json",
        "silence",
        "add",
        "--match",
        "alertname=cpu_busy",
        "--match",
        "environment=~prod.*",
        "--for",
        "2h",
        "--comment",
        "resize",
    )
    assert added.returncode == 0, added.stderr
    body = json.loads(added.stdout)
    assert body["matchers"] == ["alertname=cpu_busy", "environment=~prod.*"]
    assert body["ends_at"] - body["starts_at"] == 7200
    assert body["starts_at"] <= time.time()
    listed = json.loads(run(project, "--json", "silence", "list").stdout)
    assert [s["id"] for s in listed] == [body["id"]] and listed[0]["state"] == "active"
    human = run(project, "silence", "list")
    assert "alertname=cpu_busy" in human.stdout and "resize" in human.stdout

    later = run(
        project,
        "--json",
        "silence",
        "add",
        "--match",
        "team=db",
        "--start",
        "2099-03-07T22:00+01:00",
        "--for",
        "1h",
        "--comment",
        "upgrade",
    )
    planned = json.loads(later.stdout)
    assert (
        planned["state"] == "pending"
        and planned["ends_at"] - planned["starts_at"] == 3600
    )
    cancelled = json.loads(
        run(project, "--json", "silence", "expire", str(planned["id"])).stdout
    )
    assert (
        cancelled["state"] == "expired"
        and cancelled["starts_at"] == cancelled["ends_at"]
    )

    expired = run(project, "silence", "expire", str(body["id"]))
    assert (
        expired.returncode == 0 and f"Silence #{body['id']} expired." in expired.stdout
    )
    assert json.loads(run(project, "--json", "silence", "list").stdout) == []
    assert (
        len(json.loads(run(project, "--json", "silence", "list", "--all").stdout)) == 2
    )

    store = open_store(".verger/state.db", project)
    actions = [row.action for row in store.audit_trail()]
    store.close()
    assert actions == [
        "silence_expired",
        "silence_expired",
        "silence_added",
        "silence_added",
    ]


def test_silence_refuses_bad_input_in_one_line(project: Path) -> None:
    """A bad matcher, a bad duration or an unknown silence exits 2 with a hint."""
    bad = run(project, "silence", "add", "--match", "cpu busy", "--comment", "x")
    assert (
        bad.returncode == 2
        and "is not a matcher" in bad.stderr
        and "hint:" in bad.stderr
    )
    assert "Traceback" not in bad.stderr
    regex = run(project, "silence", "add", "--match", "a=~(", "--comment", "x")
    assert regex.returncode == 2 and "not a valid regex" in regex.stderr
    duration = run(
        project, "silence", "add", "--match", "a=b", "--for", "soon", "--comment", "x"
    )
    assert duration.returncode == 2 and "--for soon" in duration.stderr
    start = run(
        project, "silence", "add", "--match", "a=b", "--start", "soon", "--comment", "x"
    )
    assert start.returncode == 2 and "--start soon: not a time" in start.stderr
    missing = run(project, "silence", "expire", "42")
    assert missing.returncode == 2 and "no silence #42" in missing.stderr


def test_incident_commands_ack_note_resolve(project: Path) -> None:
    """incident list, ack, note and resolve record who did what and the times."""

    async def fire() -> None:
        store = open_store(".verger/state.db", project)
        async with recording_server(ok=202) as rec:
            d = dispatcher(store, section(rec, route={"group_wait": "0s"}))
            now = time.time()
            await step(
                d,
                [alert("api_down", "critical", active_at=now - 90, fired_at=now - 30)],
                now,
            )
        store.close()

    asyncio.run(fire())
    [listed] = json.loads(run(project, "--json", "incident", "list").stdout)
    assert listed["status"] == "detected" and listed["time_to_detect"] == 60
    number = str(listed["id"])

    acked = run(project, "incident", "ack", number)
    assert acked.returncode == 0 and "acknowledged by ann@" in acked.stdout
    again = run(project, "incident", "ack", number)
    assert "already acknowledged by ann@" in again.stdout
    noted = run(project, "incident", "note", number, "restarted the pool")
    assert noted.returncode == 0
    done = run(project, "incident", "resolve", number, "--note", "pool resized")
    assert done.returncode == 0 and "resolved by ann@" in done.stdout

    shown = json.loads(run(project, "--json", "incident", "show", number).stdout)
    assert shown["status"] == "resolved" and shown["time_to_restore"] >= 0
    assert [(t["kind"], t["text"]) for t in shown["timeline"]] == [
        ("detected", "api_down (environment=production)"),
        ("acknowledged", ""),
        ("note", "restarted the pool"),
        ("resolved", "pool resized"),
    ]
    assert all(t["by"].startswith("ann@") for t in shown["timeline"][1:])
    assert json.loads(run(project, "--json", "incident", "list", "--open").stdout) == []
    human = run(project, "incident", "list")
    assert "api_down" in human.stdout and "1m" in human.stdout
    missing = run(project, "incident", "ack", "99")
    assert missing.returncode == 2 and "no incident #99" in missing.stderr


def test_an_incident_resolved_by_hand_stays_resolved_across_a_restart(
    store: Store,
) -> None:
    """An incident a person resolved while its alert still fires is not opened again
    by a restarted agent; once the alert clears and fires anew, it is a new one."""

    async def main() -> None:
        async with recording_server(ok=202) as rec:
            settings = section(rec, route={"group_wait": "0s"})
            down = alert("api_down", "critical", fired_at=T0)
            await step(dispatcher(store, settings), [down], T0)
            [row] = store.incidents()
            store.update_incident(
                row.id, status="resolved", resolved_at=T0 + 30, resolved_by="alice"
            )

            again = dispatcher(store, settings)
            await step(again, [down], T0 + 60)
            await step(again, [down], T0 + 70)
            assert [r.status for r in store.incidents()] == ["resolved"]

            await step(again, [resolved(down, T0 + 80)], T0 + 80)
            later = alert("api_down", "critical", active_at=T0 + 900, fired_at=T0 + 900)
            await step(again, [later], T0 + 900)
            assert len(store.incidents()) == 2

    asyncio.run(main())
