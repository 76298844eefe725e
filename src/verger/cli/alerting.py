"""``verger silence`` and ``verger incident``: muting alerts and recording incidents.

Both work on the state store directly, so they work whether or not the
agent runs; a running agent reads silences from the store at its next
evaluation. Every change is written to the audit trail with who made it.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import click

from verger.cli.main import Ctx, UsageError, _store, cli, pass_ctx
from verger.config.types import format_duration, parse_duration
from verger.state import Row, actor


def _stamp(at: float | None) -> str:
    if at is None:
        return ""
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _span(seconds: float | None) -> str:
    return "" if seconds is None else format_duration(max(0, round(seconds)))


# -- silences -------------------------------------------------------------


@cli.group()
def silence() -> None:
    """Mute alerts that match labels for a while: add, list, expire."""


@silence.command("add")
@click.option(
    "--match",
    "matchers",
    multiple=True,
    required=True,
    metavar="LABEL=VALUE",
    help="A label matcher: name=value, name!=value, name=~regex, name!~regex (repeatable).",
)
@click.option("--for", "duration", default="2h", show_default=True, help="How long.")
@click.option(
    "--start",
    metavar="TIME",
    help="When it starts (ISO 8601, such as 2026-03-07T22:00+01:00; default: now).",
)
@click.option("--comment", required=True, help="Why, for whoever reads the list.")
@pass_ctx
def silence_add(
    c: Ctx, matchers: tuple[str, ...], duration: str, start: str | None, comment: str
) -> None:
    """Mute every alert matching all the --match conditions."""
    from verger.monitor.alerting import parse_matcher

    parsed = [parse_matcher(text) for text in matchers]
    seconds = _duration(duration)
    if not comment.strip():
        raise UsageError(
            "the comment is empty", "say why, such as --comment 'db upgrade'"
        )
    now = time.time()
    begins = now if start is None else _start(start)
    store = _store(c)
    written = [str(matcher) for matcher in parsed]
    silence_id = store.add_silence(
        written, begins, begins + seconds, comment.strip(), actor()
    )
    store.audit(
        actor(),
        "silence_added",
        None,
        silence=silence_id,
        matchers=written,
        until=begins + seconds,
    )
    row = store.silence(silence_id)
    assert row is not None
    when = f"from {_stamp(begins)} " if begins > now else ""
    c.out.result(
        _silence_data(row, now),
        f"Silence #{silence_id} mutes {', '.join(written)} {when}until "
        f"{_stamp(begins + seconds)}.",
    )


def _duration(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise UsageError(
            f"--for {text}: {exc}", "write a duration such as 30m, 2h or 1d"
        ) from None
    if seconds <= 0:
        raise UsageError(
            "--for must be more than 0s", "write a duration such as 30m or 2h"
        )
    return seconds


def _start(text: str) -> float:
    """A start time from ISO 8601; one without an offset is in the machine's zone."""
    try:
        at = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"--start {text}: not a time",
            "write ISO 8601, such as 2026-03-07T22:00 or 2026-03-07T22:00+01:00",
        ) from None
    return at.timestamp() if at.tzinfo else at.astimezone().timestamp()


@silence.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include expired silences.")
@pass_ctx
def silence_list(c: Ctx, show_all: bool) -> None:
    """Silences in effect (or all of them), newest first."""
    now = time.time()
    rows = [row for row in _store(c).silences() if show_all or row.ends_at > now]
    if not rows:
        c.out.result([], "No silences." if show_all else "No silence is in effect.")
        return
    c.out.table(
        "Silences",
        ["#", "state", "matchers", "from", "until", "by", "comment"],
        [
            [
                row.id,
                _silence_state(row, now),
                ", ".join(json.loads(row.matchers)),
                _stamp(row.starts_at),
                _stamp(row.ends_at),
                row.actor,
                row.comment,
            ]
            for row in rows
        ],
        data=[_silence_data(row, now) for row in rows],
    )


@silence.command("expire")
@click.argument("silence_id", metavar="ID", type=int)
@pass_ctx
def silence_expire(c: Ctx, silence_id: int) -> None:
    """End a silence now: what it muted is sent at the next evaluation."""
    store = _store(c)
    row = store.silence(silence_id)
    if row is None:
        raise UsageError(f"no silence #{silence_id}", "see 'verger silence list --all'")
    now = time.time()
    if row.ends_at <= now:
        c.out.result(
            _silence_data(row, now),
            f"Silence #{silence_id} had already ended at {_stamp(row.ends_at)}.",
        )
        return
    store.expire_silence(silence_id, now, actor())
    store.audit(actor(), "silence_expired", None, silence=silence_id)
    expired = store.silence(silence_id)
    assert expired is not None
    c.out.result(_silence_data(expired, now), f"Silence #{silence_id} expired.")


def _silence_state(row: Row, now: float) -> str:
    from verger.monitor.alerting import Silence

    return Silence.from_row(row).state(now)


def _silence_data(row: Row, now: float) -> dict[str, Any]:
    return {
        "id": row.id,
        "state": _silence_state(row, now),
        "matchers": json.loads(row.matchers),
        "starts_at": row.starts_at,
        "ends_at": row.ends_at,
        "comment": row.comment,
        "by": row.actor,
        "expired_by": row.expired_by,
    }


# -- incidents --------------------------------------------------------------


@cli.group()
def incident() -> None:
    """Incidents opened by critical alerts: list, show, ack, resolve, note."""


@incident.command("list")
@click.option("--open", "open_only", is_flag=True, help="Only incidents not resolved.")
@click.option("--limit", default=50, show_default=True, help="How many, newest first.")
@pass_ctx
def incident_list(c: Ctx, open_only: bool, limit: int) -> None:
    """Incidents newest first, with time to detect and time to restore."""
    rows = _store(c).incidents(limit=limit, open_only=open_only)
    if not rows:
        c.out.result([], "No open incidents." if open_only else "No incidents yet.")
        return
    c.out.table(
        "Incidents",
        ["#", "status", "detected", "to detect", "to restore", "alerts", "title"],
        [
            [
                row.id,
                _status(row),
                _stamp(row.detected_at),
                _span(_ttd(row)),
                _span(_ttr(row)),
                row.alerts,
                row.title,
            ]
            for row in rows
        ],
        data=[_incident_data(row) for row in rows],
    )


@incident.command("show")
@click.argument("incident_id", metavar="ID", type=int)
@pass_ctx
def incident_show(c: Ctx, incident_id: int) -> None:
    """One incident and its timeline: detection, acks, notes, resolution."""
    store = _store(c)
    row = _incident(store, incident_id)
    notes = store.incident_notes(incident_id)
    data = {**_incident_data(row), "timeline": [_note_data(note) for note in notes]}
    if c.out.json_mode:
        c.out.result(data)
        return
    c.out.say(f"Incident #{row.id}: {row.title} ({_status(row)})")
    c.out.say(
        f"started {_stamp(row.started_at)}, detected {_stamp(row.detected_at)} "
        f"({_span(_ttd(row))} to detect)"
        + (
            f", resolved {_stamp(row.resolved_at)} ({_span(_ttr(row))} to restore)"
            if row.resolved_at
            else ""
        )
    )
    c.out.table(
        "Timeline",
        ["at", "by", "what", "text"],
        [[_stamp(n.at), n.actor, n.kind, n.text] for n in notes],
    )


@incident.command("ack")
@click.argument("incident_id", metavar="ID", type=int)
@pass_ctx
def incident_ack(c: Ctx, incident_id: int) -> None:
    """Say that someone is on it."""
    store = _store(c)
    row = _incident(store, incident_id)
    if row.status != "detected":
        c.out.result(
            _incident_data(row), f"Incident #{incident_id} is already {_status(row)}."
        )
        return
    who, now = actor(), time.time()
    store.update_incident(
        incident_id, status="acknowledged", acknowledged_at=now, acknowledged_by=who
    )
    store.add_incident_note(incident_id, "acknowledged", "", who, now)
    store.audit(who, "incident_acknowledged", None, incident=incident_id)
    c.out.result(
        _incident_data(_incident(store, incident_id)),
        f"Incident #{incident_id} acknowledged by {who}.",
    )


@incident.command("resolve")
@click.argument("incident_id", metavar="ID", type=int)
@click.option("--note", "text", default="", help="What fixed it.")
@pass_ctx
def incident_resolve(c: Ctx, incident_id: int, text: str) -> None:
    """Close an incident by hand (the agent closes one when its alerts clear)."""
    store = _store(c)
    row = _incident(store, incident_id)
    if row.status == "resolved":
        c.out.result(
            _incident_data(row),
            f"Incident #{incident_id} was already resolved by {row.resolved_by}.",
        )
        return
    who, now = actor(), time.time()
    store.update_incident(
        incident_id, status="resolved", resolved_at=now, resolved_by=who
    )
    store.add_incident_note(incident_id, "resolved", text, who, now)
    store.audit(who, "incident_resolved", None, incident=incident_id)
    done = _incident(store, incident_id)
    c.out.result(
        _incident_data(done),
        f"Incident #{incident_id} resolved by {who}, {_span(_ttr(done))} after detection.",
    )


@incident.command("note")
@click.argument("incident_id", metavar="ID", type=int)
@click.argument("text")
@pass_ctx
def incident_note(c: Ctx, incident_id: int, text: str) -> None:
    """Add a line to an incident's timeline."""
    if not text.strip():
        raise UsageError("the note is empty", "write what happened, in quotes")
    store = _store(c)
    _incident(store, incident_id)
    who = actor()
    note_id = store.add_incident_note(incident_id, "note", text.strip(), who)
    store.audit(who, "incident_note", None, incident=incident_id)
    c.out.result(
        {"incident": incident_id, "note": note_id, "by": who, "text": text.strip()},
        f"Noted on incident #{incident_id}.",
    )


def _incident(store: Any, incident_id: int) -> Row:
    row = store.incident(incident_id)
    if row is None:
        raise UsageError(f"no incident #{incident_id}", "see 'verger incident list'")
    return row  # type: ignore[no-any-return]


def _status(row: Row) -> str:
    if row.status == "acknowledged" and row.acknowledged_by:
        return f"acknowledged by {row.acknowledged_by}"
    if row.status == "resolved" and row.resolved_by:
        return f"resolved by {row.resolved_by}"
    return str(row.status)


def _ttd(row: Row) -> float:
    return float(row.detected_at) - float(row.started_at)


def _ttr(row: Row) -> float | None:
    return (
        None
        if row.resolved_at is None
        else float(row.resolved_at) - float(row.detected_at)
    )


def _incident_data(row: Row) -> dict[str, Any]:
    return {
        "id": row.id,
        "status": row.status,
        "title": row.title,
        "severity": row.severity,
        "labels": json.loads(row.labels),
        "group_key": row.group_key,
        "alerts": row.alerts,
        "started_at": row.started_at,
        "detected_at": row.detected_at,
        "acknowledged_at": row.acknowledged_at,
        "acknowledged_by": row.acknowledged_by,
        "resolved_at": row.resolved_at,
        "resolved_by": row.resolved_by,
        "time_to_detect": _ttd(row),
        "time_to_restore": _ttr(row),
    }


def _note_data(note: Row) -> dict[str, Any]:
    return {"at": note.at, "by": note.actor, "kind": note.kind, "text": note.text}
