"""Every table's row count and checksum, to compare a restored copy with its source.

The checksum of a table is the sum, over its rows, of the 64-bit hash of the
row's text form (``hashtextextended``, the hash PostgreSQL keeps stable
across versions for hash partitioning, and about three times cheaper than
MD5, which matters as the check runs beside every dump). A sum does not
depend on the order rows are read in, so a copy laid out differently on disk
still matches, while a changed, missing or extra row changes it. The text form of some types
depends on session settings (time zone, date style, float digits, money
locale), so both sides are read with the same fixed ones.

    checksums("postgresql://app@db/app")
    {'public.members': {'rows': 5000, 'checksum': '2881...'}, ...}

Only ordinary tables (and partitions) that pg_dump copies are counted:
temporary tables, foreign tables and tables belonging to an extension are
left out.
"""

from __future__ import annotations

from typing import TypedDict

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from verger.errors import BackupError

# Fixed output settings for both sides; row_security off makes a table the
# reader cannot see whole an error rather than a silently short count.
SETTINGS = """
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET IntervalStyle = 'postgres';
SET extra_float_digits = 1;
SET bytea_output = 'hex';
SET lc_monetary = 'C';
SET row_security = off;
"""

TABLES = r"""
SELECT n.nspname, c.relname, format('%I.%I', n.nspname, c.relname)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%'
  AND n.nspname NOT LIKE 'pg\_temp\_%'
  AND NOT EXISTS (
      SELECT 1 FROM pg_depend d
      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
  )
ORDER BY 3
"""

CHECKSUM = (
    "SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)), 0)::text FROM {} AS t"
)


class TableCheck(TypedDict):
    rows: int
    checksum: str


Connection = psycopg.Connection[tuple[object, ...]]


def table_checks(conn: Connection) -> dict[str, TableCheck]:
    """Row count and checksum of every table, read in ``conn``'s transaction.

    The caller picks the snapshot: run it inside a REPEATABLE READ transaction
    for one consistent view of all tables.
    """
    conn.execute(SETTINGS)
    found: dict[str, TableCheck] = {}
    for schema, table, name in conn.execute(TABLES).fetchall():
        query = sql.SQL(CHECKSUM).format(sql.Identifier(str(schema), str(table)))
        row = conn.execute(query).fetchone()
        assert row is not None
        rows, checksum = row
        found[str(name)] = {"rows": int(str(rows)), "checksum": str(checksum)}
    return found


def checksums(dsn: str, database: str | None = None) -> dict[str, TableCheck]:
    """Every table's row count and checksum in ``database`` (default: the DSN's own).

    All tables are read in one REPEATABLE READ transaction, so the result is
    one consistent view even while others write.
    """
    conninfo = make_conninfo(dsn, dbname=database) if database else dsn
    try:
        with psycopg.connect(conninfo, connect_timeout=10) as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            found = table_checks(conn)
            conn.rollback()
            return found
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "no detail"
        raise BackupError(
            f"cannot read the tables' row counts and checksums: {first}",
            "check that the database is up and the user can read every table",
        ) from exc
