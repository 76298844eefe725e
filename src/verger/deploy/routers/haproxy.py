"""The HAProxy router: one HAProxy process per environment, driven at run time.

HAProxy is never reloaded. Its config holds one backend with two server
entries, ``a`` and ``b``; a switch writes the new upstream's address into the
entry that is not live, sets it ready and sets the live one to drain, all
through the runtime API (an admin socket in the run directory). Once nothing
is in flight on the drained entry it goes to maintenance, which closes its idle
connections. HAProxy's stats page has counters but no latency percentiles, so
the router has HAProxy log one line per request (status, active time,
termination state) to its standard output, and ``command`` starts HAProxy
through ``sh`` only to point that output at ``requests.log`` in the run
directory: a plain file survives an agent restart (a log socket would need the
agent listening), needs no syslog daemon, and ``stats`` reads it
incrementally (see ``haproxy_log``), emptying it once it passes 16 MB (about
400,000 requests). HAProxy runs one thread,
because with several it drops a log line rather than wait for another thread
to finish writing one; one thread still serves tens of thousands of requests a
second.

Example::

    router = HAProxyRouter("production", "127.0.0.1:8080", Path("run/production"))
    router.prepare(Upstream("blue", "127.0.0.1", 9001))
    process = await asyncio.create_subprocess_exec(*router.command())
    await router.switch(Upstream("green", "127.0.0.1", 9002))
"""

from __future__ import annotations

import asyncio
import csv
import ipaddress
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from verger.config.types import split_listen
from verger.deploy.routers.base import Router, Upstream
from verger.deploy.routers.haproxy_log import REQUEST_LOG_FORMAT, RequestLog
from verger.deploy.routers.stats import Stats
from verger.errors import RouterError

log = logging.getLogger(__name__)

FRONTEND = "users"
BACKEND = "slots"
ENTRIES = ("a", "b")

# An address no upstream uses, for an entry that holds nothing yet.
_PLACEHOLDER = "127.0.0.1:1"

# Runtime API answers come back in milliseconds; this only bounds a hung socket.
_API_TIMEOUT = 5.0
_DRAIN_POLL = 0.1

# Unix socket paths longer than this do not fit in sockaddr_un on Linux.
_MAX_SOCKET_PATH = 107


@dataclass(frozen=True)
class Entry:
    """One server entry of the backend, as ``show stat`` reports it."""

    name: str
    address: str
    status: str
    current: int

    @property
    def ready(self) -> bool:
        # Without health checks an entry that takes requests reports "no check".
        return self.status == "no check" or self.status.startswith("UP")


class HAProxyRouter(Router):
    """An environment's router run by HAProxy and switched through its runtime API."""

    kind: ClassVar[str] = "haproxy"
    # HAProxy stops at once on SIGTERM, cutting requests in flight; on SIGUSR1
    # it stops listening, lets them finish and exits 0.
    stop_signal: ClassVar[signal.Signals] = signal.SIGUSR1

    def __init__(
        self, environment: str, listen: str, run_dir: Path, drain_timeout: float = 30.0
    ) -> None:
        super().__init__(environment, listen, run_dir, drain_timeout)
        self.config_path = run_dir / "haproxy.cfg"
        self.socket_path = run_dir / "haproxy.sock"
        self.state_path = run_dir / "haproxy-state.json"
        self.log_path = run_dir / "requests.log"
        self._requests = RequestLog(self.log_path, run_dir / "requests-counted.json")
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._drains: set[asyncio.Task[None]] = set()
        self._dropped = 0

    def prepare(self, live: Upstream | None) -> None:
        """Write a config that serves ``live`` from the start, and the state file.

        Every switch rewrites the config too, so HAProxy started again with the
        same command, with or without ``prepare``, serves the live upstream.
        """
        if live is not None:
            _require_ip(live)
        if len(str(self.socket_path)) > _MAX_SOCKET_PATH:
            raise RouterError(
                f"the run directory {self.run_dir} is too long for HAProxy's socket",
                hint="use a shorter run directory (under 90 characters)",
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._write_config(render_config(self, live))
        self._write_state(live)

    def command(self) -> list[str]:
        """HAProxy in the foreground, its request log going to ``requests.log``."""
        # sh only empties the log and execs, so the pid is HAProxy's own. HAProxy
        # appends, so that the stats reader can empty the file under it.
        script = 'log=$1; shift; : >"$log"; exec "$@" >>"$log"'
        return [
            "/bin/sh", "-c", script, "haproxy-router", str(self.log_path),
            haproxy_binary(), "-db", "-f", str(self.config_path),
        ]  # fmt: skip

    async def ready(self) -> bool:
        try:
            return "Pid" in await self._info()
        except RouterError:
            return False

    async def live(self) -> Upstream | None:
        ready = [entry for entry in await self._entries() if entry.ready]
        state = self._read_state()
        recorded = state.get("live")
        if not ready:
            if recorded:
                log.warning(
                    "HAProxy of %s routes nowhere, although the state file records "
                    "%s as live",
                    self.environment,
                    recorded["address"],
                )
            return None

        entry = _pick_live(ready, recorded["address"] if recorded else None)
        if recorded and recorded["address"] != entry.address:
            log.warning(
                "HAProxy of %s routes to %s while the state file records %s; "
                "HAProxy is what users see",
                self.environment,
                entry.address,
                recorded["address"],
            )
        return _upstream(entry.address, state.get("slots", {}))

    async def switch(self, upstream: Upstream) -> None:
        _require_ip(upstream)
        async with self._switch_lock():
            began = time.monotonic()
            entries = await self._entries()
            target = self._target_entry(upstream, entries)
            old = [e for e in entries if e.ready and e.name != target.name]
            if target.ready and target.address == upstream.address and not old:
                log.info(
                    "%s already sends new requests to %s %s; nothing to switch",
                    self.environment,
                    upstream.slot,
                    upstream.address,
                )
                self._write_state(upstream)
                return

            if target.address != upstream.address:
                await self._assign(target.name, upstream)
            await self._flip(target.name, upstream, old)
            self._write_state(upstream)
            # Not a reload: HAProxy reads it only if it is started again.
            _write_atomically(self.config_path, render_config(self, upstream))

        self._log_switch(upstream, old, time.monotonic() - began)
        for entry in old:
            self._watch_drain(entry)

    async def inflight(self, address: str) -> int:
        return sum(e.current for e in await self._entries() if e.address == address)

    async def stats(self) -> Stats:
        info = await self._info()
        self._check_dropped(info)
        return await asyncio.to_thread(self._requests.read, self._started(info))

    async def wait_drained(self) -> None:
        """Wait until every drain begun by this router object has finished."""
        while self._drains:
            await asyncio.gather(*self._drains, return_exceptions=True)

    # Switching steps.

    def _target_entry(self, upstream: Upstream, entries: list[Entry]) -> Entry:
        """The entry that will hold ``upstream``: the one holding it already if any."""
        for entry in entries:
            if entry.address == upstream.address:
                return entry

        idle = [e for e in entries if not e.ready] or entries[-1:]
        entry = min(idle, key=lambda e: (e.status != "MAINT", e.current))
        if entry.current:
            log.warning(
                "%s switches again before the drain of %s finished; its %d requests "
                "in flight finish but are no longer counted",
                self.environment,
                self._describe(entry.address),
                entry.current,
            )
        return entry

    async def _assign(self, name: str, upstream: Upstream) -> None:
        """Point an idle entry at ``upstream``, closing its connections to the old."""
        await self._set(f"set server {BACKEND}/{name} state maint")
        await self._set(
            f"set server {BACKEND}/{name} addr {upstream.host} port {upstream.port}"
        )

    async def _flip(self, name: str, upstream: Upstream, old: list[Entry]) -> None:
        """Set the new entry ready and the old ones to drain in one runtime API call."""
        # One line, so that HAProxy applies both with nothing else between them.
        commands = [f"set server {BACKEND}/{name} state ready"]
        commands += [f"set server {BACKEND}/{e.name} state drain" for e in old]
        answer = await self._api("; ".join([*commands, f"show stat {BACKEND} 4 -1"]))

        after = {e.name: e for e in _parse_stat(answer)}
        new = after.get(name)
        if new is None or not new.ready or new.address != upstream.address:
            raise RouterError(
                f"HAProxy of {self.environment} did not switch to {upstream.address}",
                hint="read the router's output, then retry the switch",
                detail=answer,
            )
        if any(after[e.name].status != "DRAIN" for e in old if e.name in after):
            raise RouterError(
                f"HAProxy of {self.environment} did not drain the old upstream",
                hint="read the router's output, then retry the switch",
                detail=answer,
            )

    def _log_switch(self, upstream: Upstream, old: list[Entry], seconds: float) -> None:
        drained = ", ".join(self._describe(e.address) for e in old)
        log.info(
            "%s switched to %s %s in %.1f ms%s",
            self.environment,
            upstream.slot,
            upstream.address,
            seconds * 1000,
            f"; draining {drained}" if drained else "",
        )

    def _watch_drain(self, entry: Entry) -> None:
        task = asyncio.get_running_loop().create_task(self._finish_drain(entry))
        self._drains.add(task)
        task.add_done_callback(self._drains.discard)

    async def _finish_drain(self, entry: Entry) -> None:
        """Put a drained entry into maintenance once nothing is in flight on it."""
        deadline = time.monotonic() + self.drain_timeout
        try:
            while not await self._drain_step(entry, deadline):
                await asyncio.sleep(_DRAIN_POLL)
        except RouterError as error:
            log.warning(
                "the drain of %s stopped: %s", self._describe(entry.address), error
            )

    async def _drain_step(self, entry: Entry, deadline: float) -> bool:
        """One look at a draining entry; whether the drain is over."""
        async with self._switch_lock():
            now = {e.name: e for e in await self._entries()}.get(entry.name)
            if now is None or now.address != entry.address or now.status != "DRAIN":
                return True  # A later switch took the entry over.
            if now.current and time.monotonic() < deadline:
                return False

            # Maintenance closes idle connections; requests in flight still finish.
            await self._set(f"set server {BACKEND}/{entry.name} state maint")

        if now.current:
            log.warning(
                "drain timeout of %.0f s passed with %d requests in flight on %s; "
                "closing its idle connections and letting those requests finish",
                self.drain_timeout,
                now.current,
                self._describe(entry.address),
            )
        else:
            log.info(
                "drained %s of %s: no request in flight, idle connections closed",
                self._describe(entry.address),
                self.environment,
            )
        return True

    def _describe(self, address: str) -> str:
        """An address with its slot name, for log sentences: ``blue 127.0.0.1:9001``."""
        slot = _upstream(address, self._read_state().get("slots", {})).slot
        return f"{slot} {address}"

    def _switch_lock(self) -> asyncio.Lock:
        # A lock belongs to one event loop; the agent and tests may use several.
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    # Runtime API.

    async def _api(self, line: str) -> str:
        """Send one command line to HAProxy's admin socket and return its answer."""
        try:
            async with asyncio.timeout(_API_TIMEOUT):
                reader, writer = await asyncio.open_unix_connection(self.socket_path)
                try:
                    writer.write(line.encode() + b"\n")
                    await writer.drain()
                    answer = await reader.read()
                finally:
                    writer.close()
        except (OSError, TimeoutError) as error:
            raise RouterError(
                f"HAProxy of {self.environment} does not answer on {self.socket_path}",
                hint="check that the router process runs; its errors are in its "
                "standard error",
            ) from error
        return answer.decode("utf-8", "replace")

    async def _set(self, command: str) -> None:
        answer = (await self._api(command)).strip()
        # "set server ... addr" reports what changed; every other set says nothing.
        if answer and not answer.startswith(("IP changed", "no need to change")):
            raise RouterError(
                f"HAProxy of {self.environment} refused {command!r}: {answer}",
                hint="the config in the run directory may be from another version; "
                "run prepare and restart the router",
            )

    async def _entries(self) -> list[Entry]:
        entries = _parse_stat(await self._api(f"show stat {BACKEND} 4 -1"))
        if not entries:
            raise RouterError(
                f"HAProxy of {self.environment} has no backend {BACKEND!r}",
                hint="the router runs a config verger did not write; restart it",
            )
        return entries

    async def _info(self) -> dict[str, str]:
        answer = await self._api("show info")
        return dict(line.split(": ", 1) for line in answer.splitlines() if ": " in line)

    def _started(self, info: dict[str, str]) -> float:
        """When the running HAProxy process started, which names its lifetime."""
        try:
            return _process_start(int(info["Pid"]))
        except (OSError, ValueError, IndexError, StopIteration):
            # No /proc (another pid namespace): HAProxy's own, to the second.
            return float(info.get("Start_time_sec", "0"))
        except KeyError as error:
            raise RouterError(
                f"HAProxy of {self.environment} did not report its pid",
                hint="check that the router process runs",
            ) from error

    def _check_dropped(self, info: dict[str, str]) -> None:
        """Warn once per increase when HAProxy could not write request log lines."""
        dropped = int(info.get("DroppedLogs", "0") or 0)
        if dropped > self._dropped:
            log.warning(
                "HAProxy of %s dropped %d request log lines; its stats undercount",
                self.environment,
                dropped,
            )
        self._dropped = dropped

    # Files in the run directory.

    def _write_config(self, text: str) -> None:
        """Check the config with HAProxy, then put it in place atomically."""
        candidate = self.config_path.with_suffix(".cfg.new")
        candidate.write_text(text)
        result = subprocess.run(
            [haproxy_binary(), "-c", "-q", "-f", str(candidate)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()
            said = next((line for line in output.splitlines() if "ALERT" in line), "")
            raise RouterError(
                f"HAProxy rejects the config for {self.environment}"
                + (f": {said.strip()}" if said else ""),
                hint=f"the candidate config is {candidate}; check the listen address "
                f"{self.listen} and the project's path",
                detail=output,
            )
        os.replace(candidate, self.config_path)

    def _read_state(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}
        return data

    def _write_state(self, live: Upstream | None) -> None:
        """Record the live upstream, and the slot name of every address seen lately."""
        slots: dict[str, str] = dict(self._read_state().get("slots", {}))
        if live is not None:
            slots.pop(live.address, None)
            slots[live.address] = live.slot
        state = {
            "environment": self.environment,
            "live": _upstream_dict(live),
            "slots": dict(list(slots.items())[-4:]),
        }
        _write_atomically(self.state_path, json.dumps(state, indent=2) + "\n")


def render_config(router: HAProxyRouter, live: Upstream | None) -> str:
    """HAProxy's config: one frontend on the listen address, ``live`` ready in it."""
    host, port = split_listen(router.listen)
    first = live.address if live else f"{_PLACEHOLDER} disabled"
    # Long enough for the slowest request a drain lets finish.
    server_timeout = max(60.0, router.drain_timeout)
    return f"""\
# Written by verger for environment {router.environment}; switched at run time,
# never reloaded. Rewritten by every prepare and switch.
global
    stats socket {_quoted(router.socket_path)} mode 600 level admin
    stats timeout 30s
    log stdout format raw local0 info
    # One thread: with more, HAProxy drops a log line rather than wait for
    # another thread writing to stdout, and the stats would undercount.
    nbthread 1

defaults
    mode http
    log global
    log-format "{REQUEST_LOG_FORMAT}"
    option dontlognull
    option http-ignore-probes
    option http-keep-alive
    no option prefer-last-server
    http-reuse safe
    retries 2
    retry-on conn-failure empty-response
    option redispatch 1
    timeout connect 5s
    timeout client 60s
    timeout server {server_timeout:.0f}s
    timeout http-request 10s
    timeout http-keep-alive 10s
    timeout queue 10s
    timeout client-fin 5s
    timeout server-fin 5s
    # WebSockets and other upgraded connections may idle much longer.
    timeout tunnel 1h

frontend {FRONTEND}
    bind {host}:{port}
    option forwardfor
    http-request set-header X-Forwarded-Proto https if {{ ssl_fc }}
    http-request set-header X-Forwarded-Proto http if !{{ ssl_fc }}
    http-request set-header X-Forwarded-Host %[req.hdr(host)] if {{ req.hdr(host) -m found }}
    default_backend {BACKEND}

backend {BACKEND}
    balance roundrobin
    server {ENTRIES[0]} {first}
    server {ENTRIES[1]} {_PLACEHOLDER} disabled
"""


def _quoted(path: Path) -> str:
    """A path as one HAProxy word: single quotes keep spaces, $ and # literal."""
    text = str(path)
    if "'" in text:
        raise RouterError(
            f"the router's run folder {path.parent} has a single quote in its path, "
            "which HAProxy's config cannot hold",
            hint="move the project to a path without quotes, or use router: builtin",
        )
    return f"'{text}'"


def haproxy_binary() -> str:
    """The haproxy executable, also found in the sbin folders a user's PATH lacks."""
    path = os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"
    found = shutil.which("haproxy", path=path)
    if found is None:
        raise RouterError(
            "HAProxy is not installed",
            hint="install it (apt-get install haproxy) or use router: builtin",
        )
    return found


def _parse_stat(answer: str) -> list[Entry]:
    """The server rows of a ``show stat`` answer, ignoring anything before them."""
    lines = answer.splitlines()
    header = next((i for i, line in enumerate(lines) if line.startswith("# ")), None)
    if header is None:
        return []
    rows = csv.DictReader([lines[header][2:], *lines[header + 1 :]])
    return [
        Entry(row["svname"], row["addr"], row["status"], int(row["scur"] or 0))
        for row in rows
        if row.get("pxname") == BACKEND and row.get("svname") in ENTRIES
    ]


def _pick_live(ready: list[Entry], recorded: str | None) -> Entry:
    """The live entry; two ready entries only appear in the middle of a switch."""
    for entry in ready:
        if entry.address == recorded:
            return entry
    return ready[0]


def _upstream(address: str, slots: dict[str, str]) -> Upstream:
    host, port = split_listen(address)
    return Upstream(slots.get(address, "unknown"), host, port)


def _upstream_dict(upstream: Upstream | None) -> dict[str, Any] | None:
    if upstream is None:
        return None
    return {
        "slot": upstream.slot,
        "host": upstream.host,
        "port": upstream.port,
        "address": upstream.address,
    }


def _require_ip(upstream: Upstream) -> None:
    """HAProxy takes an IP address at run time, not a name to resolve."""
    try:
        ipaddress.ip_address(upstream.host)
    except ValueError as error:
        raise RouterError(
            f"upstream {upstream.address} of slot {upstream.slot} is not an IP address",
            hint="give slots an address such as 127.0.0.1",
        ) from error


def _process_start(pid: int) -> float:
    """A process's start time in seconds since the epoch, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = int(fields[19])  # starttime, the 22nd field of the whole line
    boot = next(
        int(line.split()[1])
        for line in Path("/proc/stat").read_text().splitlines()
        if line.startswith("btime ")
    )
    return round(boot + ticks / os.sysconf("SC_CLK_TCK"), 2)


def _write_atomically(path: Path, text: str) -> None:
    candidate = path.with_name(path.name + ".new")
    with candidate.open("w") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(candidate, path)
