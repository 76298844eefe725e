"""Checks of the app's config: valid, commands runnable, health path usable."""

from __future__ import annotations

import os
import re
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from verger.checks.base import Check, Context, register
from verger.config.model import Config
from verger.errors import VergerError

# Words the shell runs itself; they need no binary on PATH.
_BUILTIN_WORDS = """
    . : [ alias bg cd command echo eval exit export false fg getopts hash jobs kill
    printf pwd read readonly return set shift source test times trap true type
    ulimit umask unalias unset wait if then else elif fi for while until do done
    case esac in { } ! [[ ]]
"""
SHELL_BUILTINS = frozenset(_BUILTIN_WORDS.split())
# Words that run the command after them, which is the one to look for.
_WRAPPERS = frozenset({"exec", "env", "nohup", "command", "time"})
_SEPARATORS = frozenset({"&&", "||", ";", "|", "&", "(", ")", ";;", "|&"})
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")
# What verger sets for the app's commands (BASE_URL for smoke commands only).
_SET_BY_VERGER = frozenset({"PORT", "VERGER_ENVIRONMENT", "VERGER_VERSION", "BASE_URL"})


@register("config", order=10)
def check_config(context: Context) -> Iterator[Check]:
    """The config file is found, parses, and validates whole."""
    loaded = context.loaded
    if loaded is not None:
        names = ", ".join(loaded.config.order())
        yield Check(
            "config",
            "ok",
            f"{loaded.path} is valid: app {loaded.config.app}, environments {names}",
        )
        return
    error = context.error
    assert error is not None
    message = "\n".join([error.message, *error.problems])
    yield Check("config", "fail", message, error.hint)


@register("commands", order=20)
def check_commands(context: Context) -> Iterator[Check]:
    """Every program the build, start and smoke commands run can be found."""
    loaded = context.loaded
    if loaded is None:
        yield Check("commands", "skip", "the config is not valid", severity="info")
        return
    known = set(_SET_BY_VERGER)
    for environment in loaded.config.environments.values():
        known.update(environment.env)
    for name, key, command in _commands(loaded.config):
        unset = unset_variables(command, known)
        if unset:
            listed = ", ".join(f"${{{variable}}}" for variable in unset)
            yield Check(
                name,
                "warn",
                f"{key}: {listed} is not set here and verger does not set it, so "
                "the shell sees an empty string",
                "export it before 'verger up', or give it under environments.<name>"
                ".env",
            )
            continue
        yield command_check(name, key, command, loaded.root, loaded.config.build)


def unset_variables(command: str, known: set[str]) -> list[str]:
    """Variables a command uses that neither this environment nor verger sets."""
    names = dict.fromkeys(_VARIABLE.findall(command))
    return [name for name in names if name not in known and name not in os.environ]


def _commands(config: Config) -> list[tuple[str, str, str]]:
    found = [
        ("command.build", "build", config.build),
        ("command.start", "start", config.start),
    ]
    for number, smoke in enumerate(config.smoke, start=1):
        found.append((f"command.smoke.{number}", f"smoke {smoke.label}", smoke.run))
    return [(name, key, command) for name, key, command in found if command]


def command_check(
    name: str, key: str, command: str, root: Path, build: str | None
) -> Check:
    """Whether each program that ``command`` runs can be found."""
    try:
        words = command_words(command)
    except ValueError as exc:
        return Check(
            name,
            "fail",
            f"{key}: cannot read {command!r}: {exc}",
            f"fix the quoting of {key}: in verger.yml",
        )
    missing: list[str] = []
    absent_files: list[str] = []
    found: list[str] = []
    for word in words:
        where = _locate(word, root)
        if where is None and "/" in word:
            absent_files.append(word)
        elif where is None:
            missing.append(word)
        else:
            found.append(f"{word} ({where})")
    return _command_outcome(name, key, missing, absent_files, found, build)


def _command_outcome(
    name: str,
    key: str,
    missing: list[str],
    absent_files: list[str],
    found: list[str],
    build: str | None,
) -> Check:
    if missing:
        listed = ", ".join(missing)
        return Check(
            name,
            "fail",
            f"{key}: {listed} not found on PATH",
            f"install {listed}, or fix {key.split()[0]}: in verger.yml",
        )
    if absent_files and key != "build" and build:
        # The build usually makes these (./bin/app, .venv/bin/python).
        return Check(
            name,
            "warn",
            f"{key}: {', '.join(absent_files)} not in the app folder yet",
            "fine if the build command creates it; otherwise fix the path",
        )
    if absent_files:
        return Check(
            name,
            "fail",
            f"{key}: {', '.join(absent_files)} not found or not executable",
            "fix the path (relative paths start in the app folder) or chmod +x it",
        )
    detail = ", ".join(found) if found else "shell builtins only"
    return Check(name, "ok", f"{key}: {detail}")


def command_words(command: str) -> list[str]:
    """The program each simple command in a shell line runs, skipping builtins."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words: list[str] = []
    expecting = True
    for token in lexer:
        if token in _SEPARATORS:
            expecting = True
            continue
        if not expecting or _ASSIGNMENT.match(token) or token in _WRAPPERS:
            continue
        expecting = False
        # A program named by a variable is only known when the command runs.
        if token not in SHELL_BUILTINS and not token.startswith("$"):
            words.append(token)
    return list(dict.fromkeys(words))


def _locate(word: str, root: Path) -> str | None:
    if "/" not in word:
        return shutil.which(word)
    path = Path(word).expanduser()
    path = path if path.is_absolute() else root / path
    if path.is_file() and os.access(path, os.X_OK):
        return str(path)
    return None


@register("health-path", order=30)
def check_health_path(context: Context) -> Iterator[Check]:
    """The health path is a path (``/health``), read raw if the config is invalid."""
    loaded = context.loaded
    if loaded is not None:
        path = loaded.config.health.path
        yield Check("health-path", "ok", f"health checks ask GET {path}")
        return
    raw = _raw_health_path(context)
    if raw is None:
        yield Check("health-path", "skip", "the config is not valid", severity="info")
    elif not raw.startswith("/"):
        yield Check(
            "health-path",
            "fail",
            f"health.path is {raw!r}, which does not start with /",
            f"write it as /{raw.lstrip('/')}",
        )
    else:
        yield Check("health-path", "ok", f"health checks ask GET {raw}")


def _raw_health_path(context: Context) -> str | None:
    try:
        document: Any = YAML(typ="safe").load(context.located().read_text("utf-8"))
    except (YAMLError, OSError, UnicodeDecodeError, VergerError):
        return None
    health = document.get("health") if isinstance(document, dict) else None
    path = health.get("path") if isinstance(health, dict) else None
    return path if isinstance(path, str) else None
