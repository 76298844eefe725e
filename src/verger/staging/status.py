"""``verger staging status``: past refreshes, and what an interrupted one left."""

from __future__ import annotations

from typing import Any

from verger.children import running
from verger.staging.databases import Server
from verger.state.base import Store


def refreshes(store: Store, server: Server, limit: int = 20) -> list[dict[str, Any]]:
    """Recent refreshes, newest first; a running one whose process died is interrupted."""
    rows = []
    for row in store.refreshes(server.live, limit):
        record = dict(row.data)
        if record["status"] == "running" and not running(record.get("pid")):
            record["status"] = "interrupted"
        rows.append(record)
    return rows


def leftovers(server: Server, rows: list[dict[str, Any]]) -> list[str]:
    """Databases of refreshes that are not running: the next refresh drops them."""
    running = {r["database"] for r in rows if r["status"] == "running"}
    return [name for name in server.half_built() if name not in running]
