"""What the dashboard shows, as plain data: the JSON API's answers.

Numbers come from the metric store (through ``verger.web.metrics``),
releases, incidents, alerts and backups from the state store. Every number
a page shows is also given as the text the page shows, so that a reader of
the API and a reader of the page see the same thing; unknown is "no data".
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from verger.config import Config
from verger.config.sources import SourcesSection
from verger.monitor import SEVERITIES
from verger.monitor.build import live_environments
from verger.monitor.store import MetricStore
from verger.state import Row, Store
from verger.web.metrics import METRICS, RANGES, Metric, Readings, step_for

NO_DATA = "no data"
# Charts are cached per step: a poll within the same step reads nothing again.
_CACHE_SIZE = 64


def show(value: float | None, unit: str, digits: int | None = None) -> str:
    """A number as the dashboard writes it: ``145 ms``, ``0.08%``, ``234``."""
    if value is None:
        return NO_DATA
    if unit == "seconds":
        return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"
    if unit == "ratio":
        return f"{value * 100:.{2 if digits is None else digits}f}%"
    if unit == "per_second":
        return f"{value:.1f}/s"
    return f"{value:.0f}"


_DIGITS = {"cpu": 0, "cache_hit_rate": 1, "error_rate": 2}


@dataclass
class Board:
    """The dashboard's sources: the config, the state store, the metric store if any."""

    config: Config
    state: Store
    metrics: Callable[[], MetricStore | None] = lambda: None
    _charts: dict[tuple[str, str, str, float], dict[str, Any]] = field(
        default_factory=dict
    )

    # -- environments -----------------------------------------------------

    def environments(self) -> list[str]:
        return self.config.order()

    def default_environment(self) -> str:
        """The environment users reach (production), shown unless another is asked for."""
        live = live_environments(self.config)
        return live[-1] if live else self.environments()[-1]

    # -- summary ----------------------------------------------------------

    async def summary(
        self, environment: str, now: float | None = None
    ) -> dict[str, Any]:
        """The tiles' numbers for one environment, the alerts, the newest backup."""
        at = time.time() if now is None else now
        # The state store is read on the loop (its connection is the loop's);
        # the metric store, which may read 30 days, in a thread.
        firing = [a for a in self._firing() if _about(a, environment, True)]
        store = self.metrics()
        tiles = await asyncio.to_thread(self._tiles, store, environment, at, firing)
        return {
            "at": at,
            "environment": environment,
            "environments": self.environments(),
            "monitoring": store is not None,
            "tiles": tiles,
            "alerts": _alert_counts(firing, store is not None),
            "backup": self.backup(),
        }

    def _tiles(
        self,
        store: MetricStore | None,
        environment: str,
        at: float,
        firing: list[dict[str, Any]],
    ) -> dict[str, dict[str, Any]]:
        readings = Readings(store) if store is not None else None
        tiles = {"uptime": self._uptime(readings, environment, at, firing)}
        for name, metric in METRICS.items():
            tiles[name] = self._tile(metric, readings, environment, at, firing)
        return tiles

    def _tile(
        self,
        metric: Metric,
        readings: Readings | None,
        environment: str,
        at: float,
        firing: list[dict[str, Any]],
    ) -> dict[str, Any]:
        value = readings.now(metric, environment, at) if readings else None
        return {
            "title": metric.title,
            "value": value,
            "unit": metric.unit,
            "text": show(value, metric.unit, _DIGITS.get(metric.name)),
            "status": _status(
                metric.rules, environment, firing, value, metric.per_environment
            ),
        }

    def _uptime(
        self,
        readings: Readings | None,
        environment: str,
        at: float,
        firing: list[dict[str, Any]],
    ) -> dict[str, Any]:
        target = (self.config.monitor or SourcesSection()).slo.availability
        value = readings.uptime(environment, at) if readings else None
        # Its own number against its own target: a burn alert says how fast the
        # budget goes, not that the 30 days fall short; the alerts tile shows it.
        status = "high" if value is not None and value < target else "ok"
        if value is None:
            status = "unknown"
        return {
            "title": "Uptime (30d)",
            "value": value,
            "unit": "ratio",
            "text": show(value, "ratio", 3),
            "target": target,
            "target_text": f"SLA {show(target, 'ratio', 1)}",
            "status": status,
        }

    def _firing(self) -> list[dict[str, Any]]:
        alerts = []
        for row in self.state.alert_states():
            if row["state"] != "firing":
                continue
            labels = json.loads(row["labels"])
            alerts.append({"rule": row["rule"], "labels": labels})
        return alerts

    # -- charts -----------------------------------------------------------

    async def series(
        self, metric: str, range_name: str, environment: str, now: float | None = None
    ) -> dict[str, Any]:
        """A chart's points: ``[time, value or None]`` over the range, oldest first."""
        chosen = METRICS[metric]
        span = RANGES[range_name]
        store = self.metrics()
        at = time.time() if now is None else now
        if store is None:
            return _chart(chosen, range_name, environment, step_for(span), [])
        key = (metric, range_name, environment, at // step_for(span))
        cached = self._charts.get(key)
        if cached is not None:
            return cached
        readings = Readings(store)
        step, points = await asyncio.to_thread(
            readings.series, chosen, environment, span, at
        )
        chart = _chart(chosen, range_name, environment, step, points)
        if len(self._charts) >= _CACHE_SIZE:
            self._charts.clear()
        self._charts[key] = chart
        return chart

    # -- releases, incidents, backups -------------------------------------

    def releases(self) -> list[dict[str, Any]]:
        """The live release of every environment, in release order."""
        return [self._release(name) for name in self.environments()]

    def _release(self, name: str) -> dict[str, Any]:
        row = self.state.environment(name)
        live = self.state.release(row.live_release) if row is not None else None
        if live is None:
            return {"environment": name, "version": None, "text": "no live release"}
        since = self._live_since(name, live)
        return {
            "environment": name,
            "version": live.version,
            "slot": live.slot,
            "status": live.status,
            "since": since,
            "since_text": _when(since),
            "text": f"{live.version} since {_when(since)}",
        }

    def _live_since(self, environment: str, live: Row) -> float:
        """When the live release took the users: its deploy's end, else its creation."""
        for deploy in self.state.deploys(environment, limit=50):
            if deploy.release_id == live.id and deploy.status == "succeeded":
                return float(deploy.finished_at or deploy.started_at)
        return float(live.created_at)

    def incidents(self, limit: int = 10) -> list[dict[str, Any]]:
        """The newest incidents first, each with its state and times."""
        return [
            {
                "id": row.id,
                "title": row.title,
                "severity": row.severity,
                "status": row.status,
                "detected_at": row.detected_at,
                "acknowledged_at": row.acknowledged_at,
                "resolved_at": row.resolved_at,
                "text": f"{_when(row.detected_at)}: {row.title} ({row.status})",
            }
            for row in self.state.incidents(limit=limit)
        ]

    def backup(self) -> dict[str, Any]:
        """The newest verified backup of the backed-up database, or that there is none."""
        section = self.config.backup
        database = section.database if section is not None else None
        rows = self.state.backups(database, "verified", limit=50) if database else []
        if not rows:
            return {
                "database": database,
                "verified": None,
                "text": "no verified backup",
            }
        row = max(rows, key=lambda r: float(r.finished_at or r.started_at))
        return {
            "database": database,
            "verified": {
                "id": row.id,
                "label": row.label,
                "engine": row.engine,
                "finished_at": row.finished_at,
                "verified_at": row.verified_at,
            },
            "text": f"{row.label or row.id} taken {_when(row.finished_at)}, "
            f"verified {_when(row.verified_at)}",
        }


def _chart(
    metric: Metric,
    range_name: str,
    environment: str,
    step: float,
    points: list[tuple[float, float | None]],
) -> dict[str, Any]:
    return {
        "metric": metric.name,
        "title": metric.title,
        "unit": metric.unit,
        "range": range_name,
        "environment": environment,
        "step": step,
        "points": [[t, v] for t, v in points],
    }


def _about(alert: dict[str, Any], environment: str, unlabelled: bool) -> bool:
    """Whether an alert is about ``environment``; ``unlabelled``: or about none."""
    named = alert["labels"].get("environment")
    return named == environment or (named is None and unlabelled)


def _status(
    rules: tuple[str, ...],
    environment: str,
    firing: list[dict[str, Any]],
    value: float | None,
    per_environment: bool = True,
) -> str:
    """The worst tier of the tile's own rules firing about its number, else ok or unknown.

    A tile of one environment takes only alerts labelled with it; a host-wide
    tile (CPU, the database) also those with no environment.
    """
    tiers = [
        a["labels"].get("severity", "high")
        for a in firing
        if a["rule"].split("{")[0] in rules
        and _about(a, environment, not per_environment)
    ]
    for severity in SEVERITIES:
        if severity in tiers:
            return str(severity)
    return "unknown" if value is None else "ok"


def _alert_counts(firing: list[dict[str, Any]], monitoring: bool) -> dict[str, Any]:
    """The alerts firing about the shown environment, and the tile's colour.

    Without monitoring nothing evaluates the rules: "none firing" would be a
    claim nobody checked, so the tile is unknown.
    """
    by_tier = {str(s): 0 for s in SEVERITIES}
    for alert in firing:
        tier = alert["labels"].get("severity", "high")
        by_tier[tier] = by_tier.get(tier, 0) + 1
    parts = [f"{n} {tier}" for tier, n in by_tier.items() if n]
    worst = next((str(s) for s in SEVERITIES if by_tier.get(str(s))), "ok")
    if not monitoring:
        text, status = "monitoring is off", "unknown"
    else:
        text, status = (", ".join(parts) if parts else "none firing"), worst
    return {
        "firing": len(firing),
        "by_severity": by_tier,
        "text": text,
        "status": status,
    }


def _when(at: float | None) -> str:
    if at is None:
        return "?"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(float(at)))
