"""The state store on PostgreSQL, for teams sharing one verger across hosts."""

from __future__ import annotations

from typing import Any

import psycopg

from verger.errors import StateError
from verger.state.base import Store


class PostgresStore(Store):
    auto_id = "BIGSERIAL PRIMARY KEY"
    placeholder = "%s"

    def __init__(self, url: str) -> None:
        self.url = url
        super().__init__()

    def describe(self) -> str:
        # The password, if any, stays out of messages.
        info = psycopg.conninfo.conninfo_to_dict(self.url)
        return f"postgresql://{info.get('host', 'localhost')}/{info.get('dbname', '')}"

    def _transaction(self) -> Any:
        return self._conn.transaction()

    def _connect(self) -> Any:
        try:
            return psycopg.connect(self.url, connect_timeout=5, autocommit=True)
        except psycopg.Error as exc:
            raise StateError(
                f"cannot connect to the state store {self.describe()}: "
                f"{str(exc).strip().splitlines()[0]}",
                "check the state: URL in verger.yml and that PostgreSQL is running",
            ) from exc
