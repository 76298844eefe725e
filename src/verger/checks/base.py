"""What a check is, the registry of checks, and running them all.

A check is a named test of the config or the machine with a status, a
message and a hint. Each check is a small function registered here; a
subsystem adds its own with ``@register("name")``. Running the checks never
raises: a check that crashes is reported as failed with the reason.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from verger.config.loader import Loaded, find_config, load_config
from verger.errors import ConfigError

log = logging.getLogger("verger.checks")

Status = Literal["ok", "warn", "fail", "skip"]
Severity = Literal["critical", "warning", "info"]

COLUMNS = ("check", "status", "message", "hint")


@dataclass(frozen=True)
class Check:
    """One check's outcome; ``severity`` says how much a failure matters."""

    name: str
    status: Status
    message: str
    hint: str = ""
    severity: Severity = "critical"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Context:
    """What the checks look at: the config path, loaded once and shared."""

    config_path: Path | None
    error: ConfigError | None = field(default=None, init=False)

    @cached_property
    def loaded(self) -> Loaded | None:
        """The validated config, or None (with ``error`` set) when it is unusable."""
        try:
            return load_config(self.config_path)
        except ConfigError as exc:
            self.error = exc
            return None

    @cached_property
    def root(self) -> Path:
        """The app's folder: the config's folder, whether or not the config is valid."""
        if self.loaded is not None:
            return self.loaded.root
        path = (self.config_path or Path.cwd()).resolve()
        return path if path.is_dir() else path.parent

    @property
    def state_dir(self) -> Path:
        return self.root / ".verger"

    def located(self) -> Path:
        """The config file's path, found as the CLI would find it."""
        return find_config(self.config_path)


CheckFn = Callable[[Context], Iterable[Check]]

_REGISTRY: list[tuple[int, str, CheckFn]] = []


def register(name: str, order: int = 100) -> Callable[[CheckFn], CheckFn]:
    """Add a check function; lower ``order`` runs first, ``name`` labels a crash."""

    def add(function: CheckFn) -> CheckFn:
        _REGISTRY.append((order, name, function))
        _REGISTRY.sort(key=lambda entry: entry[0])
        return function

    return add


def registered() -> list[str]:
    """The names of the registered checks, in the order they run."""
    return [name for _, name, _ in _REGISTRY]


def run_checks(config_path: Path | None) -> list[Check]:
    """Run every registered check against the config at ``config_path``.

    ``None`` means verger.yml in the current folder. Every check runs even
    when an earlier one failed; none of them raises::

        checks = run_checks(Path("verger.yml"))
        exit_code = worst(checks)
    """
    context = Context(config_path)
    results: list[Check] = []
    for _, name, function in _REGISTRY:
        results.extend(_run_one(name, function, context))
    return results


def _run_one(name: str, function: CheckFn, context: Context) -> list[Check]:
    try:
        return list(function(context))
    except Exception as exc:
        # A broken check must not hide the others; report it as a failure.
        log.exception("check %s crashed", name)
        return [
            Check(
                name,
                "fail",
                f"the check itself failed: {type(exc).__name__}: {exc}",
                "run with --debug and report the traceback",
            )
        ]


def worst(checks: Sequence[Check]) -> int:
    """The exit code for a list of checks: 1 if any failed, else 0."""
    return 1 if any(check.status == "fail" for check in checks) else 0


def checks_to_rows(checks: Sequence[Check]) -> list[tuple[str, str, str, str]]:
    """Rows for an output table with ``COLUMNS``."""
    return [(c.name, c.status, c.message, c.hint) for c in checks]


def checks_to_data(checks: Sequence[Check]) -> list[dict[str, Any]]:
    """The checks as JSON-ready objects, for ``--json`` and the web API."""
    return [check.to_dict() for check in checks]


def nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists."""
    current = path
    while not os.path.lexists(current) and current != current.parent:
        current = current.parent
    return current
