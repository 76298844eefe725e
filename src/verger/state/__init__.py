"""The state store: SQLite by default, PostgreSQL when ``state:`` is a URL."""

from __future__ import annotations

from pathlib import Path

from verger.state.base import DEPLOY_ENDED, Row, Store, actor


def open_store(state: str, root: Path) -> Store:
    """Open (and upgrade in place) the store named by the config's ``state:``."""
    if state.startswith(("postgresql://", "postgres://")):
        from verger.state.postgres import PostgresStore

        return PostgresStore(state)
    from verger.state.sqlite import SQLiteStore

    path = Path(state)
    return SQLiteStore(path if path.is_absolute() else root / path)


__all__ = ["DEPLOY_ENDED", "Row", "Store", "actor", "open_store"]
