"""PostgreSQL: connections against the maximum, cache hits, slow queries, WAL, lag."""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from verger.monitor.sources.base import Reading, Source, up

log = logging.getLogger("verger.monitor")

_STATS = """
SELECT
  (SELECT count(*) FROM pg_stat_activity WHERE datname IS NOT NULL),
  current_setting('max_connections')::float
    - current_setting('superuser_reserved_connections')::float,
  (SELECT sum(blks_hit)::float / nullif(sum(blks_hit) + sum(blks_read), 0)
     FROM pg_stat_database),
  (SELECT extract(epoch FROM now() - last_archived_time) FROM pg_stat_archiver),
  CASE WHEN pg_is_in_recovery()
    THEN extract(epoch FROM now() - pg_last_xact_replay_timestamp())
    ELSE (SELECT extract(epoch FROM max(replay_lag)) FROM pg_stat_replication)
  END
"""
_STATEMENTS = "SELECT queryid, calls, total_exec_time FROM pg_stat_statements"


class PostgresSource(Source):
    """One database named under ``databases:``."""

    kind = "postgres"

    def __init__(self, database: str, url: str, every: float) -> None:
        super().__init__(f"postgres {database}", every)
        self.database = database
        self.url = url
        self._calls: dict[Any, tuple[float, float]] = {}
        self.failing = False

    async def collect(self, now: float) -> list[Reading]:
        try:
            async with await psycopg.AsyncConnection.connect(
                self.url, connect_timeout=5, autocommit=True
            ) as conn:
                readings = await self._stats(conn)
                readings += await self._slowest(conn)
        except psycopg.Error as exc:
            if not self.failing:
                log.warning("PostgreSQL %s cannot be read: %s", self.database, exc)
            self.failing = True
            return [up("postgres", self.database, False)]
        self.failing = False
        return [*readings, up("postgres", self.database, True)]

    async def _stats(self, conn: psycopg.AsyncConnection[Any]) -> list[Reading]:
        row = await (await conn.execute(_STATS)).fetchone()
        assert row is not None
        labels = {"database": self.database}
        names = (
            "verger_postgres_connections",
            "verger_postgres_max_connections",
            "verger_postgres_cache_hit_ratio",
            "verger_postgres_archive_age_seconds",
            "verger_postgres_replication_lag_seconds",
        )
        return [
            Reading(name, labels, round(float(value), 6))
            for name, value in zip(names, row, strict=True)
            if value is not None
        ]

    async def _slowest(self, conn: psycopg.AsyncConnection[Any]) -> list[Reading]:
        """The mean time of the slowest statement since the last collection."""
        try:
            rows = await (await conn.execute(_STATEMENTS)).fetchall()
        except psycopg.Error:  # pg_stat_statements is not installed here
            return []
        slowest = 0.0
        seen: dict[Any, tuple[float, float]] = {}
        for queryid, calls, total_ms in rows:
            seen[queryid] = (float(calls), float(total_ms))
            before = self._calls.get(queryid)
            if before is None or calls <= before[0]:
                continue
            mean = (total_ms - before[1]) / (calls - before[0]) / 1000
            slowest = max(slowest, mean)
        first = not self._calls
        self._calls = seen
        if first:
            return []
        labels = {"database": self.database}
        return [Reading("verger_postgres_slowest_query_seconds", labels, slowest)]
