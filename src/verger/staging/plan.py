"""The schema guard: every column classified, and every rule fit for its column."""

from __future__ import annotations

from dataclasses import dataclass, field

from verger.config.staging import Rule, Staging
from verger.staging.catalog import DATE_TYPES, NUMBER_TYPES, TEXT_TYPES, Column, Table
from verger.staging.fakes import MaskError

# Rules whose output is meant to hide the original value, so the leak scan hunts it.
HIDING = ("email", "phone", "name", "hash", "fixed", "null")


class UnclassifiedError(MaskError):
    """A column is under neither staging.mask nor staging.keep."""


@dataclass
class TablePlan:
    table: Table
    masked: list[tuple[Column, Rule]] = field(default_factory=list)


@dataclass
class Plan:
    tables: list[TablePlan]
    unknown: list[str]

    @property
    def masked(self) -> list[TablePlan]:
        return [plan for plan in self.tables if plan.masked]


def make_plan(tables: list[Table], section: Staging) -> Plan:
    """Each table's masked columns; refused for a column nobody classified."""
    seen: set[str] = set()
    unclassified: list[str] = []
    plans = []
    for table in tables:
        plan = TablePlan(table)
        for column in table.columns:
            seen.add(column.key_name)
            rule = section.mask.get(column.key_name)
            if rule is None and column.key_name not in section.keep:
                unclassified.append(column.key_name)
            elif rule is not None and rule.rule != "keep":
                _check(column, rule)
                plan.masked.append((column, rule))
        plans.append(plan)
    if unclassified:
        raise _unclassified(unclassified)
    named = [*section.mask, *section.keep]
    return Plan(plans, sorted(key for key in named if key not in seen))


def _unclassified(columns: list[str]) -> UnclassifiedError:
    listed = ", ".join(columns[:10]) + (
        f" and {len(columns) - 10} more" if len(columns) > 10 else ""
    )
    noun = "column is" if len(columns) == 1 else "columns are"
    return UnclassifiedError(
        f"{len(columns)} {noun} under neither staging.mask nor staging.keep: {listed}",
        "run 'verger staging classify' for proposed rules, review them and add "
        "them to verger.yml",
    )


def _check(column: Column, rule: Rule) -> None:
    where = column.key_name
    if column.key:
        raise MaskError(
            f"{where} is part of a primary or foreign key; masking it would break "
            "the rows that refer to it",
            f"keep {where} (keys carry no personal data when they are surrogate "
            "ids), or make the personal value a column of its own",
        )
    if rule.rule == "null" and not column.nullable:
        raise MaskError(
            f"{where} is NOT NULL, so the null rule cannot apply",
            "use fixed, hash or another rule",
        )
    if column.unique and rule.rule in (
        "fixed",
        "null",
        "name",
        "date_noise",
        "number_noise",
    ):
        raise MaskError(
            f"{where} is unique, and the {rule.rule} rule cannot keep it unique",
            f"mask {where} with hash",
        )
    _check_type(column, rule)


def _check_type(column: Column, rule: Rule) -> None:
    expected = {"date_noise": DATE_TYPES, "number_noise": NUMBER_TYPES}.get(
        rule.rule, TEXT_TYPES
    )
    if rule.rule == "null" or column.type in expected:
        return
    raise MaskError(
        f"{column.key_name} is {column.sql_type}, and the {rule.rule} rule applies to "
        f"{', '.join(expected)} columns",
        "pick a rule for its type (date_noise, number_noise, null, keep)",
    )
