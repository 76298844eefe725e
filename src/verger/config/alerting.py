"""The monitor section's alerting: receivers, routes, inhibition and maintenance."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import time as clock_time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from verger.config.sections import Section
from verger.config.types import Duration

RECEIVER_KINDS = ("webhook", "ticket", "pagerduty", "smtp")
TIERS = {"critical": "page", "high": "email", "medium": "ticket"}
"""The default route: each severity to the receiver of that name, when there is one."""

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOST_PORT = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")
_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
    return value


class PagerDuty(Section):
    """PagerDuty Events v2: a routing key, and the endpoint (for a proxy or a test)."""

    routing_key: str = Field(repr=False)
    url: str = "https://events.pagerduty.com/v2/enqueue"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)

    @field_validator("routing_key")
    @classmethod
    def _key(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is empty; set it, for example to ${PAGERDUTY_KEY}")
        return value


class Receiver(Section):
    """Where a group's notifications go: exactly one of webhook, ticket, pagerduty, smtp."""

    webhook: str | None = None
    ticket: str | None = None
    pagerduty: PagerDuty | None = None
    smtp: str | None = None
    to: list[str] = Field(default_factory=list)
    sender: str | None = Field(default=None, alias="from")
    username: str | None = None
    password: str | None = Field(default=None, repr=False)
    starttls: bool | None = None
    tls: bool | None = None
    ca_file: str | None = None
    send_resolved: bool = True
    timeout: Duration = 10.0

    @field_validator("webhook", "ticket")
    @classmethod
    def _urls(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value)

    @field_validator("smtp")
    @classmethod
    def _smtp(cls, value: str | None) -> str | None:
        if value is not None and not _HOST_PORT.match(value):
            raise ValueError(
                f"expected HOST:PORT such as smtp.example.com:587, got {value!r}"
            )
        return value

    @field_validator("to", mode="before")
    @classmethod
    def _addresses(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Receiver:
        kinds = [kind for kind in RECEIVER_KINDS if getattr(self, kind) is not None]
        if len(kinds) != 1:
            raise ValueError(
                "a receiver has exactly one of webhook:, ticket:, pagerduty: or smtp:"
            )
        email_keys = (self.to, self.sender, self.username, self.password)
        tls_keys = (self.starttls, self.tls, self.ca_file)
        if self.smtp is None and (
            any(email_keys) or any(k is not None for k in tls_keys)
        ):
            raise ValueError(
                "to, from, username, password, starttls, tls and ca_file apply to "
                "smtp: only"
            )
        if self.smtp is not None and not self.to:
            raise ValueError("an smtp: receiver needs to: (one address or a list)")
        if self.tls and self.starttls:
            raise ValueError(
                "tls: true speaks TLS from the first byte (port 465) and starttls: "
                "true upgrades a plain connection (port 587); give one of them"
            )
        return self

    @property
    def implicit_tls(self) -> bool:
        """TLS from the first byte: asked for with ``tls:``, else on port 465."""
        if self.tls is not None:
            return self.tls
        return self.smtp is not None and self.smtp.endswith(":465")

    @property
    def kind(self) -> str:
        return next(kind for kind in RECEIVER_KINDS if getattr(self, kind) is not None)


class Route(Section):
    """A node of the route tree: which alerts it takes, where and how they are grouped."""

    receiver: str | None = None
    match: dict[str, str] = Field(default_factory=dict)
    match_re: dict[str, str] = Field(default_factory=dict)
    group_by: list[str] | None = None
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None
    keep_going: bool = Field(default=False, alias="continue")
    routes: list[Route] = Field(default_factory=list)

    @field_validator("match_re")
    @classmethod
    def _patterns(cls, value: dict[str, str]) -> dict[str, str]:
        for name, pattern in value.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"match_re.{name} is not a regex: {exc}") from None
        return value

    @field_validator("match", "match_re", mode="before")
    @classmethod
    def _strings(cls, value: object) -> object:
        if isinstance(value, dict):
            return {str(k): str(v) for k, v in value.items()}
        return value


class Inhibit(Section):
    """While an alert matching ``source`` fires, alerts matching ``target`` are held."""

    source: dict[str, str]
    target: dict[str, str]
    equal: list[str] = Field(default_factory=list)

    @field_validator("source", "target", mode="before")
    @classmethod
    def _strings(cls, value: object) -> object:
        if isinstance(value, dict):
            return {str(k): str(v) for k, v in value.items()}
        return value

    @field_validator("source", "target")
    @classmethod
    def _not_empty(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("needs at least one label, such as {alertname: api_down}")
        return value


class Weekly(Section):
    """Days of the week and a local start time: ``{days: [sat, sun], start: "22:00"}``."""

    days: list[str] = Field(default_factory=lambda: list(DAYS))
    start: str

    @field_validator("days", mode="before")
    @classmethod
    def _days(cls, value: object) -> object:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            days = [str(day).strip().lower()[:3] for day in value]
            wrong = [day for day in days if day not in DAYS]
            if wrong:
                raise ValueError(
                    f"unknown day {wrong[0]!r}; expected some of {', '.join(DAYS)}"
                )
            return days
        return value

    @field_validator("start", mode="before")
    @classmethod
    def _start(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            # YAML 1.1 reads an unquoted 22:00 as the sexagesimal number 1320.
            value = f"{value // 60:02d}:{value % 60:02d}"
        if not isinstance(value, str):
            return value
        try:
            clock_time.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(
                f"expected a time HH:MM such as 22:00, got {value!r}"
            ) from None
        return value.strip()


class Maintenance(Section):
    """A recurring window, in a named time zone, during which matching alerts are muted."""

    name: str
    timezone: str = "UTC"
    cron: str | None = None
    weekly: Weekly | None = None
    duration: Duration
    match: dict[str, str] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}; expected an IANA name such as "
                "Europe/Paris or America/Chicago"
            ) from None
        return value

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        from croniter import croniter

        if value is not None and not croniter.is_valid(value):
            raise ValueError(
                f"expected a cron expression such as '0 2 * * 0', got {value!r}"
            )
        return value

    @field_validator("match", mode="before")
    @classmethod
    def _strings(cls, value: object) -> object:
        if isinstance(value, dict):
            return {str(k): str(v) for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _one_schedule(self) -> Maintenance:
        if (self.cron is None) == (self.weekly is None):
            raise ValueError("a maintenance window has exactly one of cron: or weekly:")
        if self.duration <= 0:
            raise ValueError("a maintenance window's duration must be more than 0s")
        return self


class AlertingSection(Section):
    """monitor: keys for where alerts go and when they are held back."""

    receivers: dict[str, Receiver] = Field(default_factory=dict)
    route: Route | None = None
    inhibit: list[Inhibit] = Field(default_factory=list)
    maintenance: list[Maintenance] = Field(default_factory=list)

    @field_validator("receivers")
    @classmethod
    def _names(cls, value: dict[str, Receiver]) -> dict[str, Receiver]:
        for name in value:
            if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", name):
                raise ValueError(
                    f"receiver name {name!r} must be letters, digits, _ . -"
                )
        return value

    @field_validator("inhibit")
    @classmethod
    def _equal_labels(cls, value: list[Inhibit]) -> list[Inhibit]:
        for rule in value:
            wrong = [label for label in rule.equal if not _LABEL.match(label)]
            if wrong:
                raise ValueError(f"inhibit equal: {wrong[0]!r} is not a label name")
        return value

    @model_validator(mode="after")
    def _known_receivers(self) -> AlertingSection:
        if self.route is None:
            return self
        for where, name in _named_receivers(self.route, "monitor.route"):
            if name not in self.receivers:
                known = ", ".join(sorted(self.receivers)) or "none yet"
                raise ValueError(
                    f"{where}.receiver names {name!r}, which is not under "
                    f"monitor.receivers (known: {known})"
                )
        return self


def _named_receivers(route: Route, where: str) -> Iterator[tuple[str, str]]:
    """Each receiver a route tree names, with the key path that names it."""
    if route.receiver is not None:
        yield where, route.receiver
    for index, child in enumerate(route.routes):
        yield from _named_receivers(child, f"{where}.routes.{index}")
