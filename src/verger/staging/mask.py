"""Anonymizing while loading: every row is masked on its way into the new copy.

The new database gets production's tables without their indexes, keys or
triggers (the schema's pre-data section). Each table is then read with
``COPY ... TO STDOUT`` from the source (production inside one snapshot, or a
restored backup) and written with ``COPY ... FROM STDIN`` into the new table:
tables with nothing to mask pass through in binary, the others in text, their
masked fields replaced on the way and every other field passed through
untouched. Indexes and constraints are built once afterwards, so no row is
ever written twice. The originals' keyed fingerprints, for the leak scan,
are taken by a second process reading beside the masking one, or, from a
million rows, by each of two processes that share the masked tables, the
largest cut between them by a hash of its costliest masked field.
"""

from __future__ import annotations

import datetime
import decimal
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from verger.children import die_with_parent
from verger.config.staging import Rule
from verger.staging.catalog import Column
from verger.staging.children import Forked
from verger.staging.databases import RefreshError, dump_schema, restore_section
from verger.staging.fakes import Faker, MaskError, check_email_width
from verger.staging.hunt import Hunt, hunter
from verger.staging.plan import Plan, TablePlan
from verger.staging.stream import (
    ESCAPE,
    NULL,
    SPECIAL,
    Origin,
    copy,
    lines,
    unescape,
)
from verger.staging.twins import refuse_twins

log = logging.getLogger("verger.staging")

Progress = Callable[[int, int], None]
Connection = psycopg.Connection[tuple[object, ...]]
Transform = Callable[[str], str | None]
# Distinct values remembered per column; past that, a repeat is simply computed again.
MEMO = 2_000_000
# Rows to mask from which two processes share the tables (see _shared).
PARALLEL_ROWS = 1_000_000
# A table with more rows than this, and more than half the work, is halved
# between the two processes, or one of them would idle while the other masks it.
SPLIT_ROWS = 500_000
# A shared table is cut by a hash of one field into ranges of these many
# buckets of 1024 (see Shares): four reads of it rather than two, for balance.
RANGES = (400, 300, 200, 124)
BUCKETS = sum(RANGES)
# The columns learnt first, before any process is forked, and then the rest:
# only text needs the names and emails (see _load_split). A unique email
# column is learnt first too: its fakes are settled with the numbers', before
# the process that masks it without text is forked (Faker.settle_emails).
NUMBERS = ("phone",)
WORDS = ("name", "email")
# Which masked field a halved table is cut by: the one whose fakes cost most.
COSTLIEST = {"text": 3, "phone": 2, "name": 1, "email": 1}
# Noise is held inside these: past them, the copy would refuse the value.
INTEGER_RANGES = {
    "smallint": (-(2**15), 2**15 - 1),
    "integer": (-(2**31), 2**31 - 1),
    "bigint": (-(2**63), 2**63 - 1),
}
# Enough digits for any numeric with a precision (at most 1000), so none is rounded.
EXACT = decimal.Context(prec=1100)
# Where COPY says which field it refused: "COPY accounts, line 3, column balance: ...".
COPY_COLUMN = re.compile(r"^COPY [^\n]*?, line \d+, column (.+?)(?:: |$)", re.M)
# Every table pg_dump copies data for: ordinary tables and partitions, not
# partitioned parents (their rows are their partitions'), not extensions' own.
TABLES = """
SELECT n.nspname, c.relname,
       array_agg(a.attname::text ORDER BY a.attnum) AS columns
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
   AND NOT a.attisdropped AND a.attgenerated = ''
 WHERE c.relkind = 'r'
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg\\_%'
   AND NOT EXISTS (
        SELECT 1 FROM pg_depend d
         WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
           AND d.deptype = 'e')
 GROUP BY n.nspname, c.relname, c.oid
 ORDER BY pg_relation_size(c.oid) DESC, n.nspname, c.relname
"""

SEQUENCES = """
SELECT format('%I.%I', schemaname, sequencename), last_value
  FROM pg_sequences WHERE last_value IS NOT NULL
"""


@dataclass
class Masked:
    rows: int = 0
    columns: int = 0
    fingerprints: set[int] = field(default_factory=set)
    per_table: dict[str, int] = field(default_factory=dict)


@dataclass
class Source:
    """One table as the source holds it: its copied columns, in order."""

    schema: str
    name: str
    columns: list[str]

    @property
    def key_name(self) -> str:
        return self.name if self.schema == "public" else f"{self.schema}.{self.name}"

    @property
    def ident(self) -> sql.Composable:
        return sql.Identifier(self.schema, self.name)

    @property
    def listed(self) -> sql.Composable:
        return sql.SQL(", ").join(sql.Identifier(c) for c in self.columns)


def build_masked(
    source: Connection,
    source_dsn: str,
    snapshot: str | None,
    target: str,
    plan: Plan,
    faker: Faker,
    progress: Progress,
) -> Masked:
    """The empty database at ``target`` made a masked copy of the source.

    Schema first without indexes, keys or triggers, then the rows, masked
    as they pass, then indexes and constraints, built once on the loaded rows.
    ``snapshot`` names the exported snapshot ``source``'s transaction holds, so
    schema and rows are of one instant. Example::

        build_masked(conn, production, "00000003-1B", new_copy, plan, faker, bar)
    """
    with tempfile.TemporaryDirectory(prefix="verger-staging-") as folder:
        schema = Path(folder) / "schema.dump"
        dump_schema(source_dsn, schema, snapshot)
        restore_section(schema, target, "pre-data")
        origin = Origin(source_dsn, snapshot)
        masked = load_masked(source, origin, target, plan, faker, progress)
        restore_section(schema, target, "post-data", jobs=2)
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("ANALYZE")
    return masked


def load_masked(
    source: Connection,
    origin: Origin,
    target: str,
    plan: Plan,
    faker: Faker,
    progress: Progress,
) -> Masked:
    """Fill the empty tables at ``target`` from ``source``, masking as rows pass.

    ``source`` is an open connection whose transaction sees the data to copy
    (production's snapshot, or a restored backup); ``target`` already holds
    the tables, without indexes or constraints.
    """
    masked = Masked()
    plans = {tp.table.key_name: tp for tp in plan.masked}
    tables = [_source(row) for row in source.execute(TABLES).fetchall()]
    sizes = _estimate(source, [t for t in tables if t.key_name in plans])
    _settle(source)
    if _shared(plan, sum(sizes.values())):
        _load_split(
            source, origin, target, tables, plan, faker, masked, sizes, progress
        )
        return masked
    _learn(source, origin, plan, faker, NUMBERS)
    _learn(source, origin, plan, faker, WORDS)
    hunt = Hunt(origin, faker, [_read(source, tp) for tp in plan.masked])
    try:
        total = sum(sizes.values())
        _load(source, origin, target, tables, plans, faker, masked, total, progress)
        masked.fingerprints = hunt.fingerprints()
    finally:
        hunt.stop()
    return masked


def _learn(
    source: Connection, origin: Origin, plan: Plan, faker: Faker, kinds: tuple[str, ...]
) -> None:
    """Production's distinct values of the ``kinds`` of columns, to find them in text.

    Read before any row is masked (and before any process that masks text
    is forked), so a name quoted in a message gets the fake its column gets,
    in every process. Phone numbers are then given their fakes, all at once,
    before any process masking numbers is forked.
    """
    started = time.monotonic()
    reads = [
        (rule.rule, column, _distinct(source, tp, column))
        for tp in plan.masked
        for column, rule in tp.masked
        if _learnt_in(kinds, rule.rule, column)
    ]
    for kind, column, _ in reads:
        if kind == "email":
            check_email_width(column.key_name, column.width)
    # The next column is read (the server finding its distinct values) while
    # this process learns the last one's.
    with ThreadPoolExecutor(2) as readers:
        fetched = [readers.submit(_read_all, origin, query) for _, _, query in reads]
        for (kind, column, _), future in zip(reads, fetched, strict=True):
            for chunk in future.result():
                _remember(
                    faker, kind, [unescape(line.decode()) for line in chunk], column
                )
    if kinds == NUMBERS:
        faker.settle()
        refuse_twins(source, plan, faker)
        log.info(
            "Learnt %s ways to write production's numbers in %.1fs.",
            len(faker.known.phones),
            time.monotonic() - started,
        )
        return
    faker.known.finish()
    log.info(
        "Learnt production's names and emails (%s) in %.1fs.",
        len(faker.known.automaton),
        time.monotonic() - started,
    )


def _learnt_in(kinds: tuple[str, ...], kind: str, column: Column) -> bool:
    """Whether a column is learnt in the pass of ``kinds`` (see NUMBERS)."""
    if kind == "email" and column.unique:
        return kinds == NUMBERS
    return kind in kinds


def _distinct(source: Connection, tp: TablePlan, column: Column) -> str:
    return (
        sql.SQL(
            "COPY (SELECT DISTINCT {}::text FROM {} WHERE {} IS NOT NULL) TO STDOUT"
        )
        .format(
            sql.Identifier(column.name),
            sql.Identifier(tp.table.schema, tp.table.name),
            sql.Identifier(column.name),
        )
        .as_string(source)
    )


def _read_all(origin: Origin, query: str) -> list[list[bytes]]:
    # COPY through psql: a client library would cost a Python call a row.
    return list(lines(origin, query))


def _remember(faker: Faker, kind: str, values: list[str], column: Column) -> None:
    unique = column.key_name if column.unique else None
    if kind == "name":
        faker.known.add_all("name", values)
    elif kind == "email":
        faker.known.add_all("email", (value.strip() for value in values))
        if unique is not None:
            for value in values:
                faker.learn_email(value, unique, column.width)
    else:
        for value in values:
            faker.learn_phone(value, unique)


def _shared(plan: Plan, rows: int) -> bool:
    """Whether two processes share the masked tables: from a million rows.

    Each forked process makes its own fakes, and they agree: every phone
    number's fake is settled before the fork (``Faker.settle``), and every
    other fake is a function of its value alone.
    """
    return rows >= PARALLEL_ROWS and len(plan.masked) >= 2


def _load_split(
    source: Connection,
    origin: Origin,
    target: str,
    tables: list[Source],
    plan: Plan,
    faker: Faker,
    masked: Masked,
    sizes: dict[str, int],
    progress: Progress,
) -> None:
    """The masked tables shared between forked processes, the rest done here.

    Once the numbers are learnt, a process masks the tables without text
    while this one learns the names and emails that only text needs; then
    two more mask the rest. A table both of those mask ranges of is written
    here, in one COPY, from the masked lines they send: it is loaded frozen,
    like every other.
    """
    plans = {tp.table.key_name: tp for tp in plan.masked}
    workers: list[Worker] = []
    _learn(source, origin, plan, faker, NUMBERS)
    shares = _shares(source, tables, plans, sizes)
    joined = shares.joined
    taken = multiprocessing.get_context("fork").Value("i", 0)
    try:
        if shares.early:
            workers.append(Worker(origin, target, (shares.early, [], taken), faker))
        _learn(source, origin, plan, faker, WORDS)
        workers += [
            Worker(origin, target, (own, shares.ranges, taken), faker)
            for own in shares.own
        ]
        with ThreadPoolExecutor(1) as beside, _joined(target, joined) as write:
            # Tables without masks go psql to psql while the workers mask.
            passing = beside.submit(
                _pass_all,
                origin,
                target,
                [t for t in tables if t.key_name not in plans],
            )
            total = max(1, sum(sizes.values()))
            answers = collect(workers, lambda d: progress(d, total), write)
            for counted, fingerprints in answers:
                for key, count in counted.items():
                    masked.per_table[key] = masked.per_table.get(key, 0) + count
                masked.fingerprints |= fingerprints
            passing.result()
        with psycopg.connect(target, autocommit=True) as writer:
            _sequences(source, writer)
    finally:
        for worker in workers:
            worker.stop()
    masked.rows = sum(masked.per_table.values())
    masked.columns = sum(len(tp.masked) for tp in plans.values())
    for key, count in masked.per_table.items():
        how = (
            "shared by two processes"
            if joined and key == joined.key_name
            else ("in a process of its own")
        )
        log.info("Masked %s rows of %s %s.", count, key, how)


# One worker's part: a table, its plan, the COPY reading its rows, and whether
# its masked lines go to the main process (a halved table) or straight in.
Part = tuple[Source, TablePlan, str, bool]


@dataclass
class Shares:
    """The masked tables dealt to two processes, and the ranges of one they share.

    ``early`` are tables without text, masked by a process of their own
    while the names and emails are learnt, up to half the work. Each of the
    two other processes masks its own tables, then takes the next free range
    of the shared table until none is left: the ranges go largest first, so
    the two end together, whichever had more of its own to do.
    """

    early: list[Part]
    own: list[list[Part]]
    ranges: list[Part]
    joined: Source | None


def _shares(
    source: Connection,
    tables: list[Source],
    plans: dict[str, TablePlan],
    sizes: dict[str, int],
) -> Shares:
    """The masked tables dealt to two processes by work, the largest shared if need be."""
    parts: list[tuple[int, Part]] = []
    for table in tables:
        tp = plans.get(table.key_name)
        if tp is not None:
            work = sizes[table.key_name] * (1 + len(tp.masked))
            parts.append((work, (table, tp, _query(source, table), False)))
    parts.sort(key=lambda p: -p[0])
    total = sum(work for work, _ in parts)
    ranges: list[Part] = []
    joined = None
    if parts and 2 * parts[0][0] > total:
        # Alone, the largest table would keep one process busy long after the other.
        _, (table, tp, _, _) = parts[0]
        if sizes[table.key_name] > SPLIT_ROWS:
            ranges = [(table, tp, query, True) for query in _cut(source, table, tp)]
            joined = table
            parts = parts[1:]
    early: list[Part] = []
    own: list[list[Part]] = [[], []]
    loads = [0, 0]
    done = 0
    for work, part in parts:
        if not _texts(part[1]) and done + work <= total / 2:
            early.append(part)
            done += work
            continue
        lighter = loads.index(min(loads))
        own[lighter].append(part)
        loads[lighter] += work
    return Shares(early, own, ranges, joined)


def _texts(tp: TablePlan) -> bool:
    """Whether a table masks text, which needs production's names and emails."""
    return any(rule.rule == "text" for _, rule in tp.masked)


def _cut(source: Connection, table: Source, tp: TablePlan) -> list[str]:
    """COPY queries reading a table's rows in ranges of a hash, largest first.

    Rows go by a hash of their costliest masked field (message bodies
    before phone numbers, say), so each distinct value there is masked by
    one process only, and its memo serves every row holding it; cut by
    pages, both processes would meet most values and mask them twice. A
    NULL counts as hash 0: every row is read by exactly one query.
    """
    column = max(tp.masked, key=lambda masked: COSTLIEST.get(masked[1].rule, 0))[0]
    bucket = sql.SQL("coalesce(hashtext({}::text), 0) & {}").format(
        sql.Identifier(column.name), sql.Literal(BUCKETS - 1)
    )
    bounds = list(itertools.accumulate(RANGES, initial=0))
    return [
        sql.SQL("COPY (SELECT {} FROM {} WHERE ({}) BETWEEN {} AND {}) TO STDOUT")
        .format(
            table.listed,
            table.ident,
            bucket,
            sql.Literal(low),
            sql.Literal(high - 1),
        )
        .as_string(source)
        for low, high in itertools.pairwise(bounds)
    ]


@contextmanager
def _joined(target: str, table: Source | None) -> Iterator[Callable[[bytes], None]]:
    """The COPY into the halved table, fed with the lines both processes masked."""
    if table is None:
        yield _nowhere
        return
    with psycopg.connect(target, autocommit=True) as conn:
        _settle(conn)
        cursor = conn.cursor()
        with _named(table), conn.transaction():
            conn.execute(_truncate(table))
            with cursor.copy(_into(table), writer=QueuedLibpqWriter(cursor)) as copy:
                yield copy.write


def _nowhere(data: bytes) -> None:
    raise RefreshError(
        "a masking process sent rows for no shared table", "refresh again"
    )


def _pass_all(origin: Origin, target: str, tables: list[Source]) -> None:
    for table in tables:
        _pass_through(origin, target, table)


def _query(source: Connection, table: Source) -> str:
    return (
        sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT")
        .format(table.listed, table.ident)
        .as_string(source)
    )


class Worker(Forked):
    """A forked process masking some tables into the copy and fingerprinting them."""

    def __init__(self, origin: Origin, target: str, share: Share, faker: Faker) -> None:
        super().__init__(_work, origin, target, share, faker)


# A worker's own parts, the ranges of the shared table, and how many of those
# are taken, a counter both workers share.
Share = tuple[list[Part], list[Part], Any]


def _parts(share: Share) -> Iterator[Part]:
    """A worker's own parts, then each range of the shared table no one took yet."""
    own, ranges, taken = share
    yield from own
    while ranges:
        with taken.get_lock():
            index = taken.value
            taken.value += 1
        if index >= len(ranges):
            return
        yield ranges[index]


def collect(
    workers: list[Worker],
    progress: Callable[[int], None],
    write: Callable[[bytes], None] = _nowhere,
) -> Iterator[tuple[dict[str, int], set[int]]]:
    """Each worker's rows and fingerprints, with progress while they run.

    Masked lines of a halved table are handed to ``write`` as they come.
    """
    done = [0] * len(workers)
    waiting = {worker.answers: index for index, worker in enumerate(workers)}
    while waiting:
        for ready in multiprocessing.connection.wait(list(waiting)):
            assert isinstance(ready, multiprocessing.connection.Connection)
            index = waiting[ready]
            try:
                answer: Any = ready.recv()
            except EOFError:
                answer = (
                    "failed",
                    "refresh",
                    "a masking process ended unexpectedly",
                    "",
                )
            if answer[0] in ("rows", "lines"):
                if answer[0] == "lines":
                    write(answer[2])
                done[index] = answer[1]
                progress(sum(done))
                continue
            del waiting[ready]
            if answer[0] == "failed":
                _, kind, message, hint = answer
                error = MaskError if kind == "mask" else RefreshError
                raise error(message, hint or "check the staging server's log")
            yield answer[1], answer[2]


def _work(
    parent: int,
    origin: Origin,
    target: str,
    share: Share,
    faker: Faker,
    sender: multiprocessing.connection.Connection,
) -> None:
    die_with_parent(parent)
    seen: set[int] = set()
    rows: dict[str, int] = {}
    try:
        with psycopg.connect(target, autocommit=True) as writer:
            _settle(writer)
            for table, tp, query, joined in _parts(share):
                before = sum(rows.values())
                if joined:
                    count = _send_masked(
                        query, origin, table, tp, faker, (sender, before), seen
                    )
                else:

                    def step(done: int, before: int = before) -> None:
                        sender.send(("rows", before + done))

                    count = _mask_table(
                        query, origin, writer, table, tp, faker, step, seen
                    )
                rows[table.key_name] = rows.get(table.key_name, 0) + count
    except Exception as exc:
        kind = "mask" if isinstance(exc, MaskError) else "refresh"
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        sender.send(("failed", kind, message, getattr(exc, "hint", "")))
    else:
        sender.send(("done", rows, seen))
    sender.close()


def _send_masked(
    query: str,
    origin: Origin,
    table: Source,
    tp: TablePlan,
    faker: Faker,
    sending: tuple[multiprocessing.connection.Connection, int],
    seen: set[int],
) -> int:
    """Part of a table masked, its lines sent to the main process, which writes them.

    ``sending`` is the pipe and the rows this process masked before.
    """
    sender, before = sending
    rows = 0
    for data, count in _masked_lines(query, origin, table, tp, faker, seen):
        rows += count
        sender.send(("lines", before + rows, data))
    return rows


def _read(source: Connection, tp: TablePlan) -> tuple[str, list[Rule]]:
    """What the hunting process reads of a masked table: its masked columns."""
    listed = sql.SQL(", ").join(sql.Identifier(c.name) for c, _ in tp.masked)
    query = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT").format(
        listed, sql.Identifier(tp.table.schema, tp.table.name)
    )
    return query.as_string(source), [rule for _, rule in tp.masked]


def _load(
    source: Connection,
    origin: Origin,
    target: str,
    tables: list[Source],
    plans: dict[str, TablePlan],
    faker: Faker,
    masked: Masked,
    total: int,
    progress: Progress,
) -> None:
    with psycopg.connect(target, autocommit=True) as writer:
        _settle(writer)
        for table in tables:
            tp = plans.get(table.key_name)
            if tp is None:
                _pass_through(origin, target, table)
                continue
            done = masked.rows

            def step(rows: int, done: int = done) -> None:
                progress(done + rows, max(total, done + rows))

            query = _query(source, table)
            rows = _mask_table(query, origin, writer, table, tp, faker, step)
            masked.rows += rows
            masked.columns += len(tp.masked)
            masked.per_table[table.key_name] = rows
            log.info(
                "Masked %s rows of %s (%s).",
                rows,
                table.key_name,
                ", ".join(f"{c.name}: {r.rule}" for c, r in tp.masked),
            )
        _sequences(source, writer)


def _source(row: tuple[object, ...]) -> Source:
    schema, name, columns = row
    return Source(str(schema), str(name), [str(c) for c in columns])  # type: ignore[attr-defined]


def _estimate(conn: Connection, tables: list[Source]) -> dict[str, int]:
    """Rows of each table, from the planner's statistics: counting would read them twice."""
    sizes = {}
    for table in tables:
        row = conn.execute(
            "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = %s::regclass",
            (f'"{table.schema}"."{table.name}"',),
        ).fetchone()
        sizes[table.key_name] = int(str(row[0])) if row else 0
    return sizes


def _settle(conn: Connection) -> None:
    """Dates and times written the same way on both sides, whatever the servers say."""
    conn.execute("SET client_encoding = 'UTF8'")
    conn.execute("SET DateStyle = ISO, YMD")
    conn.execute("SET TimeZone = 'UTC'")
    conn.execute("SET IntervalStyle = postgres")
    conn.execute("SET extra_float_digits = 3")


def _pass_through(origin: Origin, target: str, table: Source) -> None:
    """A table with nothing to mask: psql to psql in binary, never through Python."""
    out = sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT (FORMAT binary)").format(
        table.listed, table.ident
    )
    into = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary, FREEZE)").format(
        table.ident, table.listed
    )
    with psycopg.connect(target, autocommit=True) as conn:
        statements = [_truncate(table).as_string(conn), into.as_string(conn)]
        copy(origin, out.as_string(conn), target, statements)


def _truncate(table: Source) -> sql.Composed:
    # Emptied in the transaction that loads it, so COPY may write its rows frozen:
    # the leak scan's first read then has no hint bits to set on every page.
    return sql.SQL("TRUNCATE ONLY {}").format(table.ident)


def _mask_table(
    query: str,
    origin: Origin,
    writer: Connection,
    table: Source,
    tp: TablePlan,
    faker: Faker,
    progress: Callable[[int], None],
    seen: set[int] | None = None,
) -> int:
    rows = 0
    cursor = writer.cursor()
    with _named(table), writer.transaction():
        writer.execute(_truncate(table))
        # A thread sends the rows while this one masks the next lines.
        with cursor.copy(_into(table), writer=QueuedLibpqWriter(cursor)) as target:
            for data, count in _masked_lines(query, origin, table, tp, faker, seen):
                target.write(data)
                rows += count
                progress(rows)
    progress(rows)
    return rows


@contextmanager
def _named(table: Source) -> Iterator[None]:
    """A masked value the copy refuses, told by its table and column."""
    try:
        yield
    except (psycopg.DataError, psycopg.IntegrityError) as exc:
        found = COPY_COLUMN.search(exc.diag.context or "")
        where = table.key_name + (f".{found.group(1)}" if found else "")
        reason = (exc.diag.message_primary or str(exc)).strip().splitlines()[0]
        raise MaskError(
            f"masking {where} gave a value its column refuses: {reason}",
            f"change the rule for {where} under staging.mask (keep, null or "
            "another rule that fits its type), then refresh again",
        ) from exc


def _into(table: Source) -> sql.Composed:
    return sql.SQL("COPY {} ({}) FROM STDIN (FREEZE)").format(table.ident, table.listed)


def _masked_lines(
    query: str,
    origin: Origin,
    table: Source,
    tp: TablePlan,
    faker: Faker,
    seen: set[int] | None,
) -> Iterator[tuple[bytes, int]]:
    """The rows of ``query`` as COPY lines with their masked fields replaced."""
    position = {name: index for index, name in enumerate(table.columns)}
    fields = [
        (position[column.name], *_field(faker, column, rule, seen))
        for column, rule in tp.masked
    ]
    for chunk in lines(origin, query):
        batch = []
        for line in chunk:
            values = line.split(b"\t")
            for index, memo, work in fields:
                raw = values[index]
                fake = memo.get(raw)
                values[index] = work(raw) if fake is None else fake
            batch.append(b"\t".join(values))
        batch.append(b"")
        yield b"\n".join(batch), len(chunk)


def _field(
    faker: Faker, column: Column, rule: Rule, seen: set[int] | None = None
) -> tuple[dict[bytes, bytes], Callable[[bytes], bytes]]:
    """The work on one field as COPY writes it, and the memo of what it did.

    Values repeat (a member's number in every message sent to them): each
    distinct one is masked once, and NULL stays NULL.
    """
    transform = _transform(faker, column, rule)
    memo: dict[bytes, bytes] = {NULL: NULL}
    hunt = None if seen is None else hunter(faker, rule)
    if seen is not None and rule.rule == "text" and not rule.whole:
        # The text is searched once: replacing what it finds fingerprints it.
        width = column.width
        hunt = None
        transform = lambda v: faker.text(v, width, False, seen)  # noqa: E731

    def work(raw: bytes) -> bytes:
        value = unescape(raw.decode())
        if hunt is not None and seen is not None:
            hunt(value, seen)
        try:
            result = transform(value)
        except (ValueError, ArithmeticError) as exc:
            raise _unmasked(column, rule, exc) from exc
        if result is None:
            fake = NULL
        elif SPECIAL.search(result):
            fake = result.translate(ESCAPE).encode()
        else:
            fake = result.encode()
        if len(memo) < MEMO:
            memo[raw] = fake
        return fake

    return memo, work


def _unmasked(column: Column, rule: Rule, exc: Exception) -> MaskError:
    return MaskError(
        f"masking {column.key_name} with {rule.rule} failed: {exc}",
        f"change the rule for {column.key_name} under staging.mask, then refresh again",
    )


def _transform(faker: Faker, column: Column, rule: Rule) -> Transform:
    width = column.width
    where = column.key_name
    kind = rule.rule
    if kind == "email":
        unique = where if column.unique else None
        return lambda v: faker.email(v, width, unique)
    if kind == "phone":
        return lambda v: faker.phone(v, width, column.unique, where)
    if kind == "name":
        return lambda v: faker.name(v, width)
    if kind == "text":
        return lambda v: faker.text(v, width, rule.whole)
    if kind == "hash":
        return lambda v: faker.hash(v, width)
    if kind == "fixed":
        fixed = rule.value or ""
        return lambda v: v if v == "" else fixed[: width or None]
    if kind == "date_noise":
        return lambda v: _shifted(v, faker.shift(v, rule.days))
    if kind == "number_noise":
        return _noise(faker, column, rule.ratio)
    return lambda v: None


def _shifted(value: str, days: int) -> str:
    """An ISO date or timestamp moved by whole days; infinity and BC dates stay."""
    try:
        day = datetime.date.fromisoformat(value[:10])
    except ValueError:
        return value
    if value.endswith(" BC"):
        return value
    try:
        moved = day + datetime.timedelta(days=days)
    except OverflowError:
        return value
    return moved.isoformat() + value[10:]


def _noise(faker: Faker, column: Column, ratio: float) -> Transform:
    """Numbers moved by up to ``ratio`` of themselves, held inside the column's type.

    A value at the edge of its type (a smallint's -32768, a numeric(5,2)'s
    999.99) is kept at the edge rather than pushed past it, where the copy
    would refuse it on one night's salt and not another's.
    """
    bounds = INTEGER_RANGES.get(column.type)
    if bounds is not None:
        low, high = bounds
        return lambda v: str(
            min(max(round(float(v) * faker.factor(v, ratio)), low), high)
        )
    if column.type == "numeric":
        digits, scale = column.precision, column.scale
        return lambda v: _scaled(v, faker.factor(v, ratio), digits, scale)
    return lambda v: repr(float(v) * faker.factor(v, ratio))


def _scaled(value: str, factor: float, digits: int | None, scale: int | None) -> str:
    """A numeric scaled, rounded to its scale and held below its precision.

    A numeric without them keeps the original's digits after the point, and
    may grow; NaN and infinity stay as they are.
    """
    number = decimal.Decimal(value)
    if not number.is_finite():
        return value
    scaled = EXACT.multiply(number, decimal.Decimal(factor))
    if digits is None or scale is None:
        exponent = int(number.as_tuple().exponent)
        step = decimal.Decimal(1).scaleb(min(exponent, 0))
        return str(scaled.quantize(step, decimal.ROUND_HALF_EVEN, EXACT))
    step = decimal.Decimal(1).scaleb(-scale)
    largest = EXACT.subtract(decimal.Decimal(1).scaleb(digits - scale), step)
    rounded = scaled.quantize(step, decimal.ROUND_HALF_EVEN, EXACT)
    return str(min(max(rounded, -largest), largest))


def _sequences(reader: Connection, writer: Connection) -> None:
    """Each sequence where production's was, so new rows in staging get free ids."""
    for name, value in reader.execute(SEQUENCES).fetchall():
        writer.execute("SELECT setval(%s::regclass, %s, true)", (name, value))
