"""The monitor built from verger.yml: its sources, its rules, its store and loop."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from verger.config import Config
from verger.config.sources import SourcesSection
from verger.deploy.routers import Router
from verger.monitor.alert import AlertSink
from verger.monitor.loop import MonitorLoop
from verger.monitor.rules import Rule, RuleEngine, default_rules, no_data
from verger.monitor.rules.engine import AlertStates
from verger.monitor.sources.base import Source
from verger.monitor.store import MetricStore
from verger.state import Store


def live_environments(config: Config) -> list[str]:
    """Environments no other one requires: where users are, such as production."""
    required = {e.requires for e in config.environments.values() if e.requires}
    return [name for name in config.order() if name not in required]


def rules_for(config: Config) -> list[Rule]:
    """The configured rules: recording rules first, each metric's no-data rule last."""
    monitor = config.monitor or SourcesSection()
    rules: list[Rule] = []
    for item in monitor.rules:
        if item == "default":
            defaults = default_rules(
                live_environments(config), monitor.slo.availability
            )
            rules.extend(r for r in defaults if r.name != "no_data")
        else:
            rules.append(item.rule())
    rules.sort(key=lambda r: not r.record)
    return [*rules, *no_data(rules)]


def open_metrics(config: Config, root: Path) -> MetricStore:
    """The metric store named by ``monitor.store``, with its retention."""
    monitor = config.monitor or SourcesSection()
    path = Path(monitor.store)
    return MetricStore(path if path.is_absolute() else root / path, monitor.retention)


def sources_for(
    config: Config, root: Path, routers: Mapping[str, Router], state: Store
) -> list[Source]:
    """Every source verger.yml asks for, plus the router, the host and deploys."""
    from verger.monitor.sources.business import BusinessSource
    from verger.monitor.sources.deploys import DeploySource
    from verger.monitor.sources.heartbeat import HeartbeatSource
    from verger.monitor.sources.host import HostSource
    from verger.monitor.sources.postgres import PostgresSource
    from verger.monitor.sources.probe import ProbeSource
    from verger.monitor.sources.redis import RedisSource
    from verger.monitor.sources.router import RouterSource
    from verger.monitor.sources.scrape import ScrapeSource

    monitor = config.monitor or SourcesSection()
    every = monitor.interval
    sources: list[Source] = [
        RouterSource(routers, every),
        DeploySource(state, list(config.environments), every),
    ]
    if monitor.host:

        def processes() -> dict[tuple[str, str], int]:
            return {
                (r.environment, r.slot or "?"): int(r.pid)
                for r in state.running_releases()
                if r.pid
            }

        mounts = sorted({"/", str(root)})
        sources.append(HostSource(every, mounts, processes))
    sources += [
        ScrapeSource(s.url, s.job, s.every or every, s.timeout) for s in monitor.scrape
    ]
    sources += [ProbeSource(p) for p in monitor.probes]
    if monitor.heartbeats:
        sources.append(HeartbeatSource(state, monitor.heartbeats, every))
    for name, business in monitor.business.items():
        url = config.databases[business.database]
        sources.append(BusinessSource(name, business.sql, url, business.every))
    if monitor.postgres is not None:
        url = config.databases[monitor.postgres.database]
        sources.append(
            PostgresSource(monitor.postgres.database, url, monitor.postgres.every)
        )
    if monitor.redis is not None:
        redis = monitor.redis
        sources.append(RedisSource(redis.url, redis.queues, redis.every))
    return sources


def build_monitor(
    config: Config,
    root: Path,
    routers: Mapping[str, Router],
    state: Store,
    sink: AlertSink | None = None,
) -> MonitorLoop:
    """The monitor loop for this config, its alert states kept in ``state``."""
    store = open_metrics(config, root)
    states: AlertStates = state
    engine = RuleEngine(rules_for(config), store, sink, states)
    sources = sources_for(config, root, routers, state)
    interval = (config.monitor or SourcesSection()).interval
    return MonitorLoop(sources, store, engine, interval)
