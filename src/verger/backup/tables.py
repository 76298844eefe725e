"""Every table's row count and checksum, to compare a restored copy with its source.

The checksum of a table is the sum, over its rows, of a hash of each row. A
sum does not depend on the order rows are read in, so a copy laid out
differently on disk still matches, while a changed, missing or extra row
changes it. The check runs beside every dump and competes with pg_dump for
the CPU, so the cheaper of two row hashes is used where it can be:

- ``record``: ``hash_record``, which hashes each column with its type's own
  hash function (the ones hash partitioning keeps stable), without turning
  the row into text; about half the CPU of ``text``. A table with a column
  of a type that has no hash function (``point``, ``json``), or so many rows
  that the sum overflows, falls back to ``text``.
- ``text``: ``hashtextextended`` of the row's text form. The text form of
  some types depends on session settings (time zone, date style, float
  digits, money locale), so both sides are read with the same fixed ones.

Beside a dump the checks yield to it (``beside=True``): one process per
scan rather than a parallel plan, and, where the server is on this machine
and verger may, a backend at a lower CPU priority, so that they take the
cores pg_dump and the database's own users leave idle. JIT compilation is
off everywhere: for one scan of each table it costs more than it saves
(about 0.4 s of 1.5 s on a 5-million-row table).

The method is recorded beside each table (none recorded means ``text``, as
in manifests written before there was a choice), and a restored copy is
checked with the method its backup used.

    checksums("postgresql://app@db/app")
    {'public.members': {'rows': 5000, 'checksum': '2881...'}, ...}

Only ordinary tables (and partitions) that pg_dump copies are counted:
temporary tables, foreign tables and tables belonging to an extension are
left out.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Required, TypedDict

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from verger.errors import BackupError

log = logging.getLogger("verger.backup")

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
SET jit = off;
"""
# Beside a dump: no parallel workers, which would run at the full priority.
BESIDE = "SET max_parallel_workers_per_gather = 0"
# How far the checks' backend is lowered beside a dump (nice 0 is the default).
NICENESS = 10
LOOPBACK = ("localhost", "127.0.0.1", "::1")

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

CHECKSUMS = {
    "record": "SELECT count(*), coalesce(sum(hash_record(t)), 0)::text FROM {} AS t",
    "text": (
        "SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)), 0)::text "
        "FROM {} AS t"
    ),
}

# What makes the record hash unusable for a table, and ``text`` its method:
# a column type without a hash function, or a sum past bigint.
_NO_RECORD_HASH = (
    psycopg.errors.UndefinedFunction,
    psycopg.errors.FeatureNotSupported,
    psycopg.errors.NumericValueOutOfRange,
)


class TableCheck(TypedDict, total=False):
    rows: Required[int]
    checksum: Required[str]
    method: str  # "record"; absent means "text"


Connection = psycopg.Connection[tuple[object, ...]]


def table_checks(
    conn: Connection,
    methods: Mapping[str, str] | None = None,
    beside: bool = False,
) -> dict[str, TableCheck]:
    """Row count and checksum of every table, read in ``conn``'s transaction.

    ``methods`` names the method each table was checked with before (to
    compare a restored copy); a table it does not name gets the cheapest
    method that works. The caller picks the snapshot: run it inside a
    REPEATABLE READ transaction for one consistent view of all tables.
    ``beside``: the checks run beside a dump and yield the CPU to it.
    """
    conn.execute(SETTINGS)
    if beside:
        conn.execute(BESIDE)
        _lower_priority(conn)
    found: dict[str, TableCheck] = {}
    for schema, table, name in conn.execute(TABLES).fetchall():
        relation = sql.Identifier(str(schema), str(table))
        wanted = (methods or {}).get(str(name))
        found[str(name)] = _check(conn, relation, wanted)
    return found


def _lower_priority(conn: Connection) -> None:
    """Lower the CPU priority of ``conn``'s backend, if it runs here and verger may.

    The process must be this connection's own: the backend's title names
    the client's port (or ``[local]`` and the database, over a socket), so
    a server in a container, whose numbers are not this machine's, or on
    another host never has a stranger's process lowered.
    """
    pid = conn.info.backend_pid
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes()
        if title.startswith(b"postgres") and _ours(conn, title):
            os.setpriority(os.PRIO_PROCESS, pid, NICENESS)
    except OSError as exc:
        # Another user's server, unless verger runs as root or as its owner.
        log.debug("The checks' backend %d keeps its priority: %s", pid, exc)


def _ours(conn: Connection, title: bytes) -> bool:
    """Whether a backend's process title is that of ``conn``'s backend."""
    host = conn.info.host
    if host.startswith("/"):
        return b"[local]" in title and conn.info.dbname.encode() in title
    if host not in LOOPBACK:
        return False
    with socket.socket(fileno=os.dup(conn.pgconn.socket)) as mine:
        port = mine.getsockname()[1]
    return f"({port})".encode() in title


def _check(
    conn: Connection, relation: sql.Identifier, method: str | None
) -> TableCheck:
    if method in (None, "record"):
        try:
            with conn.transaction():
                rows, checksum = _run(conn, "record", relation)
            return {"rows": rows, "checksum": checksum, "method": "record"}
        except _NO_RECORD_HASH:
            # Recorded as "record" but now refused: the text sum cannot
            # match, and the table is reported as differing.
            pass
    rows, checksum = _run(conn, "text", relation)
    return {"rows": rows, "checksum": checksum}


def _run(conn: Connection, method: str, relation: sql.Identifier) -> tuple[int, str]:
    row = conn.execute(sql.SQL(CHECKSUMS[method]).format(relation)).fetchone()
    assert row is not None
    return int(str(row[0])), str(row[1])


def checksums(
    dsn: str,
    database: str | None = None,
    recorded: Mapping[str, TableCheck] | None = None,
) -> dict[str, TableCheck]:
    """Every table's row count and checksum in ``database`` (default: the DSN's own).

    With ``recorded`` (the checks of a backup), each table is checked the way
    the backup checked it. All tables are read in one REPEATABLE READ
    transaction, so the result is one consistent view even while others write.
    """
    conninfo = make_conninfo(dsn, dbname=database) if database else dsn
    methods = None
    if recorded is not None:
        methods = {
            name: facts.get("method", "text") for name, facts in recorded.items()
        }
    try:
        with psycopg.connect(conninfo, connect_timeout=10) as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            found = table_checks(conn, methods)
            conn.rollback()
            return found
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "no detail"
        raise BackupError(
            f"cannot read the tables' row counts and checksums: {first}",
            "check that the database is up and the user can read every table",
        ) from exc
