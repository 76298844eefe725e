"""Backup engines, one module each, chosen by ``backup.engine``."""

from __future__ import annotations

import shutil

from verger.backup.engines.base import (
    Context,
    Engine,
    EngineBackup,
    Progress,
    RepositoryStatus,
    RestorePoint,
    WalSegment,
)
from verger.errors import BackupError

__all__ = [
    "Context",
    "Engine",
    "EngineBackup",
    "Progress",
    "RepositoryStatus",
    "RestorePoint",
    "WalSegment",
    "engine_name",
    "make_engine",
]


def engine_name(configured: str) -> str:
    """The engine ``auto`` stands for: pgBackRest where it is installed, else pg_dump."""
    if configured != "auto":
        return configured
    return "pgbackrest" if shutil.which("pgbackrest") else "pg_dump"


def make_engine(context: Context) -> Engine:
    name = engine_name(context.section.engine)
    if name == "pgbackrest":
        if not shutil.which("pgbackrest"):
            raise BackupError(
                "backup.engine is pgbackrest, but pgBackRest is not installed",
                "install it (apt-get install pgbackrest), or set backup.engine: pg_dump",
            )
        from verger.backup.engines.pgbackrest import PgBackRest

        return PgBackRest(context)
    from verger.backup.engines.pg_dump import PgDump

    return PgDump(context)
