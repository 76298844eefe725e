"""The HAProxy router's request log, read into the same Stats as the built-in router.

HAProxy writes one line per request, in the format ``REQUEST_LOG_FORMAT``,
to its standard output, which the router command appends to a file in the run
directory (emptied when HAProxy starts, so the file holds one process
lifetime). ``RequestLog`` reads that file from where it stopped last time and
adds each new line to a cumulative ``Stats``; it starts over when HAProxy was
restarted. Once it has read a file past ``COMPACT_AT`` bytes to its very end,
it saves its counters to a checkpoint and empties the file (HAProxy appends,
so its next line lands at the top), which bounds the file's size; a new reader,
after an agent restart, resumes from that checkpoint. HAProxy writes other
lines to the same stream (server state changes, alerts); they lack the marker
and are skipped.
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from verger.deploy.routers.stats import Stats

# Marker, status, active time in ms (first request byte to last response byte),
# termination state, server entry. The marker tells request lines from the
# server-state lines HAProxy writes to the same stream.
REQUEST_LOG_FORMAT = "verger-request %ST %Ta %tsc %s"

_LINE = re.compile(r"verger-request (-?\d+) (-?\d+) (\S{4}) (\S+)")

# Status codes HAProxy answers with itself when it cannot get an answer.
_GATEWAY_ERRORS = frozenset({502, 503, 504})

# Empty the file once it is read to its end past this size: about 400,000 requests.
COMPACT_AT = 16 * 1024 * 1024

# Read in pieces of this size, so a long log never sits whole in memory.
_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class RequestLine:
    """One request as HAProxy logged it."""

    status: int
    seconds: float
    termination: str

    @property
    def router_error(self) -> bool:
        """Whether HAProxy made this answer itself because the upstream failed.

        An answer passed on from the upstream has the termination state
        ``----``; a 502, 503 or 504 with any other state is HAProxy's own.
        """
        return self.status in _GATEWAY_ERRORS and self.termination[0] != "-"


def parse_line(line: str) -> RequestLine | None:
    """The request on one log line, or None for lines that are not requests."""
    match = _LINE.search(line)
    if match is None:
        return None
    status, active_ms, termination, _server = match.groups()

    # No status: the client went away before any answer, so nobody saw an error.
    if int(status) < 100:
        return None
    return RequestLine(int(status), max(int(active_ms), 0) / 1000.0, termination)


@dataclass
class RequestLog:
    """Incremental reader of one HAProxy request log file, with its checkpoint."""

    path: Path
    checkpoint: Path
    stats: Stats = field(default_factory=Stats)
    offset: int = 0
    inode: int | None = None
    # Readers run in worker threads; two at once would count lines twice.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def read(self, started: float) -> Stats:
        """Counters for the HAProxy process that started at ``started``."""
        with self._lock:
            if started != self.stats.started:
                self._restore(started)
            self._read_new_lines()
            self._compact()
            return Stats.from_dict(self.stats.to_dict())

    def _restore(self, started: float) -> None:
        """Resume from the checkpoint of this HAProxy process, or start at zero."""
        self.stats, self.offset, self.inode = Stats(started=started), 0, None
        try:
            saved = json.loads(self.checkpoint.read_text())
            if saved["stats"]["started"] == started:
                self.stats = Stats.from_dict(saved["stats"])
                self.offset, self.inode = int(saved["offset"]), int(saved["inode"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # No usable checkpoint: count this process from the top of the file.

    def _read_new_lines(self) -> None:
        try:
            with self.path.open("rb") as file:
                self._follow(os.fstat(file.fileno()))
                more = True
                while more:
                    file.seek(self.offset)
                    more = self._read_chunk(file.read(_CHUNK))
        except FileNotFoundError:
            return

    def _read_chunk(self, chunk: bytes) -> bool:
        """Count the whole lines in ``chunk``; whether there may be more to read."""
        # Only whole lines: HAProxy may be halfway through writing the last one.
        end = chunk.rfind(b"\n") + 1
        for raw in chunk[:end].splitlines():
            request = parse_line(raw.decode("utf-8", "replace"))
            if request is not None:
                self.stats.record(
                    request.status, request.seconds, router_error=request.router_error
                )
        self.offset += end
        return len(chunk) == _CHUNK and end > 0

    def _follow(self, info: os.stat_result) -> None:
        """Start from the top of a file that was replaced or truncated."""
        if info.st_ino != self.inode or info.st_size < self.offset:
            self.inode = info.st_ino
            self.offset = 0

    def _compact(self) -> None:
        """Empty a large file that is read to its end, after saving the counters."""
        if self.offset < COMPACT_AT:
            return
        with self.path.open("r+b") as file:
            if os.fstat(file.fileno()).st_size != self.offset:
                return  # HAProxy is writing a line; try at the next read.
            # Saved before and after: a crash in between leaves a checkpoint
            # whose offset is past the end of the emptied file, read as "start
            # from the top".
            self._save()
            # A line HAProxy writes between the size check and here is lost; the
            # window is a few microseconds once per COMPACT_AT bytes.
            file.truncate(0)
            self.offset = 0
            self._save()

    def _save(self) -> None:
        data = {
            "stats": self.stats.to_dict(),
            "offset": self.offset,
            "inode": self.inode,
        }
        candidate = self.checkpoint.with_name(self.checkpoint.name + ".new")
        candidate.write_text(json.dumps(data))
        os.replace(candidate, self.checkpoint)
