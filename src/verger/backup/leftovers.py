"""What a killed verger left behind, found and put right by the next command.

A restore, verification or drill killed with SIGKILL cannot clean up after
itself: its scratch PostgreSQL server keeps running, a restore target may be
half-written, its backup or drill row still says "running", and pgBackRest
processes it started may still hold the stanza's lock. Every backup command
(and so the agent's every cycle, through ``backup watch``) calls ``tidy``
first, which ends those processes, stops those servers, removes half-written
targets and marks orphaned backups and drills interrupted, so nothing
half-done is counted.
"""

from __future__ import annotations

import logging
from pathlib import Path

from verger.backup.cluster import clean_stale
from verger.backup.engines.base import Context
from verger.backup.engines.pgbackrest import CONFIG_NAME
from verger.backup.runs import mark_orphans
from verger.children import end, orphans
from verger.state.base import Store

log = logging.getLogger("verger.backup")


def tidy(context: Context, store: Store) -> list[str]:
    """Clean up after killed restores, verifications and drills; say what was done."""
    said = _end_engine_orphans(context)
    said += clean_stale(context.scratch)
    said += mark_orphans(store, context.database)
    for sentence in said:
        log.warning(sentence)
    return said


def _end_engine_orphans(context: Context) -> list[str]:
    """End the pgBackRest processes a dead verger started for this database.

    They hold the stanza's lock and would refuse the next backup; the
    server's own archive-push and archive-get are never touched.
    """
    config = f"--config={context.state / CONFIG_NAME}"

    def ours(words: list[str]) -> bool:
        return (
            Path(words[0]).name == "pgbackrest"
            and config in words
            and not any(word.startswith("archive-") for word in words)
        )

    found = end(orphans(ours))
    if not found:
        return []
    listed = ", ".join(str(pid) for pid in found)
    return [f"Ended pgBackRest processes {listed}, left running by a killed verger."]
