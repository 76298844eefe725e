"""Maintenance windows: recurring times, in a named time zone, when alerts are muted.

A window starts at local wall-clock times (a cron expression or weekly days
and a start time) and lasts ``duration`` of wall-clock time in its zone, so
"Saturday 23:00 for 4h" ends at 03:00 local on Sunday, even on the night the
clocks change (the window is then 3 or 5 hours long). A start time the
clocks skip is taken as the moment they jump; one they pass twice as its
first occurrence.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

from verger.config.alerting import DAYS, Maintenance
from verger.monitor.alerting.matchers import Matcher, equal_matchers, matches_all

# Cron numbers weekdays from Sunday = 0.
_CRON_DAY = {day: (index + 1) % 7 for index, day in enumerate(DAYS)}
# Enough starts to cover an every-minute window a day long, and no more.
_MAX_STARTS = 2000


@dataclass(frozen=True)
class Window:
    """One configured window, ready to answer whether an instant falls inside it."""

    name: str
    zone: ZoneInfo
    cron: str
    duration: timedelta
    matchers: tuple[Matcher, ...]

    @classmethod
    def from_config(cls, section: Maintenance) -> Window:
        cron = section.cron
        if cron is None:
            assert section.weekly is not None
            hour, minute = (int(part) for part in section.weekly.start.split(":")[:2])
            days = ",".join(str(_CRON_DAY[day]) for day in section.weekly.days)
            cron = f"{minute} {hour} * * {days}"
        return cls(
            name=section.name,
            zone=ZoneInfo(section.timezone),
            cron=cron,
            duration=timedelta(seconds=section.duration),
            matchers=equal_matchers(section.match),
        )

    def applies(self, labels: Mapping[str, str]) -> bool:
        return matches_all(self.matchers, labels)

    def active(self, now: float) -> tuple[float, float] | None:
        """The (start, end) of the occurrence ``now`` falls in, as timestamps, or None."""
        for start, end in self._occurrences(now):
            if start <= now < end:
                return start, end
        return None

    def _occurrences(self, now: float) -> Iterator[tuple[float, float]]:
        """Occurrences that could hold ``now``, newest start first."""
        local = datetime.fromtimestamp(now, self.zone).replace(tzinfo=None)
        # Two hours of slack on each side cover any offset change in between.
        earliest = local - self.duration - timedelta(hours=2)
        starts = croniter(self.cron, local + timedelta(hours=2))
        for _ in range(_MAX_STARTS):
            wall: datetime = starts.get_prev(datetime)
            if wall < earliest:
                return
            yield self._stamp(wall), self._stamp(wall + self.duration)

    def _stamp(self, wall: datetime) -> float:
        """A local wall time as a timestamp; one the clocks skip is when they jump."""
        after = wall.replace(tzinfo=self.zone, fold=0).timestamp()
        if datetime.fromtimestamp(after, self.zone).replace(tzinfo=None) == wall:
            return after
        before = wall.replace(tzinfo=self.zone, fold=1).timestamp()
        return _jump(self.zone, before, after)


def _jump(zone: ZoneInfo, before: float, after: float) -> float:
    """The instant between ``before`` and ``after`` at which the zone's offset changes."""
    offset = datetime.fromtimestamp(after, zone).utcoffset()
    low, high = int(before), int(after)
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == offset:
            high = middle
        else:
            low = middle
    return float(high)


def windows(sections: list[Maintenance]) -> list[Window]:
    return [Window.from_config(section) for section in sections]


def muting(
    windows: list[Window], labels: Mapping[str, str], now: float
) -> Window | None:
    """The first window in effect at ``now`` that applies to an alert's labels."""
    for window in windows:
        if window.applies(labels) and window.active(now) is not None:
            return window
    return None
