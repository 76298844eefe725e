"""The leak scan: proof that no production value survived into the copy.

Every text column of every table in the masked copy is streamed once and
compared, by keyed fingerprint, with the set taken from the originals while
they were masked: whole values of hidden columns, and every email and phone
number written in production text, each normalized the same way; and
production's names, emails and numbers written inside any text, in any case
or format, with one Aho-Corasick pass per value (verger.staging.known). Canaries
planted in production are looked for as plain substrings, case-insensitively.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from verger.staging.catalog import TEXT_TYPES, Table
from verger.staging.fakes import (
    DOMAINS,
    EMAIL,
    FAKE_EMAIL,
    PHONE,
    SEVEN_DIGITS,
    Faker,
    normal_email,
    normal_text,
)
from verger.staging.hunt import SHORTEST

Progress = Callable[[int, int], None]
SCANNED_TYPES = (*TEXT_TYPES, "json", "jsonb", "USER-DEFINED", "ARRAY")


@dataclass
class Leak:
    column: str
    what: str

    def sentence(self) -> str:
        return f"{self.column}: {self.what}"


@dataclass
class Scan:
    values: int = 0
    leaks: list[Leak] = field(default_factory=list)
    count: int = 0

    def add(self, column: str, what: str) -> None:
        self.count += 1
        if len(self.leaks) < 20:
            self.leaks.append(Leak(column, what))


def scan_database(
    dsn: str,
    tables: list[Table],
    faker: Faker,
    seen: set[int],
    canaries: list[str],
    progress: Progress,
) -> Scan:
    """Every text value in the copy checked against production's fingerprints."""
    result = Scan()
    wanted = [c.casefold() for c in canaries if c.strip()]
    scanned = [t for t in tables if any(c.type in SCANNED_TYPES for c in t.columns)]
    with psycopg.connect(dsn, autocommit=True) as conn:
        for index, table in enumerate(scanned):
            _scan_table(conn, table, faker, seen, wanted, result)
            progress(index + 1, len(scanned))
    return result


def _scan_table(
    conn: psycopg.Connection[tuple[object, ...]],
    table: Table,
    faker: Faker,
    seen: set[int],
    canaries: list[str],
    result: Scan,
) -> None:
    columns = [c for c in table.columns if c.type in SCANNED_TYPES]
    listed = sql.SQL(", ").join(
        sql.SQL("{}::text").format(sql.Identifier(c.name)) for c in columns
    )
    query = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT").format(
        listed, sql.Identifier(table.schema, table.name)
    )
    with conn.cursor().copy(query) as source:
        for row in source.rows():
            for column, value in zip(columns, row, strict=True):
                if value:
                    result.values += 1
                    _check(column.key_name, value, faker, seen, canaries, result)


def _check(
    where: str,
    value: str,
    faker: Faker,
    seen: set[int],
    canaries: list[str],
    result: Scan,
) -> None:
    text = normal_text(value)
    before = result.count
    if len(text) >= SHORTEST and faker.fingerprint("v", text) in seen:
        result.add(where, "a production value")
    if "@" in value and faker.fingerprint("e", normal_email(value)) in seen:
        result.add(where, "a production email")
    for found in faker.embedded(value):
        if found in seen:
            result.add(where, "a production email or phone number")
    if result.count == before:
        embedded = _embedded(value, faker)
        if embedded:
            result.add(where, embedded)
    for canary in canaries:
        if canary in text or canary in value.casefold():
            result.add(where, f"the canary {canary!r}")


def _embedded(value: str, faker: Faker) -> str | None:
    """A production name, email or number written inside ``value``, in any form."""
    for span in faker.known.find(value):
        return f"the production {span.kind} {_hint(span.value)}"
    if SEVEN_DIGITS.search(value):
        for match in PHONE.finditer(value):
            if faker.known.phone(match.group(0)):
                return f"the production number {_hint(match.group(0))}"
    if "@" in value:
        for match in EMAIL.finditer(value):
            written = match.group(0)
            if written.lower().endswith(DOMAINS) and not FAKE_EMAIL.fullmatch(written):
                return f"a partly masked email {_hint(written)}"
    return None


def _hint(value: str) -> str:
    """Enough of a leaked value to find it, not enough to read it."""
    return repr(value[:2] + "…")
