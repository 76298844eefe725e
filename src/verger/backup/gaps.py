"""Gaps in the WAL archive, found from segment names alone.

An engine's own verify checks the files it has; it does not say that a
segment in the middle of the chain was never archived or was deleted. WAL
segment names count up without holes within a timeline, so a missing name
between a backup's first segment and the newest one is a gap, and every point
in time from the newest commit before it to the first backup taken after it
cannot be restored: recovery to a time stops at a commit, so a segment archived
after the newest commit reaches no later point.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from verger.backup.engines.base import EngineBackup, WalSegment

SEGMENT_SIZE = 16 * 1024 * 1024
# How many segments, newest first, are read for a commit before giving up:
# each costs a fetch and a pg_waldump.
COMMIT_SEARCH = 4

# Given segment names newest first, the newest commit time in them, or None.
LastCommit = Callable[[list[str]], float | None]


def segments_per_log(segment_size: int = SEGMENT_SIZE) -> int:
    return 0x100000000 // segment_size


def number(name: str, segment_size: int = SEGMENT_SIZE) -> tuple[int, int]:
    """A segment's timeline and position in its timeline, from its name."""
    timeline = int(name[0:8], 16)
    log, segment = int(name[8:16], 16), int(name[16:24], 16)
    return timeline, log * segments_per_log(segment_size) + segment


def name(timeline: int, position: int, segment_size: int = SEGMENT_SIZE) -> str:
    log, segment = divmod(position, segments_per_log(segment_size))
    return f"{timeline:08X}{log:08X}{segment:08X}"


@dataclass(frozen=True)
class Gap:
    """Missing segments ``first``..``last`` and the time range they break."""

    first: str
    last: str
    count: int
    broken_from: float | None
    broken_until: float | None

    def sentence(self, when: Callable[[float | None], str]) -> str:
        span = self.first if self.count == 1 else f"{self.first} to {self.last}"
        until = when(self.broken_until) if self.broken_until else "now"
        since = when(self.broken_from) if self.broken_from else "the backup before it"
        what = (
            "a WAL segment is" if self.count == 1 else f"{self.count} WAL segments are"
        )
        return (
            f"{what} missing from the archive ({span}): no restore can reach "
            f"a point from {since} until {until}"
        )


def newest_commit(
    segments: list[WalSegment], last_commit: LastCommit, before: str | None = None
) -> float | None:
    """The newest commit time in the archive, or in the segments before ``before``.

    ``segments`` are in archive order, oldest first. None when no commit is
    found in the newest few segments.
    """
    names = [s.name for s in segments if before is None or s.name[8:] < before[8:]]
    return last_commit(names[::-1][:COMMIT_SEARCH]) if names else None


def find_gaps(
    backups: list[EngineBackup],
    segments: list[WalSegment],
    segment_size: int = SEGMENT_SIZE,
    last_commit: LastCommit | None = None,
) -> list[Gap]:
    """Missing segments between the oldest backup's first segment and the newest one.

    With ``last_commit`` a gap is broken from the newest commit before it (what
    recovery can reach); without, from the archive time of the segment before
    it, which is cheaper and later than that commit.
    """
    starts = [b.wal_start for b in backups if b.wal_start and not b.error]
    if not starts or not segments:
        return []
    have = {s.name: s for s in segments}
    timeline, first = number(min(starts), segment_size)
    on_timeline = [s for s in segments if number(s.name, segment_size)[0] == timeline]
    if not on_timeline:
        return []
    last = max(number(s.name, segment_size)[1] for s in on_timeline)
    gaps: list[Gap] = []
    position = first
    while position <= last:
        if name(timeline, position, segment_size) in have:
            position += 1
            continue
        start = position
        while position <= last and name(timeline, position, segment_size) not in have:
            position += 1
        gap = _gap(timeline, start, position - 1, backups, have, segment_size)
        if last_commit is not None:
            commit = newest_commit(segments, last_commit, gap.first)
            if commit is not None:
                gap = replace(gap, broken_from=commit)
        gaps.append(gap)
    return gaps


def _gap(
    timeline: int,
    first: int,
    last: int,
    backups: list[EngineBackup],
    have: dict[str, WalSegment],
    segment_size: int,
) -> Gap:
    before = have.get(name(timeline, first - 1, segment_size))
    # A backup whose own WAL starts after the gap does not need the missing segments.
    healed = [
        b.finished_at
        for b in backups
        if b.wal_start
        and not b.error
        and number(b.wal_start, segment_size) > (timeline, last)
    ]
    return Gap(
        first=name(timeline, first, segment_size),
        last=name(timeline, last, segment_size),
        count=last - first + 1,
        broken_from=before.archived_at if before else None,
        broken_until=min(healed) if healed else None,
    )
