"""One backup job per database at a time, across processes."""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from verger.errors import BusyError


@contextmanager
def exclusive(folder: Path, job: str) -> Iterator[None]:
    """Hold the database's job lock, or refuse naming the job that holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "job.lock"
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        try:
            holder = json.loads(handle.read() or "{}")
        except ValueError:
            holder = {}
        handle.close()
        since = time.strftime("%H:%M:%S", time.localtime(holder.get("since", 0)))
        raise BusyError(
            f"another {holder.get('job', 'backup job')} is running for this database "
            f"(pid {holder.get('pid', '?')}, since {since})",
            "wait for it to finish, or see 'verger backup list'",
        ) from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"job": job, "pid": os.getpid(), "since": time.time()}))
        handle.flush()
        yield
    finally:
        handle.close()
