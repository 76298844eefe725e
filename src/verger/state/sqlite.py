"""The default state store: one SQLite file in .verger/ beside the config."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from verger.errors import StateError
from verger.state.base import Store


class SQLiteStore(Store):
    auto_id = "INTEGER PRIMARY KEY AUTOINCREMENT"
    placeholder = "?"

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__()

    def describe(self) -> str:
        return str(self.path)

    def _transaction(self) -> Any:
        return self._conn

    def _connect(self) -> Any:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=10000")
        except (OSError, sqlite3.Error) as exc:
            raise StateError(
                f"cannot open the state store {self.path}: {exc}",
                "check that the folder exists and is writable",
            ) from exc
        # Explicit transactions through the context manager below.
        conn.isolation_level = "DEFERRED"
        return conn
