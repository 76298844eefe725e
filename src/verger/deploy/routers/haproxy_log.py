"""The HAProxy router's request log, read into the same Stats as the built-in router.

HAProxy writes one line per request, in the format ``REQUEST_LOG_FORMAT``,
to its standard output, which the router command sends to a file in the run
directory (truncated when HAProxy starts, so the file holds exactly one process
lifetime). ``RequestLog`` reads that file from where it stopped last time and
adds each new line to a cumulative ``Stats``; it starts over when HAProxy was
restarted or the file was truncated or replaced. HAProxy writes other lines
to the same stream (server state changes, alerts); they lack the marker and
are skipped.
"""

from __future__ import annotations

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
    """Incremental reader of one HAProxy request log file."""

    path: Path
    stats: Stats = field(default_factory=Stats)
    offset: int = 0
    inode: int | None = None
    # Readers run in worker threads; two at once would count lines twice.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def read(self, started: float) -> Stats:
        """Counters for the HAProxy process that started at ``started``."""
        with self._lock:
            if started != self.stats.started:
                self.stats = Stats(started=started)
                self.offset = 0
            self._read_new_lines()
            return Stats.from_dict(self.stats.to_dict())

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
