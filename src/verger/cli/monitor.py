"""``verger monitor``: export rules to Prometheus, list rules and their alerts, read metrics."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import click

from verger.cli.main import Ctx, _store, cli, pass_ctx
from verger.config.types import format_duration, parse_duration
from verger.errors import VergerError


class MonitorError(VergerError):
    """A monitor command cannot do what was asked."""


@cli.group()
def monitor() -> None:
    """Metrics and rules: export them to Prometheus, list them, read the store."""


@monitor.command("export")
@click.argument("folder", default="prometheus", required=False)
@pass_ctx
def monitor_export(c: Ctx, folder: str) -> None:
    """Write Prometheus rules, an Alertmanager config and promtool tests to FOLDER."""
    from verger.config.sources import SourcesSection
    from verger.monitor.build import rules_for
    from verger.monitor.export import export

    config = c.loaded.config
    interval = (config.monitor or SourcesSection()).interval
    target = Path(folder)
    with c.out.progress("Exporting rules", total=3) as bar:

        def progress(done: int, total: int) -> None:
            bar(completed=done, total=total)

        files = asyncio.run(export(rules_for(config), target, interval, progress))
    lines = [f"Wrote {path}" for path in files]
    lines.append(
        f"Check them with: promtool check rules {target / 'rules.yml'} && "
        f"promtool test rules {target / 'rules.test.yml'}"
    )
    c.out.result({"files": [str(p) for p in files]}, "\n".join(lines))


@monitor.command("rules")
@pass_ctx
def monitor_rules(c: Ctx) -> None:
    """Every rule with its tier, for, and the alerts pending or firing now."""
    from verger.monitor.build import rules_for

    rules = rules_for(c.loaded.config)
    states = _store(c).alert_states()
    rows = []
    data = []
    for rule in rules:
        alerts = [dict(s.data) for s in states if s["rule"] == rule.key]
        firing = sum(a["state"] == "firing" for a in alerts)
        pending = sum(a["state"] == "pending" for a in alerts)
        if rule.record:
            state = "recording"
        elif firing or pending:
            state = ", ".join(
                part
                for part in (
                    f"{firing} firing" if firing else "",
                    f"{pending} pending" if pending else "",
                )
                if part
            )
        else:
            state = "ok"
        rows.append(
            (
                rule.key,
                "" if rule.record else rule.severity,
                format_duration(rule.for_) if rule.for_ else "",
                state,
                rule.expr,
            )
        )
        data.append(
            {**rule.describe(), "key": rule.key, "state": state, "alerts": alerts}
        )
    c.out.table("Rules", ["rule", "tier", "for", "state", "expr"], rows, data=data)


@monitor.command("query")
@click.argument("selector")
@click.option("--since", default="1h", show_default=True, help="How far back to read.")
@pass_ctx
def monitor_query(c: Ctx, selector: str, since: str) -> None:
    """Read SELECTOR (a metric, or metric{label="value"}) from the metric store."""
    from verger.config.sources import SourcesSection
    from verger.monitor.build import open_metrics
    from verger.monitor.rules import ExprError, parse
    from verger.monitor.rules.expr import Selector

    try:
        node = parse(selector)
        seconds = parse_duration(since)
    except (ExprError, ValueError) as exc:
        raise MonitorError(
            f"cannot read {selector!r} --since {since}: {exc}",
            'give a metric such as up or up{job="app"} and a duration such as 1h',
        ) from None
    if not isinstance(node, Selector) or node.range is not None:
        raise MonitorError(
            f"{selector!r} is not a metric selector",
            'give a metric such as verger_requests_total{environment="production"}',
        )
    config = c.loaded.config
    path = Path((config.monitor or SourcesSection()).store)
    if not (path if path.is_absolute() else c.loaded.root / path).exists():
        raise MonitorError(
            "there is no metric store yet",
            "add monitor: to verger.yml and start the agent with 'verger up'",
        )
    store = open_metrics(config, c.loaded.root)
    try:
        now = time.time()
        found = store.select(node.name, node.matchers, now - seconds, now)
    finally:
        store.close()
    rows = [
        (
            s.name + "{" + ",".join(f'{k}="{v}"' for k, v in s.labels.items()) + "}",
            len(s.values),
            f"{s.values[-1]:g}",
            time.strftime("%H:%M:%S", time.localtime(s.times[-1])),
        )
        for s in found
    ]
    data = [
        {"name": s.name, "labels": s.labels, "times": s.times, "values": s.values}
        for s in found
    ]
    c.out.table(
        f"{selector} over the last {format_duration(seconds)}",
        ["series", "samples", "last", "at"],
        rows,
        data=data,
    )


@monitor.command("heartbeat")
@click.argument("name")
@pass_ctx
def monitor_heartbeat(c: Ctx, name: str) -> None:
    """Report that the job behind heartbeat NAME ran (call it at the end of a cron job)."""
    config = c.loaded.config
    known = sorted(config.monitor.heartbeats) if config.monitor else []
    if name not in known:
        raise MonitorError(
            f"there is no heartbeat named {name!r} (known: {', '.join(known) or 'none'})",
            "add it under monitor.heartbeats: with its period, such as {every: 1d}",
        )
    _store(c).beat(name)
    c.out.result({"heartbeat": name, "at": time.time()}, f"Heartbeat {name} recorded.")
