"""Checks of the network: each environment's listen port, each webhook's host."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from verger.checks.base import Check, Context, register
from verger.config import Loaded, split_listen
from verger.errors import VergerError
from verger.notify import mask_url

CONNECT_TIMEOUT = 2.0
# Wildcard addresses are reached through loopback when probing who listens.
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


@register("ports", order=40)
def check_ports(context: Context) -> Iterator[Check]:
    """Each environment's listen address can be bound, or is already served."""
    loaded = context.loaded
    if loaded is None:
        yield Check("ports", "skip", "the config is not valid", severity="info")
        return
    routers = _router_groups(loaded)
    for name, environment in loaded.config.environments.items():
        yield port_check(f"port.{name}", environment.listen, routers.get(name))


def _router_groups(loaded: Loaded) -> dict[str, int]:
    """The process group of each environment's router, as the state store records it."""
    from verger.state import open_store

    path = loaded.root / loaded.config.state
    if not loaded.config.state.startswith("postgres") and not path.exists():
        return {}
    try:
        store = open_store(loaded.config.state, loaded.root)
    except VergerError:
        return {}
    try:
        return {
            row.name: int(row.router_pid)
            for row in store.environments()
            if row.router_pid is not None
        }
    finally:
        store.close()


def port_check(name: str, listen: str, router_group: int | None = None) -> Check:
    """Whether ``listen`` is free or held by this environment's router.

    A port held by another process fails, naming it; one that cannot be bound
    with nothing listening fails with the reason.
    """
    host, port = split_listen(listen)
    try:
        family, address = _address(host, port)
    except OSError as exc:
        return Check(
            name,
            "fail",
            f"cannot resolve {host}: {exc}",
            "use an IP address such as 127.0.0.1 or 0.0.0.0",
        )

    bind_error = _try_bind(family, address)
    if bind_error is None:
        return Check(name, "ok", f"{listen} is free")

    if _listening(family, host, port):
        holder = listener_pid(port)
        if holder is not None and router_group is not None:
            try:
                if os.getpgid(holder) == router_group:
                    return Check(name, "ok", f"{listen} is served by verger's router")
            except ProcessLookupError:
                pass
        who = f" (pid {holder}: {_command(holder)})" if holder else ""
        return Check(
            name,
            "fail" if holder is not None else "warn",
            f"{listen} is taken by another process{who}",
            f"stop it, or change this environment's listen; see ss -ltnp 'sport = :{port}'",
        )
    return Check(
        name,
        "fail",
        f"cannot bind {listen}: {bind_error.strerror}",
        _bind_hint(bind_error, host, port),
    )


def _address(host: str, port: int) -> tuple[int, Any]:
    infos = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    family, _, _, _, address = infos[0]
    return family, address


def _try_bind(family: int, address: Any) -> OSError | None:
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As a server would bind: sockets left in TIME_WAIT do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            return exc
    return None


def _listening(family: int, host: str, port: int) -> bool:
    target = _LOOPBACK.get(host, host)
    try:
        with socket.create_connection((target, port), timeout=0.5):
            return True
    except OSError:
        return False


def _bind_hint(error: OSError, host: str, port: int) -> str:
    if error.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine; use 127.0.0.1 or 0.0.0.0"
    if error.errno == errno.EACCES:
        return "ports below 1024 need root or CAP_NET_BIND_SERVICE; pick a higher one"
    return (
        "a socket holds the port without listening; "
        f"find it with ss -tanp 'sport = :{port}'"
    )


@register("webhooks", order=70)
def check_webhooks(context: Context) -> Iterator[Check]:
    """Each webhook's host accepts a TCP connection; a miss only warns."""
    loaded = context.loaded
    if loaded is None:
        yield Check("webhooks", "skip", "the config is not valid", severity="info")
        return
    webhooks = loaded.config.notify.webhooks
    if not webhooks:
        yield Check("webhooks", "skip", "no webhooks configured", severity="info")
        return
    for number, webhook in enumerate(webhooks, start=1):
        yield webhook_check(f"webhook.{number}", webhook.url)


def connect_problem(host: str, port: int, timeout: float) -> str | None:
    """Why ``host:port`` does not accept a TCP connection, or None when it does."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__


def webhook_check(name: str, url: str, timeout: float = CONNECT_TIMEOUT) -> Check:
    """Whether the webhook's host:port accepts a TCP connection within ``timeout``."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    shown = mask_url(url)
    reason = connect_problem(host, port, timeout)
    if reason is not None:
        return Check(
            name,
            "warn",
            f"cannot connect to {shown} ({host}:{port}): {reason}",
            "check the URL and the firewall; deploys go on without the notices",
            severity="warning",
        )
    return Check(name, "ok", f"{shown} accepts connections", severity="warning")


def listener_pid(port: int) -> int | None:
    """The pid of the process holding a listening TCP socket on ``port``, if visible."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # Field 3 is the state; 0A is LISTEN. Field 9 is the socket's inode.
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    return int(entry.name)
        except OSError:
            continue
    return None


def _command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()[:60]
