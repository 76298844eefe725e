"""Checks of alerting: that monitor: has receivers, and that each one can be reached."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

from verger.checks.base import Check, Context, register
from verger.checks.network import connect_problem
from verger.config.alerting import Receiver
from verger.notify import mask_url

CONNECT_TIMEOUT = 3.0


@register("receivers", order=75)
def check_receivers(context: Context) -> Iterator[Check]:
    """A monitor with no receiver warns; each receiver's host must accept TCP."""
    loaded = context.loaded
    if loaded is None:
        yield Check("receivers", "skip", "the config is not valid", severity="info")
        return
    monitor = loaded.config.monitor
    if monitor is None:
        yield Check("receivers", "skip", "no monitor: section", severity="info")
        return
    if not monitor.receivers:
        yield Check(
            "receivers",
            "warn",
            "monitor: has no receivers, so alerts reach nobody",
            "add receivers under monitor: such as page: {pagerduty: ...}",
            severity="warning",
        )
        return
    for name, receiver in monitor.receivers.items():
        yield receiver_check(name, receiver)


def receiver_check(
    name: str, receiver: Receiver, timeout: float = CONNECT_TIMEOUT
) -> Check:
    """Whether a receiver's host:port accepts a TCP connection within ``timeout``."""
    host, port, shown = _address(receiver)
    label = f"receiver.{name}"
    reason = connect_problem(host, port, timeout)
    if reason is not None:
        return Check(
            label,
            "warn",
            f"{receiver.kind} receiver {name}: cannot connect to {shown}: {reason}",
            "check the address and the firewall; until then its alerts are retried "
            "and logged, never delivered",
            severity="warning",
        )
    return Check(
        label, "ok", f"{receiver.kind} receiver {name}: {shown} accepts connections"
    )


def _address(receiver: Receiver) -> tuple[str, int, str]:
    """The host, port and a secret-free spelling of where a receiver sends."""
    if receiver.smtp is not None:
        host, _, number = receiver.smtp.rpartition(":")
        return host.strip("[]"), int(number), receiver.smtp
    url = receiver.webhook or receiver.ticket
    if url is None:
        assert receiver.pagerduty is not None
        url = receiver.pagerduty.url
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.hostname or "", port, mask_url(url)
