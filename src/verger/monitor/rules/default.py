"""The default rule set: the three tiers, SLO burn rates, targets down and no data.

Critical pages, high emails, medium opens a ticket. The burn-rate alerts
follow the multiwindow, multi-burn-rate recipe for an availability SLO: a
fast burn (2% of a 30-day budget in an hour: 14.4x over 1h and 5m) and a
slow burn (5% in six hours: 6x over 6h and 30m) page; a steady 1x burn
over three days (confirmed over 6h) opens a ticket. The short window of
each pair makes the alert stop soon after the errors do.
"""

from __future__ import annotations

from collections.abc import Sequence

from verger.monitor.rules.expr import selectors
from verger.monitor.rules.model import Rule

REQUESTS = "verger_requests_total"
BUCKETS = "verger_request_duration_seconds_bucket"
WINDOWS = ("5m", "30m", "1h", "6h", "3d")
# Fewer requests than this in a rule's window prove nothing about an error
# rate: one failed request out of two is not an outage.
FLOOR = 10


def error_ratio(window: str) -> str:
    """The share of requests answered 5xx over ``window``, per environment."""
    return (
        f'sum by (environment) (rate({REQUESTS}{{class="5xx"}}[{window}])) '
        f"/ sum by (environment) (rate({REQUESTS}[{window}]))"
    )


def traffic(window: str) -> str:
    """The number of requests over ``window``, per environment."""
    return f"sum by (environment) (increase({REQUESTS}[{window}]))"


def p95_latency(window: str) -> str:
    """The 95th percentile of request latency over ``window``, per environment."""
    return (
        "histogram_quantile(0.95, sum by (environment, le) "
        f"(rate({BUCKETS}[{window}])))"
    )


def _summary(text: str) -> dict[str, str]:
    return {"summary": text}


def tiers(live: Sequence[str] = ("production",)) -> list[Rule]:
    """The planning document's critical, high and medium rules.

    ``live`` names the environments users reach: only there does no
    traffic at all mean the API is down (a quiet staging is normal).
    """
    live_match = "|".join(live) or "production"
    selected = f'{REQUESTS}{{environment=~"{live_match}"}}'
    env = "{{ $labels.environment }}"
    return [
        # Only where there was traffic in the last day: a release not yet
        # serving anyone is not an outage.
        Rule(
            "api_down",
            f"sum by (environment) (increase({selected}[5m])) == 0 "
            f"and sum by (environment) (increase({selected}[1d])) > 0",
            "critical",
            unit="",
            annotations=_summary(f"No requests reached {env} for 5 minutes"),
        ),
        # Over one minute and with no hold, so that a release failing every
        # request pages on the first evaluation that sees it (within 15 s);
        # keep_firing_for stops a flapping one from paging again and again,
        # and the traffic floor stops a handful of requests from paging.
        Rule(
            "error_rate_critical",
            f"{error_ratio('1m')} > 0.05 and {traffic('1m')} >= {FLOOR}",
            "critical",
            keep_firing_for=120,
            unit="ratio",
            annotations=_summary(f"More than 5% of requests fail in {env}"),
        ),
        Rule(
            "connection_pool_exhausted",
            "verger_postgres_connections / verger_postgres_max_connections >= 0.95",
            "critical",
            for_=60,
            unit="ratio",
            annotations=_summary(
                "PostgreSQL {{ $labels.database }} has almost no connections left"
            ),
        ),
        Rule(
            "disk_almost_full",
            "verger_host_disk_free_ratio < 0.05",
            "critical",
            for_=300,
            unit="ratio",
            annotations=_summary("Less than 5% free on {{ $labels.mount }}"),
        ),
        Rule(
            "latency_critical",
            f"{p95_latency('5m')} > 5",
            "critical",
            for_=60,
            unit="seconds",
            annotations=_summary(f"p95 latency over 5s in {env}"),
        ),
        Rule(
            "cpu_high",
            "verger_host_cpu_ratio > 0.8",
            "high",
            for_=600,
            unit="ratio",
            annotations=_summary("CPU over 80% for 10 minutes"),
        ),
        Rule(
            "memory_high",
            "verger_host_memory_used_ratio > 0.85",
            "high",
            for_=600,
            unit="ratio",
            annotations=_summary("Memory over 85% for 10 minutes"),
        ),
        Rule(
            "error_rate_high",
            f"{error_ratio('5m')} > 0.01",
            "high",
            for_=300,
            keep_firing_for=300,
            unit="ratio",
            annotations=_summary(f"More than 1% of requests fail in {env}"),
        ),
        Rule(
            "latency_high",
            f"{p95_latency('5m')} > 1",
            "high",
            for_=300,
            keep_firing_for=300,
            unit="seconds",
            annotations=_summary(f"p95 latency over 1s in {env}"),
        ),
        Rule(
            "target_down",
            "up == 0",
            "high",
            for_=60,
            keep_firing_for=120,
            annotations=_summary(
                "{{ $labels.job }} {{ $labels.instance }} cannot be reached"
            ),
        ),
        Rule(
            "probe_failed",
            "verger_probe_success == 0",
            "critical",
            for_=60,
            keep_firing_for=60,
            annotations=_summary("Probe {{ $labels.probe }} fails"),
        ),
        Rule(
            "certificate_expiring",
            "verger_probe_tls_ok == 0",
            "medium",
            annotations=_summary(
                "The TLS certificate behind probe {{ $labels.probe }} expires soon"
            ),
        ),
        Rule(
            "heartbeat_missed",
            "verger_heartbeat_late == 1",
            "high",
            annotations=_summary("{{ $labels.heartbeat }} has not reported in on time"),
        ),
        Rule(
            "deploy_failed",
            "verger_last_deploy_failed == 1",
            "medium",
            annotations=_summary(f"The last deploy to {env} failed or rolled back"),
        ),
        Rule(
            "slow_query",
            "verger_postgres_slowest_query_seconds > 1",
            "medium",
            for_=300,
            unit="seconds",
            annotations=_summary(
                "A query on {{ $labels.database }} takes over 1s on average"
            ),
        ),
    ]


def burn_rates(availability: float = 0.999) -> list[Rule]:
    """Recording rules for the error ratio per window, and the burn-rate alerts."""
    budget = 1 - availability
    records = [
        Rule(f"verger:error_ratio:rate{w}", error_ratio(w), record=True)
        for w in WINDOWS
    ]
    env = "{{ $labels.environment }}"

    def burn(long: str, short: str, factor: float) -> str:
        limit = f"{factor * budget:.6g}"
        return (
            f"verger:error_ratio:rate{long} > {limit} "
            f"and verger:error_ratio:rate{short} > {limit} "
            f"and {traffic(short)} >= {FLOOR}"
        )

    target = f"{availability * 100:g}%"
    return [
        *records,
        Rule(
            "slo_burn_fast",
            burn("1h", "5m", 14.4),
            "critical",
            unit="ratio",
            annotations=_summary(f"{env} burns its {target} error budget 14x too fast"),
        ),
        Rule(
            "slo_burn_slow",
            burn("6h", "30m", 6),
            "critical",
            unit="ratio",
            annotations=_summary(f"{env} burns its {target} error budget 6x too fast"),
        ),
        Rule(
            "slo_budget_burn",
            burn("3d", "6h", 1),
            "medium",
            unit="ratio",
            annotations=_summary(f"{env} spends its {target} error budget too fast"),
        ),
    ]


def no_data(rules: Sequence[Rule]) -> list[Rule]:
    """One no-data rule per metric the alerting rules read (recorded ones aside).

    A series seen in the last hour but with no sample in the last five
    minutes raises ``no_data`` for that series, so that a metric that
    disappears never makes its rules pass silently.
    """
    names: list[str] = []
    for rule in rules:
        if rule.record:
            continue
        for selector in selectors(rule.tree):
            name = selector.name
            if name and ":" not in name and name not in names:
                names.append(name)
    return [
        Rule(
            "no_data",
            f"last_over_time({name}[1h]) unless {name}",
            "high",
            labels={"metric": name},
            annotations=_summary(f"{name} has had no sample for 5 minutes"),
        )
        for name in names
    ]


def default_rules(
    live: Sequence[str] = ("production",), availability: float = 0.999
) -> list[Rule]:
    """Recording rules first, then every alerting rule, then their no-data rules."""
    rules = [*burn_rates(availability), *tiers(live)]
    rules.sort(key=lambda r: not r.record)
    return [*rules, *no_data(rules)]
