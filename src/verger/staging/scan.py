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
from verger.staging.hunt import REMEMBERED, SHORTEST

Progress = Callable[[int, int], None]
SCANNED_TYPES = (*TEXT_TYPES, "json", "jsonb", "USER-DEFINED", "ARRAY")
# Values remembered with their verdict are this short: longer ones seldom repeat,
# and a column of long documents would fill the memory.
REMEMBERED_SIZE = 256


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
    # A value repeats (a fake number in every message to it): checked once.
    verdicts: list[dict[str, list[str]]] = [{} for _ in columns]
    with conn.cursor().copy(query) as source:
        for row in source.rows():
            for column, value, known in zip(columns, row, verdicts, strict=True):
                if value:
                    result.values += 1
                    found = known.get(value)
                    if found is None:
                        found = _check(value, faker, seen, canaries)
                        if len(value) <= REMEMBERED_SIZE and len(known) < REMEMBERED:
                            known[value] = found
                    for what in found:
                        result.add(column.key_name, what)


def _check(value: str, faker: Faker, seen: set[int], canaries: list[str]) -> list[str]:
    """What production left in ``value``: one sentence per finding, none if clean."""
    text = normal_text(value)
    found = []
    if len(text) >= SHORTEST and faker.fingerprint("v", text) in seen:
        found.append("a production value")
    if "@" in value and faker.fingerprint("e", normal_email(value)) in seen:
        found.append("a production email")
    for fingerprint in faker.embedded(value):
        if fingerprint in seen:
            found.append("a production email or phone number")
    if not found:
        embedded = _embedded(value, faker)
        if embedded:
            found.append(embedded)
    for canary in canaries:
        if canary in text or canary in value.casefold():
            found.append(f"the canary {canary!r}")
    return found


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
