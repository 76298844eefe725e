"""Anonymizing the copy by streaming: COPY out, transform, COPY in, one UPDATE a table.

Each table with masked columns is read once with ``COPY ... TO STDOUT`` on
one connection while the fakes are written with ``COPY ... FROM STDIN`` into
a temporary table on another; a single ``UPDATE ... FROM`` joined on the
row's ``ctid`` then writes them. Nothing is a round trip per row. While the
originals stream past, their keyed fingerprints are kept for the leak scan.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from verger.config.staging import Rule
from verger.staging.catalog import Column
from verger.staging.fakes import Faker, normal_email, normal_text
from verger.staging.plan import HIDING, Plan, TablePlan

log = logging.getLogger("verger.staging")

Progress = Callable[[int, int], None]
Transform = Callable[[str], str | None]
# Shorter values (initials, "n/a") are too common to prove a leak anywhere else.
SHORTEST = 4
# Distinct values remembered per column; past that, a repeat is simply computed again.
MEMO = 500_000


@dataclass
class Masked:
    rows: int = 0
    columns: int = 0
    fingerprints: set[int] = field(default_factory=set)
    per_table: dict[str, int] = field(default_factory=dict)


def mask_database(dsn: str, plan: Plan, faker: Faker, progress: Progress) -> Masked:
    """Anonymize every masked column of the copy at ``dsn``, table by table."""
    masked = Masked()
    with (
        psycopg.connect(dsn, autocommit=True) as reader,
        psycopg.connect(dsn) as writer,
    ):
        totals = {tp.table.key_name: _count(reader, tp) for tp in plan.masked}
        total = sum(totals.values())
        for tp in plan.masked:
            done = masked.rows

            def step(rows: int, done: int = done) -> None:
                progress(done + rows, total)

            rows = _mask_table(reader, writer, tp, faker, masked.fingerprints, step)
            masked.rows += rows
            masked.columns += len(tp.masked)
            masked.per_table[tp.table.key_name] = rows
            log.info(
                "Masked %s rows of %s (%s).",
                rows,
                tp.table.key_name,
                ", ".join(f"{c.name}: {r.rule}" for c, r in tp.masked),
            )
    return masked


def _ident(tp: TablePlan) -> sql.Composable:
    return sql.Identifier(tp.table.schema, tp.table.name)


def _any_set(tp: TablePlan) -> sql.Composable:
    return sql.SQL(" OR ").join(
        sql.SQL("{} IS NOT NULL").format(sql.Identifier(c.name)) for c, _ in tp.masked
    )


def _count(conn: psycopg.Connection[tuple[object, ...]], tp: TablePlan) -> int:
    query = sql.SQL("SELECT count(*) FROM {} WHERE {}").format(_ident(tp), _any_set(tp))
    row = conn.execute(query).fetchone()
    return int(str(row[0])) if row else 0


def _mask_table(
    reader: psycopg.Connection[tuple[object, ...]],
    writer: psycopg.Connection[tuple[object, ...]],
    tp: TablePlan,
    faker: Faker,
    seen: set[int],
    progress: Callable[[int], None],
) -> int:
    transforms = [_transform(faker, column, rule) for column, rule in tp.masked]
    hunters = [_hunter(faker, rule) for _, rule in tp.masked]
    # Values repeat (a member's number in every message sent to them): each is done once.
    memos: list[dict[str, str | None]] = [{} for _ in tp.masked]
    columns = sql.SQL(", ").join(
        sql.SQL("{}::text").format(sql.Identifier(c.name)) for c, _ in tp.masked
    )
    out = sql.SQL("COPY (SELECT ctid, {} FROM {} WHERE {}) TO STDOUT").format(
        columns, _ident(tp), _any_set(tp)
    )
    slots = sql.SQL(", ").join(
        sql.SQL("{} text").format(sql.Identifier(f"c{i}"))
        for i in range(len(tp.masked))
    )
    rows = 0
    with writer.transaction():
        writer.execute(
            sql.SQL(
                "CREATE TEMP TABLE verger_mask (tid tid, {}) ON COMMIT DROP"
            ).format(slots)
        )
        with (
            reader.cursor().copy(out) as source,
            writer.cursor().copy("COPY verger_mask FROM STDIN") as target,
        ):
            for row in source.rows():
                fakes: list[str | None] = [row[0]]
                for index, value in enumerate(row[1:]):
                    if value is None:
                        fakes.append(None)
                        continue
                    memo = memos[index]
                    if value in memo:
                        fakes.append(memo[value])
                        continue
                    hunters[index](value, seen)
                    fake = transforms[index](value)
                    if len(memo) < MEMO:
                        memo[value] = fake
                    fakes.append(fake)
                target.write_row(fakes)
                rows += 1
                if rows % 10000 == 0:
                    progress(rows)
        writer.execute(_update(tp))
    progress(rows)
    return rows


def _update(tp: TablePlan) -> sql.Composed:
    sets = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(column.name), _value(i, column, rule))
        for i, (column, rule) in enumerate(tp.masked)
    )
    return sql.SQL(
        "UPDATE {} AS t SET {} FROM verger_mask AS s WHERE t.ctid = s.tid"
    ).format(_ident(tp), sets)


def _value(index: int, column: Column, rule: Rule) -> sql.Composable:
    slot = sql.Identifier("s", f"c{index}")
    own = sql.Identifier("t", column.name)
    kind = sql.SQL(column.sql_type)
    if rule.rule == "null":
        return sql.SQL("NULL")
    if rule.rule == "date_noise":
        return sql.SQL("({} + {}::int * interval '1 day')::{}").format(own, slot, kind)
    if rule.rule == "number_noise":
        return sql.SQL("({}::float8 * {}::float8)::{}").format(own, slot, kind)
    return sql.SQL("{}::{}").format(slot, kind)


def _transform(faker: Faker, column: Column, rule: Rule) -> Transform:
    width = column.width
    where = column.key_name
    kind = rule.rule
    if kind == "email":
        return lambda v: faker.email(v, width)
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
        return lambda v: str(faker.shift(v, rule.days))
    if kind == "number_noise":
        return lambda v: repr(faker.factor(v, rule.ratio))
    return lambda v: None


def _hunter(faker: Faker, rule: Rule) -> Callable[[str, set[int]], None]:
    """What of an original value the leak scan must later prove is gone."""

    def hunt(value: str, seen: set[int]) -> None:
        if rule.rule in HIDING or rule.whole:
            text = normal_text(value)
            if len(text) >= SHORTEST:
                seen.add(faker.fingerprint("v", text))
        if rule.rule == "email":
            seen.add(faker.fingerprint("e", normal_email(value)))
        elif rule.rule == "phone":
            found = faker.e164(value)
            if found is not None:
                seen.add(faker.fingerprint("p", found))
        elif rule.rule == "text":
            seen.update(faker.embedded(value))

    return hunt
