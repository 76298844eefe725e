"""Rules: expressions, their evaluation, the default set and the alert states."""

from verger.monitor.rules.default import (
    REQUESTS,
    burn_rates,
    default_rules,
    error_ratio,
    no_data,
    p95_latency,
    tiers,
)
from verger.monitor.rules.engine import RuleEngine
from verger.monitor.rules.evaluate import Evaluator, Sample
from verger.monitor.rules.expr import ExprError, parse, selectors
from verger.monitor.rules.model import Rule

__all__ = [
    "REQUESTS",
    "Evaluator",
    "ExprError",
    "Rule",
    "RuleEngine",
    "Sample",
    "burn_rates",
    "default_rules",
    "error_ratio",
    "no_data",
    "p95_latency",
    "parse",
    "selectors",
    "tiers",
]
