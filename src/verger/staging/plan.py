"""The schema guard: every column classified, and every rule fit for its column."""

from __future__ import annotations

from dataclasses import dataclass, field

from verger.config.staging import Rule, Staging
from verger.staging.catalog import DATE_TYPES, NUMBER_TYPES, TEXT_TYPES, Column, Table
from verger.staging.fakes import MaskError

# Rules whose output is meant to hide the original value, so the leak scan hunts it.
HIDING = ("email", "phone", "name", "hash", "fixed", "null")
# Rules whose fakes are text, for text columns (see fitting).
TEXT_RULES = ("email", "phone", "name", "text", "hash", "fixed", "null", "keep")
# Rules that give a value the same fake in every column, distinct for distinct values.
KEY_RULES = ("hash", "email", "phone")


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
        """The tables with rows to mask: a partitioned table's are its partitions'."""
        return [
            plan for plan in self.tables if plan.masked and not plan.table.partitioned
        ]


# What a column is under: a rule to mask it with, or None to keep it.
Rules = dict[str, Rule | None]


def make_plan(tables: list[Table], section: Staging) -> Plan:
    """Each table's masked columns; refused for a column nobody classified.

    A partition takes its partitioned table's rule for a column it has no
    rule of its own for.
    """
    columns = {c.key_name: c for table in tables for c in table.columns}
    rules = _rules(tables, section)
    unclassified: list[str] = []
    plans = []
    for table in tables:
        plan = TablePlan(table)
        for column in table.columns:
            if column.key_name not in rules:
                unclassified.append(column.key_name)
                continue
            rule = rules[column.key_name]
            if rule is not None:
                _check(column, rule, rules, columns)
                plan.masked.append((column, rule))
        plans.append(plan)
    if unclassified:
        raise _unclassified(unclassified)
    named = [*section.mask, *section.keep]
    return Plan(plans, sorted(key for key in named if key not in columns))


def _rules(tables: list[Table], section: Staging) -> Rules:
    """Every classified column's rule, its own or the nearest partitioned table's."""
    parents = {table.key_name: table.parent for table in tables}
    rules: Rules = {}
    for table in tables:
        for column in table.columns:
            where: str | None = table.key_name
            while where is not None:
                key = f"{where}.{column.name}"
                if key in section.mask or key in section.keep:
                    rule = section.mask.get(key)
                    rules[column.key_name] = (
                        None if rule is None or rule.rule == "keep" else rule
                    )
                    break
                where = parents.get(where)
    return rules


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


def _check(
    column: Column, rule: Rule, rules: Rules, columns: dict[str, Column]
) -> None:
    where = column.key_name
    if column.key:
        _check_key(column, rule, rules, columns)
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
    _check_fixed(column, rule)


def _check_fixed(column: Column, rule: Rule) -> None:
    """A fixed value fits its column whole: cut, it would not be the value chosen."""
    value = rule.value or ""
    if rule.rule != "fixed" or column.width is None or len(value) <= column.width:
        return
    raise MaskError(
        f"{column.key_name} is {column.sql_type}, and its fixed value {value!r} is "
        f"{len(value)} characters long",
        f"give {column.key_name} a fixed value of {column.width} characters or "
        "fewer, or widen the column",
    )


def _check_key(
    column: Column, rule: Rule, rules: Rules, columns: dict[str, Column]
) -> None:
    """A key is masked only as every column it joins is, by a rule that keeps joins.

    Rows are loaded before any key exists, and the rules below give a value
    one fake in every column (and distinct values distinct fakes), so a key
    and its references masked alike still match.
    """
    where = column.key_name
    if rule.rule not in KEY_RULES:
        raise MaskError(
            f"{where} is part of a primary or foreign key, and the {rule.rule} rule "
            "would break the rows that refer to it",
            f"keep {where}, or mask it and every column its keys join with "
            f"{' or '.join(KEY_RULES)}",
        )
    for other in column.joins:
        theirs = rules.get(other)
        if theirs != rule:
            told = "kept" if theirs is None else f"masked with {theirs.rule}"
            raise MaskError(
                f"{where} is part of a primary or foreign key joined to {other}, "
                f"which is {told}; masking them differently would break the rows "
                "that refer to it",
                f"mask {other} with the same rule as {where}, or keep both",
            )
        if _room(column) != _room(columns[other]):
            raise MaskError(
                f"{where} and {other}, joined by a foreign key, differ in length, "
                "so their fakes could be cut differently",
                "give both the same length, or keep both",
            )


def _room(column: Column) -> int:
    """How long a fake may be in the column; every fake of a key rule fits in 64."""
    return 64 if column.width is None else min(column.width, 64)


def fitting(column: Column) -> tuple[str, ...]:
    """The rules whose output the column's type accepts."""
    if column.type in TEXT_TYPES:
        return TEXT_RULES
    if column.type in DATE_TYPES:
        return ("date_noise", "null", "keep")
    if column.type in NUMBER_TYPES:
        return ("number_noise", "null", "keep")
    if column.type == "bytea":
        # Hex digits are bytes too; no other fake is.
        return ("hash", "null", "keep")
    return ("null", "keep")


def _check_type(column: Column, rule: Rule) -> None:
    rules = fitting(column)
    if rule.rule in rules:
        return
    expected = {"date_noise": DATE_TYPES, "number_noise": NUMBER_TYPES}.get(
        rule.rule, TEXT_TYPES
    )
    offered = [r for r in rules if column.nullable or r != "null"]
    raise MaskError(
        f"{column.key_name} is {column.sql_type}, and the {rule.rule} rule applies to "
        f"{', '.join(expected)} columns",
        f"pick a rule that fits {column.sql_type}: "
        f"{', '.join(offered[:-1])} or {offered[-1]}",
    )
