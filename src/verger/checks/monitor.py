"""Checks of the monitor's sources: that each heartbeat has a way to report in."""

from __future__ import annotations

from collections.abc import Iterator

from verger.checks.base import Check, Context, register


@register("heartbeats", order=76)
def check_heartbeats(context: Context) -> Iterator[Check]:
    """Heartbeats without ``monitor.listen`` warn: no heartbeat URL answers then.

    A heartbeat can still be reported on this host with ``verger monitor
    heartbeat NAME``, so the config stays valid; but a job on another host, or
    one written to call a URL, would be reported missed every period.
    """
    loaded = context.loaded
    if loaded is None or loaded.config.monitor is None:
        return
    monitor = loaded.config.monitor
    names = ", ".join(sorted(monitor.heartbeats))
    if not names:
        return
    if monitor.listen is None:
        yield Check(
            "heartbeats",
            "warn",
            f"monitor.heartbeats has {names} but monitor.listen is not set, so no "
            "heartbeat URL answers; only 'verger monitor heartbeat NAME' on this "
            "host reports in",
            "set monitor.listen, such as 127.0.0.1:9464, for "
            "http://LISTEN/heartbeat/NAME; or end each job with "
            "'verger monitor heartbeat NAME'",
            severity="warning",
        )
        return
    yield Check(
        "heartbeats",
        "ok",
        f"heartbeats {names} report in at http://{monitor.listen}/heartbeat/NAME",
    )
