"""The host: CPU, memory, disk, network and load from /proc, and the app's processes."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from verger.monitor.sources.base import Reading, Source

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")

# Labels of one running process (environment, slot) -> its pid.
Processes = Callable[[], Mapping[tuple[str, str], int]]


def _cpu_times(proc: Path) -> tuple[float, float]:
    """Busy and total jiffies since boot, from the first line of /proc/stat."""
    fields = [
        float(n) for n in (proc / "stat").read_text().split("\n", 1)[0].split()[1:]
    ]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    # Guest time is already counted in user time.
    total = sum(fields[:8])
    return total - idle, total


def _meminfo(proc: Path) -> dict[str, float]:
    out = {}
    for line in (proc / "meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            out[key] = float(parts[0]) * 1024
    return out


def _network(proc: Path) -> list[Reading]:
    readings = []
    for line in (proc / "net/dev").read_text().splitlines()[2:]:
        device, _, rest = line.partition(":")
        device = device.strip()
        fields = rest.split()
        if device == "lo" or len(fields) < 9:
            continue
        labels = {"device": device}
        readings.append(
            Reading("verger_host_network_receive_bytes_total", labels, float(fields[0]))
        )
        readings.append(
            Reading(
                "verger_host_network_transmit_bytes_total", labels, float(fields[8])
            )
        )
    return readings


class HostSource(Source):
    """The machine the agent runs on, and the CPU and memory of each running release."""

    kind = "host"

    def __init__(
        self,
        every: float,
        mounts: Sequence[str] = ("/",),
        processes: Processes | None = None,
        proc: Path = Path("/proc"),
    ) -> None:
        super().__init__("host", every)
        self.mounts = list(mounts)
        self.processes = processes
        self.proc = proc
        self._last_cpu: tuple[float, float] | None = None

    async def collect(self, now: float) -> list[Reading]:
        readings = [*self._cpu(), *self._memory(), *self._disks(), *_network(self.proc)]
        load1 = (self.proc / "loadavg").read_text().split()[0]
        readings.append(Reading("verger_host_load1", {}, float(load1)))
        if self.processes is not None:
            readings.extend(self._process_readings(self.processes()))
        return readings

    def _cpu(self) -> list[Reading]:
        busy, total = _cpu_times(self.proc)
        last, self._last_cpu = self._last_cpu, (busy, total)
        if last is None or total <= last[1]:
            return []
        ratio = (busy - last[0]) / (total - last[1])
        return [Reading("verger_host_cpu_ratio", {}, round(max(0.0, ratio), 4))]

    def _memory(self) -> list[Reading]:
        info = _meminfo(self.proc)
        total = info.get("MemTotal", 0.0)
        if not total:
            return []
        available = info.get("MemAvailable", info.get("MemFree", 0.0))
        return [
            Reading("verger_host_memory_total_bytes", {}, total),
            Reading(
                "verger_host_memory_used_ratio", {}, round(1 - available / total, 4)
            ),
        ]

    def _disks(self) -> list[Reading]:
        readings = []
        for mount in self.mounts:
            try:
                stat = os.statvfs(mount)
            except OSError:
                continue
            size = stat.f_blocks * stat.f_frsize
            if not size:
                continue
            free = stat.f_bavail * stat.f_frsize
            labels = {"mount": mount}
            readings.append(Reading("verger_host_disk_size_bytes", labels, float(size)))
            readings.append(
                Reading("verger_host_disk_free_ratio", labels, round(free / size, 4))
            )
        return readings

    def _process_readings(self, pids: Mapping[tuple[str, str], int]) -> list[Reading]:
        readings = []
        for (environment, slot), pid in pids.items():
            try:
                stat = (self.proc / str(pid) / "stat").read_text()
                statm = (self.proc / str(pid) / "statm").read_text().split()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            cpu = (float(fields[11]) + float(fields[12])) / _TICKS
            labels = {"environment": environment, "slot": slot}
            readings.append(Reading("verger_process_cpu_seconds_total", labels, cpu))
            readings.append(
                Reading(
                    "verger_process_resident_bytes", labels, float(statm[1]) * _PAGE
                )
            )
        return readings
