"""Label matchers: ``name=value``, ``name!=value``, ``name=~regex``, ``name!~regex``.

Silences, routes and inhibition rules all select alerts by these. A label
an alert does not have reads as the empty string, as in Alertmanager, so
``team!=db`` matches an alert with no team label.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from verger.errors import VergerError

_FORM = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$")
OPERATORS = ("=", "!=", "=~", "!~")


class MatcherError(VergerError):
    """A matcher is not written as name=value, name!=value, name=~re or name!~re."""

    exit_code = 2


@dataclass(frozen=True)
class Matcher:
    """One condition on one label."""

    name: str
    op: str
    value: str
    _pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.op not in OPERATORS:
            raise MatcherError(
                f"unknown matcher operator {self.op!r}",
                "write name=value, name!=value, name=~regex or name!~regex",
            )
        if self.op in ("=~", "!~"):
            try:
                pattern = re.compile(self.value)
            except re.error as exc:
                raise MatcherError(
                    f"{self.name}{self.op}{self.value} is not a valid regex: {exc}",
                    "fix the regular expression (it must match the whole value)",
                ) from None
            object.__setattr__(self, "_pattern", pattern)

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.name, "")
        if self._pattern is not None:
            found = self._pattern.fullmatch(value) is not None
            return found if self.op == "=~" else not found
        return (value == self.value) if self.op == "=" else (value != self.value)

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value}"


def parse_matcher(text: str) -> Matcher:
    """A matcher from its written form, such as ``severity=critical``."""
    found = _FORM.match(text)
    if found is None:
        raise MatcherError(
            f"{text!r} is not a matcher",
            "write name=value, name!=value, name=~regex or name!~regex",
        )
    name, op, value = found.groups()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return Matcher(name, op, value)


def equal_matchers(labels: Mapping[str, str]) -> tuple[Matcher, ...]:
    """Matchers requiring each of ``labels`` exactly, sorted by name."""
    return tuple(Matcher(name, "=", value) for name, value in sorted(labels.items()))


def regex_matchers(labels: Mapping[str, str]) -> tuple[Matcher, ...]:
    return tuple(Matcher(name, "=~", value) for name, value in sorted(labels.items()))


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    return all(matcher.matches(labels) for matcher in matchers)
