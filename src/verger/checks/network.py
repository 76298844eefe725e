"""Checks of the network: each environment's listen port, each webhook's host."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from verger.checks.base import Check, Context, register
from verger.config import split_listen
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
    for name, environment in loaded.config.environments.items():
        yield port_check(f"port.{name}", environment.listen)


def port_check(name: str, listen: str) -> Check:
    """Whether ``listen`` is free: ok, warn when something listens, fail otherwise."""
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

    # The router of a running verger holds this port too; telling it apart from
    # a stranger needs the agent's record of its router, so both only warn.
    if _listening(family, host, port):
        return Check(
            name,
            "warn",
            f"something is listening on {listen}",
            "fine if it is verger's router; otherwise find it with "
            f"ss -ltnp 'sport = :{port}'",
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


def webhook_check(name: str, url: str, timeout: float = CONNECT_TIMEOUT) -> Check:
    """Whether the webhook's host:port accepts a TCP connection within ``timeout``."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    shown = mask_url(url)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        return Check(
            name,
            "warn",
            f"cannot connect to {shown} ({host}:{port}): {reason}",
            "check the URL and the firewall; deploys go on without the notices",
            severity="warning",
        )
    return Check(name, "ok", f"{shown} accepts connections", severity="warning")
