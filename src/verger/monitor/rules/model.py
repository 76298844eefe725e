"""A rule: an expression, how long it must hold, and what its alerts carry."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from verger.config.types import format_duration
from verger.monitor.alert import SEVERITIES
from verger.monitor.rules.expr import COMPARISONS, Binary, Node, Number, parse

NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
RECORD_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
UNITS = ("ratio", "seconds", "bytes", "")


@dataclass(frozen=True)
class Rule:
    """An alerting rule, or a recording rule when ``record`` is set.

    An alerting rule's alerts are pending while ``expr`` holds for less than
    ``for_``, firing after, and stay firing for ``keep_firing_for`` after it
    stops holding, so that a flapping target does not flip every evaluation.
    ``unit`` says how to print the value in decision sentences.
    """

    name: str
    expr: str
    severity: str = "high"
    for_: float = 0.0
    keep_firing_for: float = 0.0
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    record: bool = False
    unit: str = ""

    def __post_init__(self) -> None:
        pattern = RECORD_NAME if self.record else NAME
        if not pattern.match(self.name):
            raise ValueError(
                f"rule name {self.name!r} must be letters, digits and _ "
                "(and : for a recording rule)"
            )
        if not self.record and self.severity not in SEVERITIES:
            raise ValueError(
                f"rule {self.name}: severity must be one of {', '.join(SEVERITIES)}, "
                f"got {self.severity!r}"
            )
        if self.unit not in UNITS:
            raise ValueError(
                f"rule {self.name}: unit must be one of ratio, seconds, bytes"
            )
        object.__setattr__(self, "tree", parse(self.expr))

    tree: Node = field(init=False, repr=False, compare=False)

    @property
    def key(self) -> str:
        """The rule's identity among rules of the same name: name and fixed labels."""
        if not self.labels:
            return self.name
        pairs = ",".join(f'{k}="{v}"' for k, v in sorted(self.labels.items()))
        return f"{self.name}{{{pairs}}}"

    @property
    def threshold(self) -> tuple[str, float] | None:
        """The comparison at the top of the expression, such as ``('>', 0.05)``."""
        node = self.tree
        while isinstance(node, Binary) and node.op in ("and", "unless"):
            node = node.left
        if (
            isinstance(node, Binary)
            and node.op in COMPARISONS
            and isinstance(node.right, Number)
        ):
            return node.op, node.right.value
        return None

    def show(self, value: float | None) -> str:
        """A value as the decision sentences print it: ``7.9%``, ``1.2s``, ``42``."""
        if value is None:
            return "no value"
        if self.unit == "ratio":
            return f"{value * 100:.3g}%"
        if self.unit == "seconds":
            return f"{value * 1000:.0f}ms" if abs(value) < 1 else f"{value:.3g}s"
        if self.unit == "bytes":
            return f"{value / 1e6:.1f} MB"
        return f"{value:.4g}"

    def describe(self) -> dict[str, object]:
        """The rule as data, for ``verger monitor rules --json`` and the API."""
        return {
            "name": self.name,
            "expr": self.expr,
            "record": self.record,
            "severity": None if self.record else self.severity,
            "for": format_duration(self.for_),
            "keep_firing_for": format_duration(self.keep_firing_for),
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
        }
