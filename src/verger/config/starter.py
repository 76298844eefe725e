"""``verger init``: a commented starter verger.yml for the app in a folder.

The starter guesses the build and start commands from the files it finds
(package.json, pyproject.toml or requirements.txt, go.mod, Gemfile, a
Procfile's ``web:`` line) and writes every key with what it means and its
default, so the file doubles as the reference for its own settings::

    path = write_starter(Path("."))  # ./verger.yml
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from verger.config.loader import FILENAME
from verger.config.model import NAME
from verger.errors import ConfigError, VergerError

# Commands made of these characters can be a plain YAML scalar, if they read back.
_PLAIN = re.compile(r"^[A-Za-z0-9_./$][A-Za-z0-9_./$~+=@ &;|()<>-]*$")
_UNKNOWN_START = "./start.sh"


@dataclass(frozen=True)
class Guess:
    """What the folder's files say about building and starting the app."""

    kind: str
    build: str | None
    start: str
    note: str = ""


def starter_text(folder: Path) -> str:
    """The starter verger.yml for the app in ``folder``, as text."""
    guess = detect(folder)
    return _render(app_name(folder), guess)


def write_starter(folder: Path, *, force: bool = False) -> Path:
    """Write ``folder/verger.yml``, refusing to replace one unless ``force``."""
    if not folder.is_dir():
        raise ConfigError(
            f"{folder} is not a folder", "run 'verger init' in the app's folder"
        )
    path = folder / FILENAME
    if path.exists() and not force:
        # The config is fine; the command was refused, so not the config's exit code.
        raise VergerError(f"{path} already exists", "use --force to overwrite")

    text = starter_text(folder)

    # Write beside and rename, so an interrupted init never leaves half a file.
    partial = path.with_name(f".{FILENAME}.{os.getpid()}.tmp")
    try:
        partial.write_text(text, encoding="utf-8")
        partial.replace(path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ConfigError(
            f"cannot write {path}: {exc}", "check the folder's permissions"
        ) from exc
    return path


def app_name(folder: Path) -> str:
    """The folder's name made into a valid app name: lowercase, letters first."""
    name = folder.resolve().name.lower()
    name = re.sub(r"[^a-z0-9_-]+", "-", name)
    name = re.sub(r"^[^a-z]+", "", name)[:40].rstrip("-_")
    return name if NAME.match(name) else "app"


def detect(folder: Path) -> Guess:
    """Guess the app's kind and commands; a Procfile's web: line sets the start."""
    guess = (
        _node(folder)
        or _python(folder)
        or _go(folder)
        or _ruby(folder)
        or Guess("unknown", None, _UNKNOWN_START)
    )
    web = _procfile_web(folder)
    if web is not None:
        return Guess(guess.kind, guess.build, web, "from the Procfile's web: line")
    return guess


def _node(folder: Path) -> Guess | None:
    manifest = folder / "package.json"
    if not manifest.is_file():
        return None
    try:
        package = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        package = {}
    if not isinstance(package, dict):
        package = {}
    scripts = package.get("scripts")
    scripts = scripts if isinstance(scripts, dict) else {}

    install = "npm ci" if (folder / "package-lock.json").is_file() else "npm install"
    build = f"{install} && npm run build" if "build" in scripts else install
    return Guess("Node.js", build, _node_start(scripts, package.get("main")))


def _node_start(scripts: dict[str, object], main: object) -> str:
    start = scripts.get("start")
    # A plain "node file" script runs directly, so signals reach the app, not npm.
    if isinstance(start, str) and re.fullmatch(r"node [\w./-]+", start.strip()):
        return start.strip()
    if isinstance(start, str):
        return "npm start"
    if isinstance(main, str) and main:
        return f"node {main}"
    return "node server.js"


def _python(folder: Path) -> Guess | None:
    if (folder / "requirements.txt").is_file():
        install = ".venv/bin/pip install -r requirements.txt"
    elif (folder / "pyproject.toml").is_file():
        install = ".venv/bin/pip install ."
    else:
        return None
    build = f"python3 -m venv .venv && {install}"
    for entry in ("app.py", "main.py", "server.py"):
        if (folder / entry).is_file():
            return Guess("Python", build, f".venv/bin/python {entry}")
    return Guess("Python", build, _UNKNOWN_START)


def _go(folder: Path) -> Guess | None:
    if not (folder / "go.mod").is_file():
        return None
    return Guess("Go", "go build -o bin/app .", "./bin/app")


def _ruby(folder: Path) -> Guess | None:
    if not (folder / "Gemfile").is_file():
        return None
    if (folder / "bin" / "rails").is_file():
        start = "bundle exec rails server -b 127.0.0.1 -p $PORT"
    elif (folder / "config.ru").is_file():
        start = "bundle exec rackup --host 127.0.0.1 --port $PORT"
    else:
        start = _UNKNOWN_START
    return Guess("Ruby", "bundle install", start)


def _procfile_web(folder: Path) -> str | None:
    procfile = folder / "Procfile"
    if not procfile.is_file():
        return None
    try:
        lines = procfile.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for line in lines:
        kind, sep, command = line.partition(":")
        if sep and kind.strip() == "web" and command.strip():
            return command.strip()
    return None


def _scalar(text: str) -> str:
    """A YAML scalar for ``text``: plain when safe, else double-quoted."""
    if _PLAIN.match(text) and _reads_back(text):
        return text
    # JSON's double-quoted strings are valid YAML with the same meaning.
    return json.dumps(text)


def _reads_back(text: str) -> bool:
    """Whether ``text`` as a plain scalar is read back as the same string."""
    try:
        value = YAML(typ="safe").load(f"key: {text}\n")
    except YAMLError:
        return False
    return isinstance(value, dict) and value.get("key") == text


def _start_comment(guess: Guess) -> str:
    if guess.start == _UNKNOWN_START:
        return (
            "# could not tell how this app starts: replace with the command that\n"
            "# serves HTTP on $PORT (required; verger picks a free port per slot)\n"
        )
    if guess.note:
        return f"# {guess.note}; it must serve HTTP on $PORT (required)\n"
    return "# must serve HTTP on $PORT (required; verger picks a free port per slot)\n"


def _build_lines(guess: Guess) -> str:
    if guess.build is None:
        return (
            "# build: make              # run in each release folder before start;\n"
            "#                          # default: no build step\n"
        )
    return (
        f"# run in each release folder before start ({guess.kind}); default: none\n"
        f"build: {_scalar(guess.build)}\n"
    )


def _render(app: str, guess: Guess) -> str:
    return (
        _HEADER.format(app=app, kind=guess.kind)
        + _build_lines(guess)
        + "\n"
        + _start_comment(guess)
        + f"start: {_scalar(guess.start)}\n"
        + _BODY
    )


_HEADER = """\
# verger.yml: how verger builds, releases and watches this app.
# Detected: {kind}. Check each setting, then run 'verger check'.
# Durations: 250ms, 30s, 5m, 1h, 7d (a bare number means seconds).
# Rates: 1% or 0.01. ${{NAME}} is replaced by the environment variable NAME.

# the app's name, lowercase letters, digits, - and _ (required)
app: {app}

# where verger keeps its state: a SQLite file under this folder (default)
# or a postgresql:// URL shared by a team
state: .verger/state.db

"""

_BODY = """\

health:                     # how verger decides a new release is ready
  path: /health             # GET this path; any 2xx is healthy (default /health)
  interval: 1s              # time between health checks (default 1s)
  timeout: 2s               # one health check's time limit (default 2s)
  healthy_after: 3          # passes in a row before ready (default 3)
  start_timeout: 60s        # give up on a release not ready by then (default 60s)

# smoke tests run against the new release before any user sees it
# (default: none); BASE_URL points at the new slot
smoke: []
#  - http: GET /health       # an HTTP request: METHOD /path
#    expect: 200             # status wanted (default: any 2xx)
#    contains: ok            # text the body must contain (default: none)
#    timeout: 10s            # time limit (default 10s)
#  - run: npm run test:smoke # or a command that must exit 0

watch:                      # the watch window after the switch; a breach rolls back
  duration: 2m              # how long to watch (default 2m)
  max_error_rate: 1%        # 5xx answers and failed requests (default 1%)
  max_p95: 1s               # 95th percentile latency (default 1s)
  min_requests: 1           # requests needed before judging a rate (default 1)
  interval: 1s              # how often the rates are read (default 1s)

# keep the previous release warm this long for an instant rollback (default 30m)
keep_previous: 30m

environments:               # named places the app runs, at least one (required)
  staging:
    listen: 127.0.0.1:8081  # where the router takes users' requests (required)
    router: builtin         # builtin or haproxy (default builtin)
    approval: auto          # auto or manual: ask before switching (default auto)
    drain_timeout: 30s      # time for requests in flight to finish (default 30s)
    env: {}                 # variables for the app, e.g. DATABASE_URL (default none)
  production:
    listen: 127.0.0.1:8080
    requires: staging       # only releases that passed staging (default: none)
    approval: manual

notify:                     # who hears about deploys (default: nobody)
  webhooks: []              # URLs to POST deploy events to (default: none)
#    - https://hooks.slack.com/services/T000/B000/XXXX
#    - url: https://example.com/hooks/deploys
#      events: [failed, rolled_back]  # default: started, succeeded, failed,
#                                     # rolled_back, and the backup alerts:
#                                     # backup_failed, backup_stale,
#                                     # verify_failed, archiving_failed,
#                                     # drill_missed

# the app's PostgreSQL databases by name (default: none)
databases: {}
#  production: postgresql://postgres@127.0.0.1/app

# backups of one of them; a backup counts once a restore proved it
# (default: no backups). Uncomment and point database: at a name above.
#backup:
#  engine: auto              # pgbackrest (physical, WAL, point-in-time) or pg_dump
#                            # (logical, for managed databases); auto picks
#                            # pgbackrest where installed (default auto)
#  database: production      # a name under databases: (default production)
#  repository:
#    path: .verger/backups   # a local folder (default), or:
#    # s3: {endpoint: s3.us-east-1.amazonaws.com, bucket: my-backups,
#    #      region: us-east-1, key: ${AWS_ACCESS_KEY_ID},
#    #      secret: ${AWS_SECRET_ACCESS_KEY}}
#    cold_after: 90d         # move backups to cold storage after this (S3)
#  passphrase: ${VERGER_BACKUP_PASSPHRASE}  # encrypts the repository (required;
#                            # without it nothing can be restored: keep a copy)
#  run_as: postgres          # the user that owns the cluster, when verger runs
#                            # as root (PostgreSQL refuses to run as root)
#  archive_timeout: 60s      # the longest WAL waits before it is archived
#  schedule:                 # cron, UTC: the agent runs these
#    full: "0 */6 * * *"     # a full backup every 6 hours (default)
#    verify: true            # restore each new backup to prove it (default)
#    drill: "0 3 * * 0"      # a recovery drill weekly (default)
#    watch: "* * * * *"      # check archiving and freshness, alert (default)
#  retention:
#    full: 28                # keep at least this many full backups (default 28)
#    window: 30d             # and every point in time this far back (default 30d)
#  targets:
#    rpo: 1h                 # most data a disaster may lose (default 1h)
#    rto: 4h                 # longest a restore may take (default 4h)

# the ops dashboard: a web page and JSON API served by the agent, behind a
# token; 'verger dashboard' prints its URL (default: no dashboard)
#dashboard:
#  listen: 127.0.0.1:9300    # HOST:PORT to serve it on
"""
