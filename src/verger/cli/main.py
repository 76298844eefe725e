"""``verger``: one command per job, each a thin layer over a subsystem's surface."""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import json
import logging
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from verger import __version__
from verger.config import FILENAME, Loaded, find_config, load_config
from verger.config.loader import nearest_key
from verger.errors import ConfigError, DeployError, RouterError, VergerError
from verger.output import Output

if TYPE_CHECKING:
    from verger.agent.client import AgentClient

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class UsageError(VergerError):
    """The command line names something that does not exist, or a bad value."""

    exit_code = 2


class Ctx:
    def __init__(self, config: str | None, json_mode: bool, debug: bool) -> None:
        self.config_path = config
        self.out = Output(json_mode=json_mode, debug=debug)
        self.debug = debug
        self._loaded: Loaded | None = None

    @property
    def loaded(self) -> Loaded:
        if self._loaded is None:
            self._loaded = load_config(self.config_path)
        return self._loaded


pass_ctx = click.make_pass_decorator(Ctx)
_current: list[Ctx] = []


class Commands(click.Group):
    """The top-level group, which imports a command's module only when it is used.

    Every command pays Python's start-up before it does anything, and a
    backup is measured against its engine run by hand: importing the agent
    client, the monitor and the rest for it would add about a tenth of a
    second to each one. The modules named here register their commands on
    ``cli`` when imported.
    """

    lazy: dict[str, str] = {
        "backup": "verger.cli.backup",
        "restore": "verger.cli.backup",
        "dr": "verger.cli.backup",
        "silence": "verger.cli.alerting",
        "incident": "verger.cli.alerting",
        "dashboard": "verger.cli.dashboard",
        "jobs": "verger.cli.jobs",
        "monitor": "verger.cli.monitor",
        "staging": "verger.cli.staging",
    }

    def load(self, name: str) -> click.Command | None:
        if name not in self.commands and name in self.lazy:
            importlib.import_module(self.lazy[name])
        return self.commands.get(name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self.load(cmd_name)


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-c", "--config", metavar="PATH", help=f"The config file (default ./{FILENAME})."
)
@click.option("--json", "json_mode", is_flag=True, help="Write results as JSON.")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.version_option(__version__, prog_name="verger")
@click.pass_context
def cli(ctx: click.Context, config: str | None, json_mode: bool, debug: bool) -> None:
    """verger: safe releases, proven backups and alerts for a small team."""
    _log_to_stderr(debug)
    ctx.obj = Ctx(config, json_mode, debug)
    _current.append(ctx.obj)


def _log_to_stderr(debug: bool) -> None:
    """Debug logs on stderr with --debug; otherwise none, as Output says it all.

    Without a handler, Python would print warnings and errors on stderr a
    second time, beside Output's own lines. The agent logs to its own file.
    """
    root = logging.getLogger()
    if debug:
        logging.basicConfig(level=logging.DEBUG, format=LOG_FORMAT, force=True)
    elif not root.handlers:
        root.addHandler(logging.NullHandler())


# -- setup ------------------------------------------------------------------


@cli.command()
@click.option("--force", is_flag=True, help="Overwrite an existing verger.yml.")
@pass_ctx
def init(c: Ctx, force: bool) -> None:
    """Write a commented starter verger.yml for the app in this folder."""
    from verger.config.starter import write_starter

    path = write_starter(Path.cwd(), force=force)
    c.out.result(
        {"written": str(path)},
        f"Wrote {path}. Edit it, then run 'verger check'.",
    )


@cli.command()
@pass_ctx
def check(c: Ctx) -> None:
    """Check the config and the environment: binaries, ports, reachability."""
    from verger.checks import run_checks, worst

    path = Path(c.config_path) if c.config_path else Path.cwd() / FILENAME
    checks = run_checks(path)
    rows = [(ch.name, ch.status, ch.message, ch.hint) for ch in checks]
    c.out.table(
        "Checks",
        ["check", "status", "message", "hint"],
        rows,
        data=[
            {
                "name": ch.name,
                "status": ch.status,
                "message": ch.message,
                "hint": ch.hint,
            }
            for ch in checks
        ],
    )
    c.out.exit_code = worst(checks)


# -- the agent --------------------------------------------------------------


@cli.command()
@pass_ctx
def up(c: Ctx) -> None:
    """Start the agent in the background; fail when a router could not start."""
    from verger.agent.client import AgentClient

    client = AgentClient(c.loaded)
    info = client.up(c.loaded.path)
    word = "already running" if info["already"] else "started"
    problems = client.router_problems()
    if problems:
        raise _router_problems(info, problems)
    dashboard = client.dashboard_problem()
    if dashboard is not None:
        # The releases are served all the same: a line to act on, not a failure.
        c.out.warn(_dashboard_problem(dashboard))
    c.out.result(
        {
            "pid": info["pid"],
            "port": info["port"],
            "already": info["already"],
            "dashboard_problem": dashboard,
        },
        f"The agent is {word} (pid {info['pid']}).",
    )


def _dashboard_problem(problem: str) -> str:
    return (
        f"the dashboard cannot listen: {problem}; free the port (the agent tries "
        "again by itself) or change dashboard.listen and run 'verger down "
        "--keep-serving' then 'verger up'"
    )


def _router_problems(info: dict[str, Any], problems: dict[str, str]) -> RouterError:
    """One error for the routers the agent could not start, with the first remedy."""
    first = next(iter(problems))
    if len(problems) == 1:
        what = f"the {first} router could not start: {problems[first]}"
    else:
        listed = "; ".join(f"{name}: {why}" for name, why in problems.items())
        what = f"{len(problems)} routers could not start: {listed}"
    if "is taken" in problems[first]:
        hint = (
            "free the port (the agent tries again by itself), or change "
            f"environments.{first}.listen and run 'verger down --keep-serving' "
            "then 'verger up'"
        )
    else:
        hint = f"see 'verger logs {first} --router'"
    return RouterError(f"the agent is running (pid {info['pid']}), but {what}", hint)


@cli.command()
@click.option(
    "--keep-serving",
    is_flag=True,
    help="Stop only the agent; routers and releases keep serving.",
)
@pass_ctx
def down(c: Ctx, keep_serving: bool) -> None:
    """Stop the agent, and with it the routers and releases it runs."""
    from verger.agent.client import AgentClient

    try:
        client = AgentClient(c.loaded)
    except ConfigError:
        # A config broken since the agent started must not keep it running.
        client = AgentClient.without_config(find_config(c.config_path))
        if client.info() is None:
            raise
        stopped = client.down(keep_serving=keep_serving)
        c.out.result({"stopped": stopped}, "The agent stopped.")
        return
    stopped = client.down(keep_serving=keep_serving)
    human = "The agent stopped." if stopped else "The agent was not running."
    if not stopped and not keep_serving and _left_running(c):
        # Routers and releases outlive a killed agent; a new one adopts them and
        # then stops them in the same order as an ordinary 'down'.
        c.out.say(
            "The agent was not running, but routers or releases it started still "
            "run; starting an agent to stop them in order."
        )
        client.up(c.loaded.path)
        stopped = client.down(keep_serving=False)
        human = "The routers and releases the agent left running stopped."
    c.out.result({"stopped": stopped}, human)


def _left_running(c: Ctx) -> bool:
    """Whether a router or release recorded in the state store still runs."""
    from verger.deploy import process

    store = _store(c)
    for name in c.loaded.config.environments:
        row = store.environment(name)
        if row is not None and row.router_pid is not None:
            handle = process.Handle(int(row.router_pid), str(row.router_started or ""))
            if process.alive(handle):
                return True
    return any(
        release.pid is not None
        and process.alive(process.Handle(int(release.pid), str(release.pid_started)))
        for release in store.running_releases()
    )


@cli.command(hidden=True)
@pass_ctx
def agent(c: Ctx) -> None:
    """Run the agent in the foreground (what 'verger up' starts)."""
    from verger.agent.agent import serve

    logging.basicConfig(
        level=logging.DEBUG if c.debug else logging.INFO, format=LOG_FORMAT, force=True
    )
    _run_async(serve(c.loaded))


def _run_async(coro: Any) -> Any:
    import asyncio

    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


# -- deploys ----------------------------------------------------------------


def _default_version(source: Path) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(source), "describe", "--always", "--dirty", "--tags"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def _follow(c: Ctx, client: AgentClient, deploy_id: int) -> dict[str, Any]:
    """Print a deploy's events as they come and return its result."""
    result: dict[str, Any] = {"status": "unknown"}
    try:
        for event in client.follow(deploy_id):
            if event["kind"] == "result":
                result = event
            elif event.get("message"):
                c.out.say(event["message"])
    except KeyboardInterrupt:
        c.out.warn(
            f"stopped following; deploy #{deploy_id} goes on in the agent "
            "('verger status' shows it)"
        )
        raise SystemExit(130) from None
    return result


def _deploy(
    c: Ctx,
    environment: str,
    source: Path,
    version: str,
    force: bool,
) -> dict[str, Any]:
    from verger.agent.client import AgentClient
    from verger.state import actor

    client = AgentClient(c.loaded)
    started = client.call(
        "POST",
        "/v1/deploys",
        {
            "kind": "deploy",
            "environment": environment,
            "source": str(source.resolve()),
            "version": version,
            "force": force,
            "actor": actor(),
        },
    )
    deploy_id = int(started["deploy_id"])
    c.out.say(f"Deploy #{deploy_id}: {version} to {environment}.")
    result = _follow(c, client, deploy_id)
    result["deploy_id"] = deploy_id
    result["environment"] = environment
    result["version"] = version
    return result


def _finish(c: Ctx, result: dict[str, Any]) -> None:
    status = result.get("status")
    if status == "succeeded":
        verdict = result.get("verdict", "")
        c.out.result(
            result,
            f"Deploy #{result['deploy_id']} of {result['version']} to "
            f"{result['environment']} succeeded"
            + (f" (watch window {verdict})." if verdict else "."),
        )
        return
    reason = result.get("reason") or "no reason recorded"
    if status == "rolled_back":
        raise DeployError(
            f"{result['version']} was rolled back in {result['environment']}: {reason}",
            "the previous release is serving again; see 'verger logs "
            f"{result['environment']}' for the failed release's output",
        )
    raise DeployError(
        f"deploy of {result['version']} to {result['environment']} failed: {reason}",
        result.get("hint") or "the live release keeps serving",
    )


@cli.command()
@click.argument("environment")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option(
    "--version", "version", help="The release's version (default: git describe)."
)
@click.option(
    "--force", is_flag=True, help="Skip the gate of the environment it requires."
)
@click.option(
    "--yes", is_flag=True, help="Approve an environment with approval: manual."
)
@pass_ctx
def deploy(
    c: Ctx,
    environment: str,
    path: Path | None,
    version: str | None,
    force: bool,
    yes: bool,
) -> None:
    """Deploy the app in PATH (default: the config's folder) to ENVIRONMENT."""
    _known(c, environment)
    source = _source(c, path)
    version = _version(version or _default_version(source))
    _approve(c, environment, version, yes, force)
    _finish(c, _deploy(c, environment, source, version, force))


def _source(c: Ctx, path: Path | None) -> Path:
    source = path if path is not None else c.loaded.root
    if not source.is_dir():
        raise DeployError(
            f"no release folder at {source}",
            "pass the folder holding the app, or run from it",
        )
    return source


@cli.command()
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option(
    "--version", "version", help="The release's version (default: git describe)."
)
@click.option("--force", is_flag=True, help="Skip promotion gates.")
@click.option("--yes", is_flag=True, help="Approve environments with approval: manual.")
@pass_ctx
def release(
    c: Ctx, path: Path | None, version: str | None, force: bool, yes: bool
) -> None:
    """Release PATH through every environment in order: staging, then production.

    An environment where this version is already live, and passed its watch
    window, is skipped.
    """
    from verger.deploy import gate

    source = _source(c, path)
    version = _version(version or _default_version(source))
    store = _store(c)
    results: list[dict[str, Any]] = []
    for environment in c.loaded.config.order():
        if gate.live_and_passed(store, environment, version):
            c.out.say(
                f"{version} is already live in {environment} and passed its watch "
                f"window there; skipping {environment}."
            )
            results.append(
                {"environment": environment, "version": version, "status": "skipped"}
            )
            continue
        _approve(c, environment, version, yes, force)
        result = _deploy(c, environment, source, version, force)
        results.append(result)
        if result.get("status") != "succeeded":
            _finish(c, result)
    c.out.result({"version": version, "deploys": results}, _released(version, results))


def _released(version: str, results: list[dict[str, Any]]) -> str:
    done = [r["environment"] for r in results if r.get("status") != "skipped"]
    skipped = [r["environment"] for r in results if r.get("status") == "skipped"]
    if not done:
        return (
            f"{version} was already live in {', '.join(skipped)}; nothing to release."
        )
    already = f" (already live in {', '.join(skipped)})" if skipped else ""
    return f"Released {version} to {', '.join(done)}{already}."


def _version(version: str) -> str:
    """The version, or a command-line error (exit 2) naming the rule."""
    from verger.deploy.version import check_version

    try:
        return check_version(version)
    except DeployError as exc:
        raise UsageError(exc.message, exc.hint) from None


def _approve(
    c: Ctx, environment: str, version: str, yes: bool, force: bool = False
) -> None:
    """Ask for approval where the environment wants it, once its gate would let in."""
    from verger.deploy import gate

    requires = c.loaded.config.environments[environment].requires
    if requires is not None and not force:
        # Asking first would hide the real reason the deploy cannot go ahead.
        refused = gate.refusal(_store(c), environment, requires, version)
        if refused is not None:
            raise refused
    if c.loaded.config.environments[environment].approval != "manual" or yes:
        return
    if not sys.stdin.isatty():
        raise DeployError(
            f"{environment} needs approval and there is no terminal to ask on",
            "pass --yes to approve",
        )
    if not click.confirm(f"Release {version} to {environment}?", default=False):
        raise DeployError(
            f"the release of {version} to {environment} was not approved",
            "run it again and answer y, or pass --yes",
        )


@cli.command()
@click.argument("environment")
@click.option(
    "--to", "to_version", metavar="VERSION", help="The release to go back to."
)
@pass_ctx
def rollback(c: Ctx, environment: str, to_version: str | None) -> None:
    """Switch ENVIRONMENT back to the previous release (or --to VERSION)."""
    from verger.agent.client import AgentClient
    from verger.state import actor

    _known(c, environment)
    client = AgentClient(c.loaded)
    started = client.call(
        "POST",
        "/v1/deploys",
        {
            "kind": "rollback",
            "environment": environment,
            "to": to_version,
            "actor": actor(),
        },
    )
    deploy_id = int(started["deploy_id"])
    result = _follow(c, client, deploy_id)
    result.update(deploy_id=deploy_id, environment=environment)
    if result.get("status") != "succeeded":
        raise DeployError(
            f"rollback of {environment} failed: {result.get('reason')}",
            result.get("hint") or "the live release keeps serving",
        )
    back_to = f" to {result['version']}" if result.get("version") else ""
    c.out.result(result, f"Rolled {environment} back{back_to}.")


# -- reading ------------------------------------------------------------------


def _store(c: Ctx) -> Any:
    from verger.state import open_store

    return open_store(c.loaded.config.state, c.loaded.root)


@cli.command()
@click.argument("environment", required=False)
@pass_ctx
def status(c: Ctx, environment: str | None) -> None:
    """What runs where: routers, live and warm releases, unfinished deploys."""
    import asyncio

    from verger.agent.client import AgentClient
    from verger.deploy.status import environment_status

    _known(c, environment)
    store = _store(c)
    client = AgentClient(c.loaded)
    info = client.info()
    problems: dict[str, str] = {}
    dashboard: str | None = None
    if info is not None:
        with contextlib.suppress(VergerError):
            problems = client.router_problems()
            dashboard = client.dashboard_problem()
    records = asyncio.run(
        environment_status(
            c.loaded, store, environment, info is not None, router_problems=problems
        )
    )
    agent = {"running": info is not None, "pid": info["pid"] if info else None}
    if c.out.json_mode:
        c.out.result(
            {"agent": agent, "environments": records, "dashboard_problem": dashboard}
        )
        return
    c.out.say(f"Agent: running (pid {agent['pid']})" if info else "Agent: not running")
    if dashboard is not None:
        c.out.warn(_dashboard_problem(dashboard))
    c.out.table(
        "Environments",
        ["environment", "listen", "router", "live", "warm", "last deploy"],
        [_status_row(r) for r in records],
    )
    for record in records:
        for row in record["unfinished"]:
            c.out.warn(_unfinished(record["environment"], row))
        if record["router"]["problem"]:
            c.out.warn(
                f"{record['environment']}: the router could not start: "
                f"{record['router']['problem']}"
            )
        if record["router"]["running"] and not record["consistent"]:
            c.out.warn(
                f"{record['environment']}: the router sends users to "
                f"{(record['router']['routes_to'] or {}).get('address', 'nothing')}, "
                "which is not the release recorded as live"
            )


def _unfinished(environment: str, row: dict[str, Any]) -> str:
    what = f"{environment}: {row['kind']} #{row['id']} of {row['version']}"
    if row["status"] == "running":
        return (
            f"{what} is running at step {row['step']}, started "
            f"{row['age_s']:.0f}s ago; other deploys there wait for it"
        )
    return (
        f"{what} was interrupted at step {row['step']}; the next deploy or rollback "
        "finishes or undoes it"
    )


def _status_row(record: dict[str, Any]) -> list[str]:
    router = record["router"]
    router_text = f"{router['kind']} " + ("up" if router["running"] else "DOWN")
    live = record["live"]
    live_text = "-"
    if live:
        state = "" if live["running"] else " (NOT RUNNING)"
        live_text = f"{live['version']} :{live['port']}{state}"
    warm = ", ".join(p["version"] for p in record["previous"]) or "-"
    last = record["last_deploy"]
    last_text = "-"
    if last:
        last_text = f"#{last['id']} {last['version']} {last['status']}"
    return [
        record["environment"],
        record["listen"],
        router_text,
        live_text,
        warm,
        last_text,
    ]


def _known(c: Ctx, environment: str | None) -> None:
    environments = list(c.loaded.config.environments)
    if environment is None or environment in environments:
        return
    near = nearest_key(environment, environments)
    raise UsageError(
        f"no environment {environment!r} in {c.loaded.path.name}"
        + (f"; did you mean {near!r}?" if near else ""),
        f"use one of: {', '.join(environments)}",
    )


@cli.command()
@click.argument("environment", required=False)
@click.option(
    "--limit", default=20, show_default=True, help="How many deploys to show."
)
@pass_ctx
def history(c: Ctx, environment: str | None, limit: int) -> None:
    """Past deploys and rollbacks, newest first."""
    _known(c, environment)
    rows = _store(c).deploys(environment, limit=limit)
    data = [
        {
            "id": r.id,
            "environment": r.environment,
            "kind": r.kind,
            "version": r.version,
            "status": r.status,
            "verdict": r.verdict,
            "switch_ms": None
            if r.switch_seconds is None
            else round(r.switch_seconds * 1000, 1),
            "rollback_ms": None
            if r.rollback_seconds is None
            else round(r.rollback_seconds * 1000, 1),
            "actor": r.actor,
            "started_at": r.started_at,
            "finished_at": r.finished_at,
            "reason": r.reason,
        }
        for r in rows
    ]
    c.out.table(
        "History",
        [
            "#",
            "environment",
            "kind",
            "version",
            "status",
            "watch",
            "switch",
            "by",
            "when",
            "reason",
        ],
        [
            [
                d["id"],
                d["environment"],
                d["kind"],
                d["version"],
                d["status"],
                d["verdict"] or "",
                "" if d["switch_ms"] is None else f"{d['switch_ms']}ms",
                d["actor"],
                _when(d["started_at"]),
                d["reason"] or "",
            ]
            for d in data
        ],
        data=data,
    )


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


@cli.command()
@click.argument("environment")
@click.option(
    "--release", "which", metavar="VERSION", help="A release other than the live one."
)
@click.option("--router", "router_log", is_flag=True, help="The router's log instead.")
@click.option(
    "-n",
    "--lines",
    default=50,
    show_default=True,
    type=click.IntRange(min=0),
    help="How many lines.",
)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@pass_ctx
def logs(
    c: Ctx,
    environment: str,
    which: str | None,
    router_log: bool,
    lines: int,
    follow: bool,
) -> None:
    """The output of an environment's live release (or another, or its router)."""
    from verger.deploy.process import tail
    from verger.deploy.slots import Slots

    _known(c, environment)
    store = _store(c)
    slots = Slots(c.loaded, store)
    if router_log:
        path = c.loaded.state_dir / "logs" / f"router-{environment}.log"
    else:
        path = _release_log(c, store, slots, environment, which)
    text = tail(path, lines) if lines else []
    human = "\n".join(text) if text else f"({path} is empty)"
    c.out.result({"path": str(path), "lines": text}, human if lines else None)
    if follow and not c.out.json_mode:
        _follow_file(c, path)


def _follow_file(c: Ctx, path: Path) -> None:
    """Print what is appended to a log file until interrupted."""
    offset = path.stat().st_size if path.exists() else 0
    try:
        while True:
            size = path.stat().st_size if path.exists() else 0
            if size < offset:
                offset = 0
            if size > offset:
                with open(path, "rb") as handle:
                    handle.seek(offset)
                    chunk = handle.read(size - offset)
                offset = size
                c.out.console.out(chunk.decode("utf-8", "replace"), end="")
            time.sleep(0.25)
    except KeyboardInterrupt:
        return


@cli.command()
@click.argument("environment", required=False)
@click.option("--limit", default=50, show_default=True, help="How many entries.")
@pass_ctx
def audit(c: Ctx, environment: str | None, limit: int) -> None:
    """Who did what: deploys, rollbacks and recoveries, newest first."""
    _known(c, environment)
    rows = _store(c).audit_trail(environment, limit=limit)
    data = [
        {
            "at": r.at,
            "actor": r.actor,
            "action": r.action,
            "environment": r.environment,
            "detail": json.loads(r.detail or "{}"),
        }
        for r in rows
    ]
    c.out.table(
        "Audit trail",
        ["when", "who", "action", "environment", "detail"],
        [
            [
                _when(d["at"]),
                d["actor"],
                d["action"],
                d["environment"] or "",
                ", ".join(f"{k}={v}" for k, v in d["detail"].items()),
            ]
            for d in data
        ],
        data=data,
    )


def _release_log(
    c: Ctx, store: Any, slots: Any, environment: str, which: str | None
) -> Path:
    releases = store.releases(environment, limit=200)
    if which is None:
        env = store.environment(environment)
        chosen = store.release(env.live_release) if env else None
        chosen = chosen or (releases[0] if releases else None)
    else:
        chosen = next(
            (r for r in releases if r.version == which or str(r.id) == which), None
        )
    if chosen is None:
        raise VergerError(
            f"no release {which or ''} in {environment}".replace("  ", " "),
            f"see 'verger history {environment}'",
        )
    path: Path = slots.log_path(chosen)
    return path


GLOBAL_FLAGS = ("--json", "--debug")
GLOBAL_VALUES = ("-c", "--config")


def hoist_globals(args: list[str]) -> list[str]:
    """Move --json, --debug and -c PATH given after a subcommand to the front.

    Click reads a group's options only before its subcommand; people type
    ``verger status --json``. A subcommand's own options keep their place
    and their values, so ``--version --json`` stays a version, and nothing
    after ``--`` moves.
    """
    front: list[str] = []
    rest: list[str] = []
    command: click.Command = cli
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        name = arg.split("=", 1)[0]
        own = _option(command, name) if command is not cli else None
        if arg == "--":
            rest.extend(args[index - 1 :])
            break
        if own is not None:
            rest.append(arg)
            if "=" not in arg and not (own.is_flag or own.count):
                rest.extend(args[index : index + own.nargs])
                index += own.nargs
        elif arg in GLOBAL_FLAGS or (name == "--config" and "=" in arg):
            front.append(arg)
        elif arg in GLOBAL_VALUES:
            front.extend(args[index - 1 : index + 1])
            index += 1
        elif arg.startswith("-c") and len(arg) > 2 and _option(command, "-c") is None:
            front.append(arg)
        else:
            rest.append(arg)
            if isinstance(command, Commands):
                command.load(arg)
            if isinstance(command, click.Group) and arg in command.commands:
                command = command.commands[arg]
    return front + rest


def _option(command: click.Command, name: str) -> click.Option | None:
    for param in command.params:
        if (
            isinstance(param, click.Option)
            and name in param.opts + param.secondary_opts
        ):
            return param
    return None


def main() -> None:
    """Run the CLI: one error line and a hint on failure, never a traceback unless --debug."""
    args = hoist_globals(sys.argv[1:])
    debug = "--debug" in args
    json_mode = "--json" in args
    _log_to_stderr(debug)
    try:
        cli.main(args=args, prog_name="verger", standalone_mode=False)
    except VergerError as exc:
        out = Output(json_mode=json_mode, debug=debug)
        if debug:
            traceback.print_exc()
        sys.exit(out.error(exc))
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        sys.exit(Output(json_mode=json_mode).error(_from_click(exc, args)))
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if debug:
            raise
        out = Output(json_mode=json_mode)
        sys.exit(
            out.error(
                VergerError(
                    f"unexpected error: {type(exc).__name__}: {exc}",
                    "run again with --debug for the traceback, and report it",
                )
            )
        )
    sys.exit(_current[-1].out.exit_code if _current else 0)


def _from_click(exc: click.ClickException, args: list[str]) -> VergerError:
    """A command-line mistake click found, as verger's one line and a hint."""
    context = getattr(exc, "ctx", None)
    where = context.command_path if context is not None else _named(args)
    error = UsageError if isinstance(exc, click.UsageError) else VergerError
    return error(exc.format_message(), f"see '{where} --help'")


def _named(args: list[str]) -> str:
    """The command ``args`` name, as far as they name one ("verger staging refresh").

    Some mistakes (an option given a value it does not take) reach verger
    without click's context, so the path is found from the words themselves;
    the global options hoisted to the front are passed over.
    """
    path: list[str] = ["verger"]
    command: click.Command = cli
    words = iter(args)
    for word in words:
        if word in GLOBAL_VALUES:
            next(words, None)
            continue
        if word.startswith("-"):
            continue
        if isinstance(command, Commands):
            command.load(word)
        if not isinstance(command, click.Group) or word not in command.commands:
            break
        path.append(word)
        command = command.commands[word]
    return " ".join(path)


__all__ = ["Commands", "cli", "main"]
