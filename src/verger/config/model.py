"""The typed shape of verger.yml.

Every section is a Pydantic model that forbids unknown keys, so a typo is an
error that names the nearest valid key rather than a setting silently ignored.
Contradictions between sections are refused when the whole config is built.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from typing import Literal

from pydantic import Field, field_validator, model_validator

from verger.config.dashboard import Dashboard
from verger.config.monitor import Monitor
from verger.config.sections import Section
from verger.config.staging import Staging
from verger.config.types import Duration, Listen, Rate, format_duration

NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")


class Contradictions(ValueError):
    """Several problems between sections, each message naming its key first."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class Health(Section):
    path: str = "/health"
    interval: Duration = 1.0
    timeout: Duration = 2.0
    healthy_after: int = Field(default=3, ge=1, le=100)
    start_timeout: Duration = 60.0

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("expected a path starting with /, such as /health")
        return value

    @model_validator(mode="after")
    def _timings(self) -> Health:
        if self.interval <= 0:
            raise ValueError("health.interval must be more than 0s")
        if self.start_timeout < self.interval * self.healthy_after:
            raise ValueError(
                f"health.start_timeout is {self.start_timeout:g}s, shorter than "
                f"healthy_after x interval ({self.healthy_after} x "
                f"{self.interval:g}s), so no release could ever become healthy"
            )
        return self


HTTP_CHECK = re.compile(r"^(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS)\s+(/\S*)$")


class Smoke(Section):
    """One smoke test: an HTTP request (``http: GET /path``) or a command (``run``)."""

    name: str | None = None
    http: str | None = None
    run: str | None = None
    expect: int | None = Field(None, ge=100, le=599)
    body: str | None = None
    contains: str | None = None
    timeout: Duration = 10.0

    @field_validator("run")
    @classmethod
    def _command(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("is empty; expected a command such as ./smoke.sh")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Smoke:
        if (self.http is None) == (self.run is None):
            raise ValueError("a smoke test has exactly one of http: or run:")
        if self.http is not None and not HTTP_CHECK.match(self.http):
            raise ValueError(
                f"expected http: METHOD /path such as GET /health, got {self.http!r}"
            )
        if self.run is not None and (self.expect or self.contains or self.body):
            raise ValueError(
                "expect, body and contains apply to http: smoke tests only"
            )
        return self

    @property
    def label(self) -> str:
        return self.name or self.http or self.run or "smoke"


class Watch(Section):
    duration: Duration = 120.0
    max_error_rate: Rate = 0.01
    max_p95: Duration = 1.0
    min_requests: int = Field(default=1, ge=1)
    interval: Duration = 1.0

    @field_validator("duration")
    @classmethod
    def _long_enough(cls, value: float) -> float:
        if value < 1.0:
            raise ValueError(
                f"expected at least 1s, got {format_duration(value)}: a shorter "
                "watch window cannot judge a release"
            )
        return value

    @field_validator("interval")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("expected more than 0s, such as 1s")
        return value


class Environment(Section):
    listen: Listen
    env: dict[str, str] = Field(default_factory=dict)
    router: Literal["builtin", "haproxy"] = "builtin"
    requires: str | None = None
    approval: Literal["auto", "manual"] = "auto"
    drain_timeout: Duration = 30.0

    @field_validator("env", mode="before")
    @classmethod
    def _env_strings(cls, value: object) -> object:
        if isinstance(value, dict):
            return {str(k): "" if v is None else str(v) for k, v in value.items()}
        return value


class Webhook(Section):
    url: str
    events: (
        list[
            Literal[
                "started",
                "succeeded",
                "failed",
                "rolled_back",
                "backup_failed",
                "backup_stale",
                "verify_failed",
                "archiving_failed",
                "drill_missed",
                "refresh_succeeded",
                "refresh_failed",
            ]
        ]
        | None
    ) = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value


class Notify(Section):
    webhooks: list[Webhook] = Field(default_factory=list)

    @field_validator("webhooks", mode="before")
    @classmethod
    def _plain_urls(cls, value: object) -> object:
        if isinstance(value, list):
            return [{"url": item} if isinstance(item, str) else item for item in value]
        return value


class S3(Section):
    """An S3-compatible bucket: AWS, MinIO, Ceph, or any server that speaks S3."""

    endpoint: str
    bucket: str
    region: str = "us-east-1"
    prefix: str = ""
    path_style: bool = False
    ca_file: str | None = None
    key: str | None = None
    secret: str | None = None

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        host = value.removeprefix("https://")
        if "://" in host or not host:
            raise ValueError(
                f"expected a host[:port] reached over HTTPS, such as "
                f"s3.us-east-1.amazonaws.com, got {value!r}"
            )
        return host.rstrip("/")


class Repository(Section):
    """Where backups and WAL are kept: a local folder or an S3 bucket."""

    path: str | None = None
    s3: S3 | None = None
    cold_after: Duration | None = None
    cold_path: str | None = None

    @field_validator("path", "cold_path")
    @classmethod
    def _folder(cls, value: str | None) -> str | None:
        # An empty path would resolve to the config's own folder, and backups
        # would be written among the app's files.
        if value is not None and not value.strip():
            raise ValueError(
                "expected a folder, such as .verger/backups or /srv/backups, "
                "got an empty path"
            )
        return value

    @model_validator(mode="after")
    def _one_place(self) -> Repository:
        if (self.path is None) == (self.s3 is None):
            raise ValueError("a repository has exactly one of path: or s3:")
        if self.cold_path is not None and self.s3 is not None:
            raise ValueError(
                "cold_path is for a local repository; an S3 repository's cold "
                "tier is a lifecycle rule set by cold_after"
            )
        return self


def check_cron(value: str) -> str:
    """A five-field cron expression that comes round at least once, or ValueError."""
    from croniter import CroniterError, croniter

    expected = f"expected a cron expression such as '0 */6 * * *', got {value!r}"
    if not croniter.is_valid(value) or (
        not value.startswith("@") and len(value.split()) != 5
    ):
        raise ValueError(expected)
    try:
        croniter(value).get_next(float)
    except (CroniterError, ValueError):
        raise ValueError(f"{value!r} never comes round (no such date)") from None
    return value


class Schedule(Section):
    """Cron expressions (UTC) for the work the agent does on its own."""

    full: str | None = "0 */6 * * *"
    diff: str | None = None
    incr: str | None = None
    verify: bool = True
    drill: str | None = "0 3 * * 0"
    watch: str | None = "* * * * *"

    @field_validator("full", "diff", "incr", "drill", "watch")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else check_cron(value)


class Retention(Section):
    """How many full backups to keep, and how far back a restore must reach."""

    full: int = Field(default=28, ge=1, le=10000)
    window: Duration = 30 * 86400.0


class Targets(Section):
    rpo: Duration = 3600.0
    rto: Duration = 4 * 3600.0


class Backup(Section):
    engine: Literal["auto", "pgbackrest", "pg_dump"] = "auto"
    database: str = "production"
    repository: Repository = Field(
        default_factory=lambda: Repository(path=".verger/backups")
    )
    passphrase: str | None = None
    run_as: str | None = None
    data: str | None = None
    stanza: str | None = None
    archive_timeout: Duration = 60.0
    scratch: str = ".verger/scratch"
    schedule: Schedule = Field(default_factory=Schedule)
    retention: Retention = Field(default_factory=Retention)
    targets: Targets = Field(default_factory=Targets)


def _is_dsn(value: str) -> bool:
    return value.startswith(("postgresql://", "postgres://"))


class Config(Section):
    app: str
    state: str = ".verger/state.db"
    build: str | None = None
    start: str
    health: Health = Field(default_factory=Health)
    smoke: list[Smoke] = Field(default_factory=list)
    watch: Watch = Field(default_factory=Watch)
    keep_previous: Duration = 1800.0
    environments: dict[str, Environment]
    notify: Notify = Field(default_factory=Notify)
    databases: dict[str, str] = Field(default_factory=dict)
    backup: Backup | None = None
    monitor: Monitor | None = None
    staging: Staging | None = None
    dashboard: Dashboard | None = None

    @field_validator("databases")
    @classmethod
    def _database_urls(cls, value: dict[str, str]) -> dict[str, str]:
        for name, url in value.items():
            if not _is_dsn(url):
                raise ValueError(
                    f"databases.{name} must be a postgresql:// URL, got {url!r}"
                )
        return value

    @field_validator("app")
    @classmethod
    def _app_name(cls, value: str) -> str:
        if not NAME.match(value):
            raise ValueError(
                "expected a short lowercase name (letters, digits, - and _), "
                f"got {value!r}"
            )
        return value

    @field_validator("environments")
    @classmethod
    def _environment_names(
        cls, value: dict[str, Environment]
    ) -> dict[str, Environment]:
        if not value:
            raise ValueError("at least one environment is needed, such as staging:")
        for name in value:
            if not NAME.match(name):
                raise ValueError(
                    f"environment name {name!r} must be short and lowercase"
                )
        return value

    @model_validator(mode="after")
    def _contradictions(self) -> Config:
        found = [
            *self._requires_problems(),
            *self._shared_ports(),
            *self._cycles(),
            *self._backup_problems(),
            *self._staging_problems(),
            *self._monitor_problems(),
        ]
        if found:
            raise Contradictions(found)
        return self

    def _requires_problems(self) -> Iterator[str]:
        for name, environment in self.environments.items():
            requires = environment.requires
            if requires == name:
                yield f"environments.{name}.requires names itself"
            elif requires is not None and requires not in self.environments:
                yield self._unknown_requires(name, requires)

    def _shared_ports(self) -> Iterator[str]:
        listens: dict[str, str] = {}
        for name, environment in self.environments.items():
            port = environment.listen.rpartition(":")[2]
            if port in listens:
                yield (
                    f"environments.{name}.listen uses port {port}, already used "
                    f"by environments.{listens[port]}"
                )
            else:
                listens[port] = name
        if self.dashboard is not None:
            yield from self._dashboard_port(listens)

    def _dashboard_port(self, listens: dict[str, str]) -> Iterator[str]:
        assert self.dashboard is not None
        port = self.dashboard.listen.rpartition(":")[2]
        if port in listens:
            yield (
                f"dashboard.listen uses port {port}, already used by "
                f"environments.{listens[port]}"
            )
        monitor = self.monitor.listen if self.monitor is not None else None
        if monitor is not None and monitor.rpartition(":")[2] == port:
            yield f"dashboard.listen uses port {port}, already used by monitor.listen"

    def _backup_problems(self) -> Iterator[str]:
        if self.backup is None or self.backup.database in self.databases:
            return
        known = ", ".join(sorted(self.databases)) or "none yet"
        yield (
            f"backup.database names {self.backup.database!r}, which is not under "
            f"databases: (known: {known}); add it there as a postgresql:// URL"
        )

    def _staging_problems(self) -> Iterator[str]:
        if self.staging is None:
            return
        known = ", ".join(sorted(self.databases)) or "none yet"
        for key in ("source", "target"):
            name = getattr(self.staging, key)
            if name not in self.databases:
                yield (
                    f"staging.{key} names {name!r}, which is not under databases: "
                    f"(known: {known}); add it there as a postgresql:// URL"
                )
        environment = self.staging.environment
        if environment is not None and environment not in self.environments:
            yield (
                f"staging.environment names {environment!r}, which is not an "
                f"environment (known: {', '.join(sorted(self.environments))})"
            )

    def _monitor_problems(self) -> Iterator[str]:
        if self.monitor is None:
            return
        named = [
            (f"monitor.business.{k}", b.database)
            for k, b in self.monitor.business.items()
        ]
        if self.monitor.postgres is not None:
            named.append(("monitor.postgres", self.monitor.postgres.database))
        known = ", ".join(sorted(self.databases)) or "none yet"
        for key, database in named:
            if database not in self.databases:
                yield (
                    f"{key} reads database {database!r}, which is not under "
                    f"databases: (known: {known}); add it there as a postgresql:// URL"
                )

    def _unknown_requires(self, name: str, requires: str) -> str:
        known = sorted(self.environments)
        near = difflib.get_close_matches(requires, known, n=1, cutoff=0.6)
        suggestion = f"; did you mean {near[0]!r}?" if near else ""
        return (
            f"environments.{name}.requires names {requires!r}, which is not an "
            f"environment (known: {', '.join(known)}){suggestion}"
        )

    def _cycles(self) -> Iterator[str]:
        """Each cycle of two or more environments once, at its first member's key."""
        reported: set[frozenset[str]] = set()
        for name in self.environments:
            chain = [name]
            current = self.environments[name].requires
            while current in self.environments and current not in chain:
                chain.append(current)
                current = self.environments[current].requires
            members = frozenset(chain)
            if current != name or len(chain) < 2 or members in reported:
                continue
            reported.add(members)
            path = " -> ".join([*chain, name])
            yield f"environments.{name}.requires forms a cycle: {path}"

    def order(self) -> list[str]:
        """Environment names in release order: each after the one it requires."""
        done: list[str] = []

        def visit(name: str) -> None:
            if name in done:
                return
            requires = self.environments[name].requires
            if requires:
                visit(requires)
            done.append(name)

        for name in self.environments:
            visit(name)
        return done
