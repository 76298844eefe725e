"""Unique indexes that masking would break, found before any row is copied.

A phone number's fake is the same whichever way the number is written, so
two values of a unique column that write one number in two ways, such as
``(415) 555-1002`` and ``415-555-1002``, become one value in staging. The
fakes hold the numbers apart otherwise (see ``PhonePool``), so these twins,
kept while the phone columns are learnt, are all there is to check: each
unique index over such a column is read for the rows holding them.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from verger.staging.catalog import Column
from verger.staging.fakes import Faker, MaskError
from verger.staging.plan import Plan, TablePlan

# Each unique index of a table on plain columns, with its columns in order.
# Partial indexes are left out: their rows are not all held to be unique.
INDEXES = """
SELECT array_agg(a.attname::text ORDER BY k.ord)
  FROM pg_index i
  JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(num, ord) ON true
  LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.num
 WHERE i.indisunique AND i.indpred IS NULL AND i.indrelid = %s::regclass
 GROUP BY i.indexrelid
HAVING bool_and(k.num > 0)
"""


def refuse_twins(
    source: psycopg.Connection[tuple[object, ...]], plan: Plan, faker: Faker
) -> None:
    """Refused, naming the index, when masking would give two of its rows one key."""
    for tp in plan.masked:
        twinned = [
            column
            for column, rule in tp.masked
            if rule.rule == "phone" and faker.twins.get(column.key_name)
        ]
        if not twinned:
            continue
        ident = sql.Identifier(tp.table.schema, tp.table.name).as_string(source)
        for (listed,) in source.execute(INDEXES, (ident,)).fetchall():
            columns = [str(name) for name in listed]  # type: ignore[attr-defined]
            for column in twinned:
                if column.name in columns:
                    _check(source, faker, tp, column, columns)


def _check(
    source: psycopg.Connection[tuple[object, ...]],
    faker: Faker,
    tp: TablePlan,
    column: Column,
    columns: list[str],
) -> None:
    """The rows holding ``column``'s twins, keyed as the index will be in staging."""
    query = sql.SQL("SELECT {} FROM {} WHERE {}::text = ANY(%s)").format(
        sql.SQL(", ").join(
            sql.SQL("{}::text").format(sql.Identifier(c)) for c in columns
        ),
        sql.Identifier(tp.table.schema, tp.table.name),
        sql.Identifier(column.name),
    )
    at = columns.index(column.name)
    keys: set[tuple[object, ...]] = set()
    clashes = 0
    twins = sorted(faker.twins[column.key_name])
    for row in source.execute(query, (twins,)):
        if None in row:
            continue  # NULLs are distinct in a unique index
        key = list(row)
        key[at] = faker.phone(str(row[at]), column.width, True, column.key_name)
        if tuple(key) in keys:
            clashes += 1
        keys.add(tuple(key))
    if clashes:
        listed = ", ".join(columns)
        raise MaskError(
            f"masking would break the unique index on {tp.table.key_name} ({listed}): "
            "its rows write one phone number in different ways, which get one "
            f"fake, so {clashes} of them would repeat another row's key",
            f"write each number in {column.key_name} one way in production (as "
            f"E.164, say), or mask {column.key_name} with hash",
        )
