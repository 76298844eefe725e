"""``verger dashboard``: the URL of the ops dashboard, with its token."""

from __future__ import annotations

from verger.agent.client import AgentClient
from verger.cli.main import Ctx, cli, pass_ctx
from verger.config.types import split_listen
from verger.errors import VergerError

RESTART = "'verger down --keep-serving' then 'verger up'"


class DashboardError(VergerError):
    """The dashboard is not configured, or the agent does not serve it."""


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
    # The agent says whether it listens: a port that answers may be another
    # program's, which must not be handed the token.
    state = AgentClient(c.loaded).dashboard()
    _refuse_unless_listening(c, state, section.listen)
    host, port = split_listen(str(state["listen"]))
    # A wildcard address is reached on loopback from this host.
    reach = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    token = read_token(c.loaded.state_dir)
    if token is None:
        raise DashboardError(
            f"there is no dashboard token in {c.loaded.state_dir}",
            f"run {RESTART}: the agent makes one",
        )
    address = f"[{reach}]" if ":" in reach else reach
    url = f"http://{address}:{port}/?token={token}"
    c.out.result({"url": url, "listen": state["listen"], "token": token}, url)


def _refuse_unless_listening(c: Ctx, state: dict[str, object], listen: str) -> None:
    """One error line when the running agent's dashboard is not the configured one."""
    log = c.loaded.state_dir / "agent.log"
    if not state.get("configured"):
        raise DashboardError(
            "the agent started before the dashboard: section was added",
            f"run {RESTART}",
        )
    if not state.get("listening"):
        raise DashboardError(
            f"the dashboard does not listen on {state['listen']}: {state['problem']}",
            "free the port (the agent tries again by itself), or change "
            f"dashboard.listen and run {RESTART}; {log} says more",
        )
    if state["listen"] != listen:
        raise DashboardError(
            f"the agent serves the dashboard on {state['listen']}, "
            f"not on {listen} as {c.loaded.path.name} says",
            f"run {RESTART} to move it",
        )
