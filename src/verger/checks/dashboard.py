"""Checks of the dashboard: its port is free or the agent's, and who can reach it."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from verger.agent.files import AgentFiles
from verger.checks.base import Check, Context, register
from verger.checks.network import listener_pid, port_check
from verger.config import split_listen

_WILDCARDS = ("", "0.0.0.0", "::")


@register("dashboard", order=45)
def check_dashboard(context: Context) -> Iterator[Check]:
    """dashboard.listen can be listened on (or the agent does), and stays on loopback."""
    loaded = context.loaded
    if loaded is None:
        yield Check("dashboard", "skip", "the config is not valid", severity="info")
        return
    section = loaded.config.dashboard
    if section is None:
        yield Check("dashboard", "skip", "no dashboard configured", severity="info")
        return
    yield _port(section.listen, AgentFiles(context.state_dir))
    yield _reach(section.listen)


def _port(listen: str, files: AgentFiles) -> Check:
    """Free, or held by this project's agent; anything else would get the token."""
    found = port_check("dashboard.port", listen)
    if found.status == "ok":
        return found
    info = files.read_info()
    holder = listener_pid(split_listen(listen)[1])
    if info is not None and holder is not None and holder == int(info["pid"]):
        return Check("dashboard.port", "ok", f"{listen} is served by verger's agent")
    if "is taken" not in found.message:
        return Check("dashboard.port", found.status, found.message, found.hint)
    return Check(
        "dashboard.port",
        found.status,
        found.message,
        "stop that program or change dashboard.listen: the agent cannot listen "
        "there, and 'verger dashboard' refuses to print the URL",
    )


def _reach(listen: str) -> Check:
    """A warning when the plain-HTTP dashboard listens beyond this host."""
    host, _ = split_listen(listen)
    if _loopback(host):
        return Check(
            "dashboard.listen", "ok", f"{listen} is reached from this host only"
        )
    return Check(
        "dashboard.listen",
        "warn",
        f"the dashboard listens on {listen} in plain HTTP, reachable from other hosts",
        "keep it on 127.0.0.1 (reach it with 'ssh -L 9300:127.0.0.1:9300'), "
        "or put it behind a TLS proxy",
        severity="warning",
    )


def _loopback(host: str) -> bool:
    if host in _WILDCARDS:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
