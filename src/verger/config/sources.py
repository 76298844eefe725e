"""The monitor section's sources and rules: what is measured, how often, how long kept."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from verger.config.sections import Section
from verger.config.types import Duration, Listen, Rate

_HTTP_PROBE = re.compile(r"^(GET|HEAD|POST)\s+(https?://\S+)$")
_HOST_PORT = re.compile(r"^[^\s:]+:\d{1,5}$")
METRIC_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class Scrape(Section):
    """An application's Prometheus ``/metrics`` page, read every ``every``."""

    url: str
    every: Duration | None = None
    job: str = "app"
    timeout: Duration = 5.0

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value


class Probe(Section):
    """An HTTP or TCP check from outside the app, with the conditions it must meet."""

    name: str
    http: str | None = None
    tcp: str | None = None
    every: Duration = 15.0
    timeout: Duration = 5.0
    status: int | None = Field(None, ge=100, le=599)
    contains: str | None = None
    max_latency: Duration | None = None
    tls_days: int | None = Field(None, ge=0, le=3650)
    ca_file: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not METRIC_NAME.match(value.replace("-", "_")):
            raise ValueError(f"expected a short lowercase name, got {value!r}")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Probe:
        if (self.http is None) == (self.tcp is None):
            raise ValueError(f"probe {self.name}: give exactly one of http: or tcp:")
        if self.http is not None and not _HTTP_PROBE.match(self.http):
            raise ValueError(
                f"probe {self.name}: expected http: METHOD URL such as "
                f"'GET https://api.example.com/health', got {self.http!r}"
            )
        if self.tcp is not None:
            if not _HOST_PORT.match(self.tcp):
                raise ValueError(
                    f"probe {self.name}: expected tcp: HOST:PORT, got {self.tcp!r}"
                )
            if self.status is not None or self.contains is not None:
                raise ValueError(
                    f"probe {self.name}: status and contains apply to http: probes"
                )
        return self

    @property
    def method_url(self) -> tuple[str, str]:
        method, _, url = (self.http or "GET ").partition(" ")
        return method, url.strip()


class Heartbeat(Section):
    """A cron job that calls the agent's heartbeat URL at least every ``every``."""

    every: Duration
    grace: Duration = 60.0


class Business(Section):
    """A SQL query whose one number becomes a metric, run every ``every``."""

    sql: str
    every: Duration = 60.0
    database: str = "production"

    @field_validator("sql")
    @classmethod
    def _sql(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is empty; expected a query such as 'select count(*) ...'")
        return value


class Postgres(Section):
    """Which database under ``databases:`` to watch: connections, cache, slow queries."""

    database: str = "production"
    every: Duration = 30.0


class Redis(Section):
    """A Redis to watch: memory, hit rate and the length of queue keys."""

    url: str = "redis://127.0.0.1:6379/0"
    queues: list[str] = Field(default_factory=list)
    every: Duration = 30.0

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith("redis://"):
            raise ValueError(f"expected a redis://HOST:PORT/DB URL, got {value!r}")
        return value


class RuleConfig(Section):
    """One alerting rule written in verger.yml."""

    model_config = Section.model_config | {"populate_by_name": True}

    name: str
    expr: str
    for_: Duration = Field(0.0, alias="for")
    keep_firing_for: Duration = 0.0
    severity: Literal["critical", "high", "medium"] = "high"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    unit: Literal["ratio", "seconds", "bytes", ""] = ""

    @model_validator(mode="after")
    def _readable(self) -> RuleConfig:
        self.rule()
        return self

    def rule(self) -> Any:
        """The rule this entry describes (``verger.monitor.rules.Rule``)."""
        from verger.monitor.rules import ExprError, Rule

        try:
            return Rule(
                self.name,
                self.expr,
                self.severity,
                self.for_,
                self.keep_firing_for,
                self.labels,
                self.annotations,
                unit=self.unit,
            )
        except ExprError as exc:
            raise ValueError(f"rule {self.name}: {exc}") from None


class Slo(Section):
    availability: Rate = 0.999


class SourcesSection(Section):
    """monitor: keys for scrapes, probes, heartbeats, business queries and rules."""

    interval: Duration = 10.0
    retention: Duration = 30 * 86400.0
    listen: Listen | None = None
    store: str = ".verger/metrics.db"
    scrape: list[Scrape] = Field(default_factory=list)
    probes: list[Probe] = Field(default_factory=list)
    heartbeats: dict[str, Heartbeat] = Field(default_factory=dict)
    business: dict[str, Business] = Field(default_factory=dict)
    postgres: Postgres | None = None
    redis: Redis | None = None
    host: bool = True
    rules: list[Literal["default"] | RuleConfig] = Field(
        default_factory=lambda: list[Literal["default"] | RuleConfig](["default"])
    )
    slo: Slo = Field(default_factory=Slo)

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: float) -> float:
        if value < 1:
            raise ValueError("expected at least 1s, such as 10s")
        return value

    @field_validator("scrape", mode="before")
    @classmethod
    def _plain_urls(cls, value: object) -> object:
        if isinstance(value, list):
            return [{"url": item} if isinstance(item, str) else item for item in value]
        return value

    @field_validator("business", mode="before")
    @classmethod
    def _plain_sql(cls, value: object) -> object:
        if isinstance(value, dict):
            return {
                k: {"sql": v} if isinstance(v, str) else v for k, v in value.items()
            }
        return value

    @field_validator("business", "heartbeats")
    @classmethod
    def _metric_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not METRIC_NAME.match(name):
                raise ValueError(
                    f"{name!r} must be lowercase letters, digits and _ (it names a metric)"
                )
        return value

    @field_validator("rules", mode="before")
    @classmethod
    def _default_word(cls, value: object) -> object:
        return [value] if value == "default" else value

    @model_validator(mode="after")
    def _unique_probes(self) -> SourcesSection:
        names = [p.name for p in self.probes]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"probe names must be unique: {', '.join(twice)}")
        return self
