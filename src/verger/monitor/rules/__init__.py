"""Rules: expressions, their evaluation, the default set and the alert states."""

from verger.monitor.rules.default import burn_rates, default_rules, no_data, tiers
from verger.monitor.rules.engine import RuleEngine
from verger.monitor.rules.evaluate import Evaluator, Sample
from verger.monitor.rules.expr import ExprError, parse, selectors
from verger.monitor.rules.model import Rule

__all__ = [
    "Evaluator",
    "ExprError",
    "Rule",
    "RuleEngine",
    "Sample",
    "burn_rates",
    "default_rules",
    "no_data",
    "parse",
    "selectors",
    "tiers",
]
