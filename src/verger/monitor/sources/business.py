"""Business metrics: a SQL query from verger.yml whose one number becomes a metric."""

from __future__ import annotations

import logging

import psycopg

from verger.monitor.sources.base import Reading, Source, up

log = logging.getLogger("verger.monitor")


class BusinessSource(Source):
    """``verger_business_<name>``, the first column of the query's first row."""

    kind = "business"

    def __init__(self, name: str, sql: str, url: str, every: float) -> None:
        super().__init__(f"business {name}", every)
        self.metric = f"verger_business_{name}"
        self.query = sql
        self.url = url
        self.failing: str | None = None

    async def collect(self, now: float) -> list[Reading]:
        instance = self.metric.removeprefix("verger_business_")
        try:
            async with await psycopg.AsyncConnection.connect(
                self.url, connect_timeout=5, autocommit=True
            ) as conn:
                await conn.execute("SET statement_timeout = '30s'")
                await conn.execute("SET default_transaction_read_only = on")
                row = await (await conn.execute(self.query.encode())).fetchone()
            value = float(row[0]) if row and row[0] is not None else 0.0
        except (psycopg.Error, TypeError, ValueError) as exc:
            reason = (
                str(exc).strip().splitlines()[0] if str(exc) else type(exc).__name__
            )
            if self.failing != reason:
                log.warning("business metric %s failed: %s", instance, reason)
            self.failing = reason
            return [up("business", instance, False)]
        self.failing = None
        return [Reading(self.metric, {}, value), up("business", instance, True)]
