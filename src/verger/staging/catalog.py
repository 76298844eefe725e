"""What the copy holds: every column of every table, with its type, keys and indexes."""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

TEXT_TYPES = ("text", "character varying", "character", "citext")
DATE_TYPES = ("date", "timestamp without time zone", "timestamp with time zone")
NUMBER_TYPES = (
    "smallint",
    "integer",
    "bigint",
    "numeric",
    "real",
    "double precision",
)


@dataclass
class Column:
    table: str
    name: str
    type: str
    sql_type: str
    width: int | None
    nullable: bool
    key: bool = False
    unique: bool = False
    # The columns a foreign key joins this one to, on either side of it.
    joins: list[str] = field(default_factory=list)
    # A numeric column's declared digits and digits after the point (None: any).
    precision: int | None = None
    scale: int | None = None

    @property
    def key_name(self) -> str:
        return f"{self.table}.{self.name}"


@dataclass
class Table:
    schema: str
    name: str
    columns: list[Column] = field(default_factory=list)
    # The partitioned table this one is a partition of, by its key name.
    parent: str | None = None
    # A partitioned table holds no rows of its own: its partitions hold them.
    partitioned: bool = False

    @property
    def key_name(self) -> str:
        return self.name if self.schema == "public" else f"{self.schema}.{self.name}"


COLUMNS = """
SELECT c.table_schema, c.table_name, c.column_name, c.data_type,
       format_type(a.atttypid, a.atttypmod), c.character_maximum_length,
       c.is_nullable = 'YES',
       CASE WHEN c.data_type = 'numeric' THEN c.numeric_precision END,
       CASE WHEN c.data_type = 'numeric' THEN c.numeric_scale END
  FROM information_schema.columns c
  JOIN information_schema.tables t
    ON t.table_schema = c.table_schema AND t.table_name = c.table_name
  JOIN pg_attribute a
    ON a.attrelid = format('%I.%I', c.table_schema, c.table_name)::regclass
   AND a.attname = c.column_name
 WHERE t.table_type = 'BASE TABLE'
   AND c.table_schema NOT IN ('pg_catalog', 'information_schema', 'verger')
   AND c.is_generated = 'NEVER'
 ORDER BY c.table_schema, c.table_name, c.ordinal_position
"""

# Columns of primary keys and of foreign keys, on either side of the reference.
KEYS = """
SELECT n.nspname, r.relname, a.attname
  FROM pg_constraint k
  JOIN LATERAL (
        SELECT k.conrelid AS rel, unnest(k.conkey) AS num
        UNION ALL
        SELECT k.confrelid, unnest(k.confkey) WHERE k.contype = 'f'
       ) cols ON true
  JOIN pg_class r ON r.oid = cols.rel
  JOIN pg_namespace n ON n.oid = r.relnamespace
  JOIN pg_attribute a ON a.attrelid = cols.rel AND a.attnum = cols.num
 WHERE k.contype IN ('p', 'f')
"""

# Each column of each foreign key, with the column it refers to.
FOREIGN = """
SELECT cn.nspname, c.relname, ca.attname, pn.nspname, p.relname, pa.attname
  FROM pg_constraint k
  JOIN LATERAL unnest(k.conkey, k.confkey) AS pair(own, other) ON true
  JOIN pg_class c ON c.oid = k.conrelid
  JOIN pg_namespace cn ON cn.oid = c.relnamespace
  JOIN pg_attribute ca ON ca.attrelid = k.conrelid AND ca.attnum = pair.own
  JOIN pg_class p ON p.oid = k.confrelid
  JOIN pg_namespace pn ON pn.oid = p.relnamespace
  JOIN pg_attribute pa ON pa.attrelid = k.confrelid AND pa.attnum = pair.other
 WHERE k.contype = 'f'
"""

# Each partition with the table it is a partition of; and each partitioned table.
PARENTS = """
SELECT cn.nspname, c.relname, pn.nspname, p.relname
  FROM pg_inherits i
  JOIN pg_class c ON c.oid = i.inhrelid
  JOIN pg_namespace cn ON cn.oid = c.relnamespace
  JOIN pg_class p ON p.oid = i.inhparent
  JOIN pg_namespace pn ON pn.oid = p.relnamespace
 WHERE c.relispartition
"""
PARTITIONED = """
SELECT n.nspname, c.relname
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'p'
"""

UNIQUE = """
SELECT n.nspname, r.relname, a.attname
  FROM pg_index i
  JOIN pg_class r ON r.oid = i.indrelid
  JOIN pg_namespace n ON n.oid = r.relnamespace
  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
 WHERE i.indisunique
"""


def read_tables(conn: psycopg.Connection[tuple[object, ...]]) -> list[Table]:
    """Every base table outside the system schemas, with its columns.

    The ``verger`` schema (the backup markers: times, no personal data) is
    verger's own and needs no rules.
    """
    keys = {tuple(row) for row in conn.execute(KEYS).fetchall()}
    unique = {tuple(row) for row in conn.execute(UNIQUE).fetchall()}
    joins: dict[tuple[object, ...], list[str]] = {}
    for row in conn.execute(FOREIGN).fetchall():
        own, other = tuple(row[:3]), tuple(row[3:])
        joins.setdefault(own, []).append(_key_name(*other))
        joins.setdefault(other, []).append(_key_name(*own))
    tables: dict[tuple[str, str], Table] = {}
    for row in conn.execute(COLUMNS).fetchall():
        schema, table, name, kind, sql_type, width, nullable, digits, scale = row
        where = (str(schema), str(table))
        entry = tables.setdefault(where, Table(*where))
        entry.columns.append(
            Column(
                table=entry.key_name,
                name=str(name),
                type=str(kind),
                sql_type=str(sql_type),
                width=_number(width),
                nullable=bool(nullable),
                key=(schema, table, name) in keys,
                unique=(schema, table, name) in unique,
                joins=joins.get((schema, table, name), []),
                precision=_number(digits),
                scale=_number(scale),
            )
        )
    _partitions(conn, tables)
    return list(tables.values())


def _partitions(
    conn: psycopg.Connection[tuple[object, ...]], tables: dict[tuple[str, str], Table]
) -> None:
    """Each table told whether it is partitioned, and a partition its parent."""
    for schema, name in conn.execute(PARTITIONED).fetchall():
        table = tables.get((str(schema), str(name)))
        if table is not None:
            table.partitioned = True
    for schema, name, parent_schema, parent in conn.execute(PARENTS).fetchall():
        table = tables.get((str(schema), str(name)))
        if table is not None:
            table.parent = Table(str(parent_schema), str(parent)).key_name


def _key_name(schema: object, table: object, column: object) -> str:
    where = str(table) if schema == "public" else f"{schema}.{table}"
    return f"{where}.{column}"


def _number(value: object) -> int | None:
    return None if value is None else int(str(value))
