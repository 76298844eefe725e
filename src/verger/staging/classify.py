"""``verger staging classify``: rules proposed for the columns nobody classified.

A proposal comes from the column's name first (``email``, ``phone``,
``first_name``, ``notes``), then from a sample of its values (most look like
emails, or phone numbers, or long free text). A person reviews the
proposals and pastes them into verger.yml; nothing is applied by itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
from psycopg import sql

from verger.config.staging import Staging
from verger.staging.catalog import DATE_TYPES, TEXT_TYPES, Column, Table, read_tables
from verger.staging.fakes import EMAIL, PHONE, Faker

NAMES: list[tuple[str, str]] = [
    (r"e_?mail", "email"),
    (
        r"phone|mobile|cell|msisdn|(^|_)tel(_|$)|sms_?(to|from)|(^|_)(to|from)_number",
        "phone",
    ),
    (
        r"(^|_)(first|last|full|given|family|middle|sur|nick|display|user|contact"
        r"|person|member|customer|owner|legal|preferred|maiden|account)_?name$",
        "name",
    ),
    (r"(^|_)(address|street|city|zip|postcode|postal)", "text"),
    (r"body|message|note|comment|description|bio|content", "text"),
    (r"birth|dob", "date_noise"),
    (r"password|token|secret|ip_?addr|ssn|passport|iban|card", "hash"),
]


# A column called plainly "name" holds a person's in a table of people: one
# named for them, or one with their emails or phone numbers beside it.
PLAIN_NAME = re.compile(r"^(name|names|fullname|displayname)$")
PEOPLE = re.compile(
    r"(^|_)(member|user|people|person|customer|client|contact|employee|staff"
    r"|student|patient|subscriber|volunteer|account|profile|guest|author|owner"
    r"|recipient|attendee|parent|donor|lead|player|driver|tenant)s?$"
)
PERSONAL = re.compile(r"e_?mail|phone|mobile|birth")


# Values the leak scan reads in their text form, which no rule but null can
# replace while keeping the type valid.
STRUCTURED = ("json", "jsonb", "ARRAY")


@dataclass(frozen=True)
class Proposal:
    column: str
    rule: str
    reason: str


def classify(
    dsn: str, section: Staging, region: str, every: bool = False
) -> list[Proposal]:
    """A proposal for each column not yet in the config (or every column)."""
    proposals = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET default_transaction_read_only = on")
        for table in read_tables(conn):
            for column in table.columns:
                known = (
                    column.key_name in section.mask or column.key_name in section.keep
                )
                if every or not known:
                    sample = _sample(conn, table, column)
                    proposals.append(propose(column, sample, region, table))
    return proposals


def _sample(
    conn: psycopg.Connection[tuple[object, ...]], table: Table, column: Column
) -> list[str]:
    if column.type not in TEXT_TYPES and column.type not in STRUCTURED:
        return []
    query = sql.SQL("SELECT {}::text FROM {} WHERE {}::text <> '' LIMIT 200").format(
        sql.Identifier(column.name),
        sql.Identifier(table.schema, table.name),
        sql.Identifier(column.name),
    )
    return [str(row[0]) for row in conn.execute(query).fetchall()]


def propose(
    column: Column, sample: list[str], region: str, table: Table | None = None
) -> Proposal:
    """One column's rule, from its name, its table, its keys and a sample of its values."""
    if column.key:
        return Proposal(column.key_name, "keep", "part of a primary or foreign key")
    if column.type == "bytea":
        return _unreadable(column)
    if column.type in STRUCTURED:
        return _structured(column, sample, region)
    lowered = column.name.lower()
    if table is not None and _names_people(column, table):
        return Proposal(
            column.key_name, "name", f"it names the people in {table.key_name}"
        )
    for pattern, rule in NAMES:
        if re.search(pattern, lowered) and _fits(rule, column):
            return Proposal(column.key_name, rule, f"its name looks like {rule}")
    if sample:
        return _from_values(column, sample, region)
    return Proposal(
        column.key_name, "keep", "nothing in its name or values looks personal"
    )


def _unreadable(column: Column) -> Proposal:
    """A bytea column: whatever it holds, the leak scan cannot read it to prove it gone."""
    return Proposal(
        column.key_name,
        "null" if column.nullable else "hash",
        "the leak scan cannot read bytea, so personal data left in it would go "
        "unseen; keep it only knowingly",
    )


def _structured(column: Column, sample: list[str], region: str) -> Proposal:
    """A json or array column, judged by its name, its fields and its text form.

    Only null replaces such a value and keeps the type valid, so a personal
    one is proposed null (the schema guard refuses it for a NOT NULL column,
    which a person must then keep knowingly).
    """
    reason = _personal_name(column.name.lower())
    if reason is None:
        field = next((key for key in _keys(sample) if _personal_name(key)), None)
        if field is not None:
            reason = f"its values have a {field!r} field"
    if reason is None and sample:
        found = _from_values(column, sample, region)
        reason = None if found.rule == "keep" else found.reason
    if reason is None:
        return Proposal(
            column.key_name, "keep", "nothing in its name or values looks personal"
        )
    return Proposal(
        column.key_name,
        "null",
        f"{reason}; null is the only rule that fits {column.sql_type}"
        + ("" if column.nullable else ", which NOT NULL refuses: keep it knowingly"),
    )


def _personal_name(name: str) -> str | None:
    """Why a column or field named ``name`` looks personal, if it does."""
    for pattern, rule in NAMES:
        if re.search(pattern, name):
            return f"its name looks like {rule}"
    if PLAIN_NAME.match(name):
        return "its name looks like name"
    return None


def _keys(sample: list[str]) -> Iterator[str]:
    """The field names of the json values sampled, at any depth, lowercased."""
    for value in sample:
        try:
            parsed = json.loads(value)
        except ValueError:
            continue
        yield from _fields(parsed)


def _fields(value: object) -> Iterator[str]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield str(key).lower()
            yield from _fields(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _fields(inner)


def _names_people(column: Column, table: Table) -> bool:
    """A text column called plainly "name" in a table of people."""
    if column.type not in TEXT_TYPES or not PLAIN_NAME.match(column.name.lower()):
        return False
    if PEOPLE.search(table.name.lower()):
        return True
    return any(PERSONAL.search(c.name.lower()) for c in table.columns)


def _fits(rule: str, column: Column) -> bool:
    if rule == "date_noise":
        return column.type in DATE_TYPES
    return column.type in TEXT_TYPES


def _from_values(column: Column, sample: list[str], region: str) -> Proposal:
    faker = Faker("classify-only-no-output-salt", region)
    share = len(sample)
    emails = sum(1 for v in sample if EMAIL.fullmatch(v.strip()))
    phones = sum(1 for v in sample if PHONE.fullmatch(v.strip()) and faker.e164(v))
    embedded = sum(1 for v in sample if next(iter(faker.embedded(v)), None) is not None)
    if emails * 2 > share:
        return Proposal(
            column.key_name, "email", f"{emails} of {share} sampled values are emails"
        )
    if phones * 2 > share:
        return Proposal(
            column.key_name,
            "phone",
            f"{phones} of {share} sampled values are phone numbers",
        )
    if embedded:
        return Proposal(
            column.key_name,
            "text",
            f"{embedded} of {share} sampled values hold an email or phone number",
        )
    if sum(len(v.split()) for v in sample) > 4 * share:
        return Proposal(column.key_name, "text", "its values are free text")
    return Proposal(column.key_name, "keep", "its sampled values do not look personal")


def as_yaml(proposals: list[Proposal]) -> str:
    """The proposals as lines to paste under staging: in verger.yml."""
    masked = [p for p in proposals if p.rule != "keep"]
    kept = [p for p in proposals if p.rule == "keep"]
    lines = ["staging:"]
    if masked:
        lines.append("  mask:")
        lines += [f"    {p.column}: {p.rule}    # {p.reason}" for p in masked]
    if kept:
        lines.append("  keep:")
        lines += [f"    - {p.column}    # {p.reason}" for p in kept]
    return "\n".join(lines)
