"""The embedded metric store: one SQLite file of compressed six-hour blocks.

New samples go to a head table (so that a restart loses nothing); once a
six-hour span has passed, each series' samples of that span are packed into
one raw block and one five-minute rollup block. Raw blocks are kept for
``retention``, rollups for ``rollup_retention``. A range query reads raw
blocks for short spans and rollups for long ones, so that 30 days of one
series is 8,640 points rather than 259,200.

A rollup bucket keeps min, max, sum, count and last for charts and the
``*_over_time`` functions (min and max exactly, being samples), and the
first value and the sum of the values just before each drop (a counter's
resets) so that a counter's increase over rollups is the increase of its raw
samples: last - first + resets inside each bucket. Without them a bucket is
one point, and a series whose whole rise fits in its first bucket (a burst
of errors just after it appeared) would show no increase at all. A block
whose samples fall more often than one in ten is a gauge (a counter only
falls when its process restarts): its buckets keep neither, since a rate of
a gauge means nothing, and it costs what it did before. The price: a
counter restarting more often than every ten samples is read from rollups
as each bucket's last value, so what it counted inside a bucket before a
restart is lost; keeping both columns for every block would remove that for
about 6% more bytes.
"""

from __future__ import annotations

import bisect
import itertools
import json
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from verger.errors import VergerError
from verger.monitor.store import codec

# Six hours of one series per block: long enough to compress well and to read
# 30 days in 120 blocks, short enough that the head table stays small.
BLOCK = 6 * 3600.0
ROLLUP = 300.0
# Spans longer than this are read from rollups unless raw samples are asked for.
RAW_SPAN = 6 * 3600.0
# Samples falling more often than this share of the time are a gauge's.
GAUGE_FALLS = 0.1

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS series (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        labels TEXT NOT NULL,
        UNIQUE (name, labels)
    )""",
    """CREATE TABLE IF NOT EXISTS head (
        series_id INTEGER NOT NULL,
        t REAL NOT NULL,
        v REAL NOT NULL,
        PRIMARY KEY (series_id, t)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS blocks (
        id INTEGER PRIMARY KEY,
        series_id INTEGER NOT NULL,
        resolution REAL NOT NULL,
        start REAL NOT NULL,
        end REAL NOT NULL,
        count INTEGER NOT NULL,
        data BLOB NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS blocks_by_series ON blocks (series_id, resolution, end)",
]


class StoreError(VergerError):
    """The metric store cannot be opened, read or written."""


Labels = Mapping[str, str]


@dataclass(frozen=True)
class Matcher:
    """One label condition of a selector: ``=``, ``!=``, ``=~`` or ``!~``."""

    label: str
    op: str
    value: str

    def matches(self, labels: Labels) -> bool:
        actual = labels.get(self.label, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        found = _regex(self.value).fullmatch(actual) is not None
        return found if self.op == "=~" else not found


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


@dataclass
class Buckets:
    """What each rollup bucket holds besides its last value.

    ``firsts`` is the bucket's first sample and ``resets`` the sum of the
    values just before each drop inside it, so that the bucket's increase is
    ``last - first + resets``; ``lows``, ``highs``, ``sums`` and ``counts``
    are its samples' min, max, sum and number, for the ``*_over_time``
    functions.
    """

    firsts: list[float] = field(default_factory=list)
    resets: list[float] = field(default_factory=list)
    lows: list[float] = field(default_factory=list)
    highs: list[float] = field(default_factory=list)
    sums: list[float] = field(default_factory=list)
    counts: list[float] = field(default_factory=list)


@dataclass
class Series:
    """One series' samples in a time range, oldest first.

    Read from rollups, a sample is a bucket's last value at the bucket's end
    and ``buckets`` holds the rest of what a rate needs; read raw it is None.
    """

    name: str
    labels: dict[str, str]
    times: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    buckets: Buckets | None = None


def _key(labels: Labels) -> str:
    return json.dumps(dict(sorted(labels.items())), separators=(",", ":"))


def _rollup(times: Sequence[float], values: Sequence[float]) -> list[list[float]]:
    """Five-minute buckets of time-ordered samples as columns.

    The columns are: end time, min, max, sum, count, last, first, resets.
    """
    buckets: dict[float, list[float]] = {}
    for t, v in zip(times, values, strict=True):
        end = (t // ROLLUP + 1) * ROLLUP
        b = buckets.get(end)
        if b is None:
            buckets[end] = [v, v, v, 1.0, v, v, 0.0]
            continue
        b[0], b[1] = min(b[0], v), max(b[1], v)
        b[2] += v
        b[3] += 1
        if v < b[4]:
            b[6] += b[4]
        b[4] = v
    ends = sorted(buckets)
    return [ends, *([buckets[e][i] for e in ends] for i in range(7))]


def _decimal(total: float) -> float:
    """A sum as the decimal of six places it is within rounding, or as it is."""
    rounded = round(total, 6)
    return rounded if abs(rounded - total) <= 1e-12 * abs(total) else total


def _counts(values: Sequence[float]) -> bool:
    """Whether time-ordered samples read as a counter's: they rarely fall."""
    falls = sum(1 for a, b in itertools.pairwise(values) if b < a)
    return falls <= GAUGE_FALLS * len(values)


class MetricStore:
    """Series by name and labels, with their samples, in one file.

    >>> store = MetricStore(Path(".verger/metrics.db"))
    >>> store.write([("up", {"job": "app"}, 1700000000.0, 1.0)])
    >>> store.select("up", [], 1699999000.0, 1700000000.0)[0].values
    [1.0]
    """

    def __init__(
        self,
        path: Path,
        retention: float = 30 * 86400.0,
        rollup_retention: float = 365 * 86400.0,
    ) -> None:
        self.path = path
        self.retention = retention
        self.rollup_retention = rollup_retention
        self._lock = threading.RLock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False)
            # Blocks are a few kB each: bigger pages waste less space between
            # them. (It only takes effect on a new file, before the first table.)
            self._db.execute("PRAGMA page_size=16384")
            self._db.execute("PRAGMA journal_mode=WAL")
            # Keep the write-ahead log near 4 MB rather than letting it grow.
            self._db.execute("PRAGMA wal_autocheckpoint=256")
            self._db.execute(f"PRAGMA journal_size_limit={8 << 20}")
            self._db.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                self._db.execute(statement)
            self._db.commit()
        except sqlite3.Error as exc:
            raise StoreError(
                f"cannot open the metric store {path}: {exc}",
                "check that the folder is writable and the file is not damaged",
            ) from exc
        self._series: dict[tuple[str, str], int] = {}
        self._labels: dict[int, tuple[str, dict[str, str]]] = {}
        self._last: dict[int, float] = {}
        for sid, name, labels in self._db.execute(
            "SELECT id, name, labels FROM series"
        ):
            self._series[(name, labels)] = sid
            self._labels[sid] = (name, json.loads(labels))
        for sid, last in self._db.execute(
            "SELECT series_id, max(t) FROM head GROUP BY series_id"
        ):
            self._last[sid] = last
        self._decoded: dict[int, tuple[list[float], list[list[float]]]] = {}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _series_id(self, name: str, labels: Labels) -> int:
        key = (name, _key(labels))
        sid = self._series.get(key)
        if sid is None:
            cursor = self._db.execute(
                "INSERT INTO series (name, labels) VALUES (?, ?)", key
            )
            sid = int(cursor.lastrowid or 0)
            self._series[key] = sid
            self._labels[sid] = (name, dict(sorted(labels.items())))
        return sid

    def write(self, samples: Iterable[tuple[str, Labels, float, float]]) -> int:
        """Append samples (name, labels, time, value) in one transaction; how many."""
        with self._lock:
            rows = []
            for name, labels, t, v in samples:
                sid = self._series_id(name, labels)
                rows.append((sid, t, v))
                self._last[sid] = max(t, self._last.get(sid, t))
            # A second sample at the same instant replaces the first.
            self._db.executemany("INSERT OR REPLACE INTO head VALUES (?, ?, ?)", rows)
            self._db.commit()
            return len(rows)

    def compact(self, now: float) -> int:
        """Pack every finished hour of the head into blocks and apply retention."""
        with self._lock:
            cutoff = now // BLOCK * BLOCK
            rows = self._db.execute(
                "SELECT series_id, t, v FROM head WHERE t < ? ORDER BY series_id, t",
                (cutoff,),
            ).fetchall()
            packed = self._pack(rows)
            self._db.execute("DELETE FROM head WHERE t < ?", (cutoff,))
            self._db.execute(
                "DELETE FROM blocks WHERE resolution = 0 AND end < ?",
                (now - self.retention,),
            )
            self._db.execute(
                "DELETE FROM blocks WHERE resolution > 0 AND end < ?",
                (now - self.rollup_retention,),
            )
            self._db.commit()
            self._decoded.clear()
            return packed

    def _pack(self, rows: list[tuple[int, float, float]]) -> int:
        groups: dict[tuple[int, float], tuple[list[float], list[float]]] = {}
        for sid, t, v in rows:
            times, values = groups.setdefault((sid, t // BLOCK * BLOCK), ([], []))
            times.append(t)
            values.append(v)
        blocks = []
        for (sid, start), (times, values) in groups.items():
            blocks.append(
                (sid, 0.0, start, times[-1], len(times), codec.encode(times, [values]))
            )
            ends, low, high, total, count, last, first, resets = _rollup(times, values)
            # Min and max are samples, so they pack as well as the samples do;
            # a sum of decimals is rounded back to the decimal it is.
            sums = [_decimal(v) for v in total]
            counting = [first, resets] if _counts(values) else []
            blocks.append(
                (
                    sid,
                    ROLLUP,
                    start,
                    ends[-1],
                    len(ends),
                    codec.encode(ends, [low, high, sums, count, last, *counting]),
                )
            )
        self._db.executemany(
            "INSERT INTO blocks (series_id, resolution, start, end, count, data) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            blocks,
        )
        return len(rows)

    def matching(
        self, name: str | None, matchers: Sequence[Matcher]
    ) -> list[tuple[int, str, dict[str, str]]]:
        """The series (id, name, labels) a selector names."""
        found = []
        for sid, (series_name, labels) in self._labels.items():
            if name is not None and series_name != name:
                continue
            full = {"__name__": series_name, **labels}
            if all(m.matches(full) for m in matchers):
                found.append((sid, series_name, labels))
        return found

    def select(
        self,
        name: str | None,
        matchers: Sequence[Matcher],
        start: float,
        end: float,
        rollup: bool | None = None,
    ) -> list[Series]:
        """Samples with ``start <= t <= end`` of every matching series that has any.

        With rollups (the default for spans over six hours) a sample is the
        last value of each five-minute bucket, at the bucket's end, and the
        series' ``buckets`` hold each bucket's first value and resets.
        """
        use_rollup = end - start > RAW_SPAN if rollup is None else rollup
        with self._lock:
            out = []
            for sid, series_name, labels in self.matching(name, matchers):
                if self._last.get(sid, float("inf")) < start:
                    continue
                if use_rollup:
                    series = self._rollups(sid, start, end)
                else:
                    series = Series(series_name, {}, *self._raw(sid, start, end))
                if series.times:
                    series.name, series.labels = series_name, dict(labels)
                    out.append(series)
            return out

    def _blocks(
        self, sid: int, resolution: float, start: float, end: float
    ) -> Iterator[tuple[list[float], list[list[float]]]]:
        for (block_id,) in self._db.execute(
            "SELECT id FROM blocks WHERE series_id = ? AND resolution = ? "
            "AND end >= ? AND start <= ? ORDER BY start, id",
            (sid, resolution, start, end),
        ).fetchall():
            yield self._decode(block_id)

    def _raw(
        self, sid: int, start: float, end: float
    ) -> tuple[list[float], list[float]]:
        pairs: list[tuple[float, float]] = []
        for times, (values,) in self._blocks(sid, 0.0, start, end):
            pairs.extend(
                (t, v) for t, v in zip(times, values, strict=True) if start <= t <= end
            )
        pairs += self._db.execute(
            "SELECT t, v FROM head WHERE series_id = ? AND t >= ? AND t <= ? ORDER BY t",
            (sid, start, end),
        ).fetchall()
        pairs.sort()
        return [t for t, _ in pairs], [v for _, v in pairs]

    def _rollups(self, sid: int, start: float, end: float) -> Series:
        # Columns: end, last, first, resets, min, max, sum, count.
        columns: list[list[float]] = [[] for _ in range(8)]
        for times, stored in self._blocks(sid, ROLLUP, start, end):
            low = bisect.bisect_left(times, start)
            high = bisect.bisect_right(times, end)
            last = stored[4][low:high]
            # A gauge's block, or one packed before they were kept: last values.
            firsts = stored[5][low:high] if len(stored) > 5 else last
            resets = stored[6][low:high] if len(stored) > 6 else [0.0] * len(last)
            for column, part in zip(
                columns,
                [times[low:high], last, firsts, resets]
                + [c[low:high] for c in stored[:4]],
                strict=True,
            ):
                column += part
        self._head_rollups(sid, start, end, columns)
        if any(b < a for a, b in itertools.pairwise(columns[0])):
            # Samples written late were packed into a block of their own.
            rows = sorted(zip(*columns, strict=True))
            columns = [list(c) for c in zip(*rows, strict=True)]
        ends, last, firsts, resets, lows, highs, sums, counts = columns
        return Series(
            "", {}, ends, last, Buckets(firsts, resets, lows, highs, sums, counts)
        )

    def _head_rollups(
        self, sid: int, start: float, end: float, columns: list[list[float]]
    ) -> None:
        """Add the head's samples to ``columns`` as the buckets they will pack into."""
        head = self._db.execute(
            "SELECT t, v FROM head WHERE series_id = ? AND t >= ? AND t <= ? ORDER BY t",
            (sid, start - ROLLUP, end),
        ).fetchall()
        if not head:
            return
        values = [v for _, v in head]
        ends, low, high, total, count, last, first, resets = _rollup(
            [t for t, _ in head], values
        )
        if not _counts(values):
            first, resets = last, [0.0] * len(ends)
        i = bisect.bisect_left(ends, start)
        # The bucket still filling ends now, not in the future.
        parts = [[min(e, end) for e in ends[i:]]]
        parts += [c[i:] for c in (last, first, resets, low, high, total, count)]
        for column, part in zip(columns, parts, strict=True):
            column += part

    def _decode(self, block_id: int) -> tuple[list[float], list[list[float]]]:
        cached = self._decoded.get(block_id)
        if cached is None:
            (data,) = self._db.execute(
                "SELECT data FROM blocks WHERE id = ?", (block_id,)
            ).fetchone()
            cached = codec.decode(data)
            if len(self._decoded) > 4096:
                self._decoded.clear()
            self._decoded[block_id] = cached
        return cached

    def last_seen(self, name: str, labels: Labels) -> float | None:
        """When a series last had a sample, or None if it never had one."""
        sid = self._series.get((name, _key(labels)))
        if sid is None:
            return None
        if sid in self._last:
            return self._last[sid]
        row = self._db.execute(
            "SELECT max(end) FROM blocks WHERE series_id = ? AND resolution = 0", (sid,)
        ).fetchone()
        return float(row[0]) if row and row[0] is not None else None

    def names(self) -> list[str]:
        """Every metric name the store holds, sorted."""
        return sorted({name for name, _ in self._labels.values()})

    def size(self) -> int:
        """Bytes on disk, counting SQLite's write-ahead log."""
        files = [self.path, self.path.with_name(self.path.name + "-wal")]
        return sum(f.stat().st_size for f in files if f.exists())
