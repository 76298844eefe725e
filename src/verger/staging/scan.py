"""The leak scan: proof that no production value survived into the copy.

Every text column of every table in the masked copy is streamed once and
compared, by keyed fingerprint, with the set taken from the originals while
they were masked: whole values of hidden columns, and every email and phone
number written in production text, each normalized the same way; and
production's names, emails and numbers written inside any text, in any case
or format, with one Aho-Corasick pass per value (verger.staging.known). Canaries
planted in production are looked for as plain substrings, case-insensitively,
and one that is a phone number in every spelling of it.
The tables are shared between two forked processes, the largest cut in two
by pages when it holds most of the rows, and their findings put back in
table order.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from verger.children import die_with_parent
from verger.staging.catalog import TEXT_TYPES, Table
from verger.staging.children import Forked
from verger.staging.databases import RefreshError
from verger.staging.fakes import (
    DOMAINS,
    EMAIL,
    FAKE_EMAIL,
    PHONE,
    SEVEN_DIGITS,
    Faker,
    normal_email,
    normal_text,
    numbers,
)
from verger.staging.hunt import REMEMBERED, SHORTEST
from verger.staging.known import NON_DIGITS, Known
from verger.staging.mask import SPLIT_ROWS

Progress = Callable[[int, int], None]
SCANNED_TYPES = (*TEXT_TYPES, "json", "jsonb", "USER-DEFINED", "ARRAY")
# Values remembered with their verdict are this short: longer ones seldom repeat,
# and a column of long documents would fill the memory.
REMEMBERED_SIZE = 256


@dataclass(frozen=True)
class Leak:
    column: str
    what: str

    def sentence(self) -> str:
        return f"{self.column}: {self.what}"


@dataclass
class Scan:
    """The values scanned, and the leaks found: each kind of finding once, counted."""

    values: int = 0
    leaks: list[Leak] = field(default_factory=list)
    times: dict[Leak, int] = field(default_factory=dict)
    count: int = 0

    def add(self, column: str, what: str, times: int = 1) -> None:
        self.count += times
        leak = Leak(column, what)
        if leak in self.times:
            self.times[leak] += times
        elif len(self.leaks) < 20:
            self.leaks.append(leak)
            self.times[leak] = times


@dataclass
class Canaries:
    """The canaries looked for: as written, case folded; numbers in any spelling."""

    written: list[str]
    # Each canary that is a phone number, under every run of digits that writes
    # it (as Known keeps production's numbers) and under its number in E.164.
    numbers: dict[str, str]

    @classmethod
    def of(cls, canaries: list[str], faker: Faker) -> Canaries:
        numbers: dict[str, str] = {}
        for canary in canaries:
            if not PHONE.fullmatch(canary.strip()):
                continue
            real = faker.e164(canary.strip())
            if real is not None:
                numbers[real] = canary
                for digits in Known.spellings(real):
                    numbers.setdefault(digits, canary)
        return cls([c.casefold() for c in canaries if c.strip()], numbers)

    def found(self, value: str, faker: Faker) -> list[str]:
        text = normal_text(value)
        folded = value.casefold()
        planted = [c for c in self.written if c in text or c in folded]
        if self.numbers and SEVEN_DIGITS.search(value):
            for match in numbers(value):
                canary = self._number(match.group(0), faker)
                if canary is not None and canary.casefold() not in planted:
                    planted.append(canary.casefold())
        return planted

    def _number(self, written: str, faker: Faker) -> str | None:
        digits = NON_DIGITS.sub("", written)
        canary = self.numbers.get(digits[2:] if digits.startswith("00") else digits)
        if canary is None:
            real = faker.e164(written)
            canary = self.numbers.get(real) if real is not None else None
        return canary


# One process's part of the scan: a table, and the pages it reads (None: all).
Part = tuple[Table, sql.Composable | None]


def scan_database(
    dsn: str,
    tables: list[Table],
    faker: Faker,
    seen: set[int],
    canaries: list[str],
    progress: Progress,
    fixed: dict[str, str] | None = None,
) -> Scan:
    """Every text value in the copy checked against production's fingerprints.

    ``fixed`` maps each column under the fixed rule to its value: chosen in
    the config, it is no production value left behind in that column, even
    where production held it too (a PIN of 0000). It is one in any other.
    """
    wanted = Canaries.of(canaries, faker)
    # A partitioned table's rows are read once, as its partitions'.
    scanned = [
        t
        for t in tables
        if not t.partitioned and any(c.type in SCANNED_TYPES for c in t.columns)
    ]
    with psycopg.connect(dsn, autocommit=True) as conn:
        shares = _shares(conn, scanned)
    found: dict[tuple[int, int], Scan] = {}
    scanners = [
        Scanner(dsn, share, faker, seen, wanted, fixed or {})
        for share in shares
        if share
    ]
    try:
        for index, part in _collect(scanners):
            found[index] = part
            progress(len(found), sum(len(share) for share in shares))
    finally:
        for scanner in scanners:
            scanner.stop()
    result = Scan()
    for index in sorted(found):
        part = found[index]
        result.values += part.values
        for leak in part.leaks:
            result.add(leak.column, leak.what, part.times[leak])
        result.count += part.count - sum(part.times.values())
    return result


def _shares(
    conn: psycopg.Connection[tuple[object, ...]], tables: list[Table]
) -> list[list[tuple[tuple[int, int], Part]]]:
    """The tables dealt to two processes by rows, the largest cut in two if need be."""
    rows = [_rows(conn, table) for table in tables]
    parts: list[tuple[int, tuple[int, int], Part]] = [
        (count, (index, 0), (table, None))
        for index, (table, count) in enumerate(zip(tables, rows, strict=True))
    ]
    parts.sort(key=lambda p: -p[0])
    if parts and 2 * parts[0][0] > sum(rows) and parts[0][0] > SPLIT_ROWS:
        count, (index, _), (table, _) = parts[0]
        middle = _middle(conn, table)
        if middle:
            cut = sql.Literal(f"({middle},0)")
            parts[:1] = [
                (
                    count // 2,
                    (index, 0),
                    (table, sql.SQL("ctid < {}::tid").format(cut)),
                ),
                (
                    count // 2,
                    (index, 1),
                    (table, sql.SQL("ctid >= {}::tid").format(cut)),
                ),
            ]
    shares: list[list[tuple[tuple[int, int], Part]]] = [[], []]
    loads = [0, 0]
    for count, place, part in parts:
        lighter = loads.index(min(loads))
        shares[lighter].append((place, part))
        loads[lighter] += count
    return shares


def _rows(conn: psycopg.Connection[tuple[object, ...]], table: Table) -> int:
    # The copy was analyzed once built: its statistics count its rows.
    row = conn.execute(
        "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = %s::regclass",
        (f'"{table.schema}"."{table.name}"',),
    ).fetchone()
    return int(str(row[0])) if row else 0


def _middle(conn: psycopg.Connection[tuple[object, ...]], table: Table) -> int:
    row = conn.execute(
        "SELECT pg_relation_size(%s::regclass)"
        " / current_setting('block_size')::bigint / 2",
        (f'"{table.schema}"."{table.name}"',),
    ).fetchone()
    return int(str(row[0])) if row else 0


class Scanner(Forked):
    """A forked process scanning its share of the tables."""

    def __init__(
        self,
        dsn: str,
        share: list[tuple[tuple[int, int], Part]],
        faker: Faker,
        seen: set[int],
        canaries: Canaries,
        fixed: dict[str, str],
    ) -> None:
        super().__init__(_scan_share, dsn, share, faker, seen, canaries, fixed)


def _collect(scanners: list[Scanner]) -> Iterator[tuple[tuple[int, int], Scan]]:
    """Each part's findings as a scanner sends them."""
    waiting = list(scanners)
    while waiting:
        ready = multiprocessing.connection.wait([s.answers for s in waiting])
        for scanner in [s for s in waiting if s.answers in ready]:
            try:
                answer: Any = scanner.answers.recv()
            except EOFError:
                answer = ("failed", "a scanning process ended unexpectedly")
            if answer[0] == "part":
                yield answer[1], answer[2]
            elif answer[0] == "failed":
                raise RefreshError(
                    f"the leak scan failed: {answer[1]}",
                    "check the staging server's log, then refresh again",
                )
            else:
                waiting.remove(scanner)


def _scan_share(
    parent: int,
    dsn: str,
    share: list[tuple[tuple[int, int], Part]],
    faker: Faker,
    seen: set[int],
    canaries: Canaries,
    fixed: dict[str, str],
    sender: multiprocessing.connection.Connection,
) -> None:
    die_with_parent(parent)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for index, (table, pages) in share:
                result = Scan()
                _scan_table(conn, table, pages, faker, seen, canaries, result, fixed)
                sender.send(("part", index, result))
    except Exception as exc:
        sender.send(("failed", f"{type(exc).__name__}: {exc}"))
    else:
        sender.send(("done",))
    sender.close()


def _scan_table(
    conn: psycopg.Connection[tuple[object, ...]],
    table: Table,
    pages: sql.Composable | None,
    faker: Faker,
    seen: set[int],
    canaries: Canaries,
    result: Scan,
    fixed: dict[str, str],
) -> None:
    columns = [c for c in table.columns if c.type in SCANNED_TYPES]
    listed = sql.SQL(", ").join(
        sql.SQL("{}::text").format(sql.Identifier(c.name)) for c in columns
    )
    query = sql.SQL("COPY (SELECT {} FROM {}{}) TO STDOUT").format(
        listed,
        sql.Identifier(table.schema, table.name),
        sql.SQL("") if pages is None else sql.SQL(" WHERE {}").format(pages),
    )
    # A value repeats (a fake number in every message to it): checked once.
    # A column's fixed value is the config's, clean from the start.
    verdicts = [_chosen(fixed.get(c.key_name)) for c in columns]
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
                    if found:
                        # One value is one leak, told by its most telling finding.
                        result.add(column.key_name, found[0])


def _chosen(value: str | None) -> dict[str, list[str]]:
    """A column's verdicts to start with: its fixed value, as char(n) or text gives it."""
    if value is None:
        return {}
    return {value: [], value.rstrip(" "): []}


def _check(value: str, faker: Faker, seen: set[int], canaries: Canaries) -> list[str]:
    """What production left in ``value``: one sentence per finding, none if clean.

    Canaries come first, then what names the kind of value, then the bare fact.
    """
    text = normal_text(value)
    planted = [f"the canary {canary!r}" for canary in canaries.found(value, faker)]
    found = []
    if "@" in value and faker.fingerprint("e", normal_email(value)) in seen:
        found.append("a production email")
    for fingerprint in faker.embedded(value):
        if fingerprint in seen:
            found.append("a production email or phone number")
    if len(text) >= SHORTEST and faker.fingerprint("v", text) in seen:
        found.append("a production value")
    if not found:
        embedded = _embedded(value, faker)
        if embedded:
            found.append(embedded)
    return planted + found


def _embedded(value: str, faker: Faker) -> str | None:
    """A production name, email or number written inside ``value``, in any form."""
    for span in faker.known.find(value):
        return f"the production {span.kind} {_hint(span.value)}"
    if SEVEN_DIGITS.search(value):
        for match in numbers(value):
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
