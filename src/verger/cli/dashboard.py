"""``verger dashboard``: the URL of the ops dashboard, with its token."""

from __future__ import annotations

import socket

from verger.agent.client import AgentClient
from verger.cli.main import Ctx, cli, pass_ctx
from verger.config.types import split_listen
from verger.errors import VergerError

RESTART = "'verger down --keep-serving' then 'verger up'"


class DashboardError(VergerError):
    """The dashboard is not configured, or no agent serves it."""


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2.0):
            return True
    except OSError:
        return False


@cli.command()
@pass_ctx
def dashboard(c: Ctx) -> None:
    """Print the dashboard's URL with its token (open it once; the browser keeps it)."""
    from verger.web import read_token

    section = c.loaded.config.dashboard
    if section is None:
        raise DashboardError(
            f"there is no dashboard in {c.loaded.path.name}",
            f"add 'dashboard: {{listen: 127.0.0.1:9300}}' to it, then run {RESTART}",
        )
    if AgentClient(c.loaded).info() is None:
        raise DashboardError(
            "the agent is not running, so nothing serves the dashboard",
            "start it with 'verger up'",
        )
    host, port = split_listen(section.listen)
    # A wildcard address is reached on loopback from this host.
    reach = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    token = read_token(c.loaded.state_dir)
    if token is None or not _answers(reach, port):
        raise DashboardError(
            f"the agent runs but the dashboard does not answer on {section.listen}",
            f"the agent log ({c.loaded.state_dir / 'agent.log'}) says why; "
            f"after a change to dashboard: run {RESTART}",
        )
    address = f"[{reach}]" if ":" in reach else reach
    url = f"http://{address}:{port}/?token={token}"
    c.out.result({"url": url, "listen": section.listen, "token": token}, url)
