"""Reading verger.yml: YAML with line numbers, validated whole, all errors at once."""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from verger.config.model import Config, Contradictions
from verger.errors import ConfigError

FILENAME = "verger.yml"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# References of a shell's that verger does not expand (see unexpanded).
_SHELL_REF = re.compile(r"\$\{([A-Za-z0-9_]*)")
_BARE_REF = re.compile(r"\$[A-Za-z_][A-Za-z0-9_]*")
# A whole-config check names the key it is about first: "environments.b.listen uses".
_KEY_FIRST = re.compile(r"^([a-z_]+(?:\.[A-Za-z0-9_-]+)+) (.+)$", re.DOTALL)


@dataclass(frozen=True)
class Loaded:
    """A validated config and where it came from."""

    config: Config
    path: Path

    @property
    def root(self) -> Path:
        """The folder the config lives in: the app's folder and home of .verger/."""
        return self.path.parent

    @property
    def state_dir(self) -> Path:
        return self.root / ".verger"


def find_config(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The config file to use: ``-c PATH`` or verger.yml in the current folder."""
    if explicit is not None:
        path = Path(explicit)
        if path.is_dir():
            path = path / FILENAME
        if not path.is_file():
            raise ConfigError(
                f"no config file at {path}",
                "check the path given with -c, or run 'verger init' to write one",
            )
        return path.resolve()
    path = Path.cwd() / FILENAME
    if not path.is_file():
        raise ConfigError(
            f"no {FILENAME} in {Path.cwd()}",
            "run 'verger init' to write a starter config, or pass -c PATH",
        )
    return path.resolve()


def load_config(explicit: str | os.PathLike[str] | None = None) -> Loaded:
    """Find, parse and validate the config; one ConfigError lists every problem."""
    path = find_config(explicit)
    document = _parse(path)
    return Loaded(validate(document, path), path)


def _parse(path: Path) -> CommentedMap:
    yaml = YAML(typ="rt")
    try:
        document = yaml.load(path.read_text(encoding="utf-8"))
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path.name}:{mark.line + 1}" if mark is not None else path.name
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(
            f"{where}: the file is not valid YAML ({problem})",
            "fix the indentation or quoting on that line",
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read {path}: {exc}", "check the file's permissions"
        ) from exc
    if document is None:
        raise ConfigError(
            f"{path.name} is empty", "run 'verger init' to write a starter config"
        )
    if not isinstance(document, CommentedMap):
        raise ConfigError(
            f"{path.name}:1: expected a mapping of keys such as app: and start:",
            "see 'verger init' for the shape of the file",
        )
    return document


def validate(document: CommentedMap, path: Path) -> Config:
    """Validate a parsed document, reporting each problem with file:line and key."""
    try:
        return Config.model_validate(_expand(_plain(document)))
    except ValidationError as exc:
        found = [
            _describe(error, document, path)
            for each in exc.errors()
            for error in _one_per_problem(each)
        ]
        problems = [text for _, text in sorted(found, key=lambda item: item[0])]
        count = len(problems)
        noun = "problem" if count == 1 else "problems"
        raise ConfigError(
            f"{path.name} has {count} {noun}"
            + (f": {problems[0]}" if count == 1 else ""),
            "fix the lines named above and run 'verger check' again",
            problems=problems if count > 1 else [],
        ) from None


def _one_per_problem(error: Any) -> list[Any]:
    """Split an error holding several contradictions into one error per problem."""
    cause = (error.get("ctx") or {}).get("error")
    if not isinstance(cause, Contradictions):
        return [error]
    return [{**error, "msg": problem} for problem in cause.problems]


def _plain(node: Any) -> Any:
    if isinstance(node, CommentedMap):
        return {str(key): _plain(value) for key, value in node.items()}
    if isinstance(node, CommentedSeq):
        return [_plain(item) for item in node]
    return node


def _expand(node: Any) -> Any:
    """Replace ``${NAME}`` with the environment variable NAME, left as is when unset."""
    if isinstance(node, dict):
        return {key: _expand(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_expand(item) for item in node]
    if isinstance(node, str):
        return _ENV_REF.sub(lambda m: os.environ.get(m.group(1), m.group(0)), node)
    return node


def _describe(error: Any, document: CommentedMap, path: Path) -> tuple[int, str]:
    loc = tuple(part for part in error["loc"] if not _is_validator_name(part))
    message = error["msg"].removeprefix("Value error, ")
    loc, message = _key_from_message(loc, message)
    line = _line_of(document, loc)
    key = ".".join(str(part) for part in loc) or "(top level)"
    where = f"{path.name}:{line}" if line else path.name
    kind = error["type"]
    if kind == "extra_forbidden":
        known = _fields_at(loc[:-1])
        near = nearest_key(str(loc[-1]), known)
        hint = f"; did you mean {near!r}?" if near else ""
        accepted = f" (accepted: {', '.join(known)})" if known and not near else ""
        return line or 0, f"{where}: {key}: unknown key{hint}{accepted}"
    if kind == "missing":
        return line or 0, f"{where}: {key}: required key is missing"
    message = _in_our_words(kind, message, error.get("ctx") or {}, error.get("input"))
    return line or 0, f"{where}: {key}: {message}{_unset_hint(error.get('input'))}"


def _in_our_words(kind: str, message: str, ctx: dict[str, Any], value: Any) -> str:
    """Pydantic's wording turned into verger's: what was expected, then what was got."""
    got = f", got {value!r}" if not isinstance(value, dict | list) else ""
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        words = {
            "greater_than_equal": ("at least", "ge"),
            "greater_than": ("more than", "gt"),
            "less_than_equal": ("at most", "le"),
            "less_than": ("less than", "lt"),
        }[kind]
        return f"expected a number {words[0]} {ctx.get(words[1])}{got}"
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace("'", "")
        return f"expected one of {expected}{got}"
    if kind in ("string_type", "int_type", "int_parsing", "bool_type", "bool_parsing"):
        wanted = {"string": "text", "int": "a whole number", "bool": "true or false"}
        return f"expected {wanted[kind.split('_')[0]]}{got}"
    if kind in ("dict_type", "model_type"):
        return f"expected a mapping of keys{got}"
    if kind == "list_type":
        return f"expected a list{got}"
    return message


def _key_from_message(
    loc: tuple[Any, ...], message: str
) -> tuple[tuple[Any, ...], str]:
    """Point a whole-section error at the key its message names, for a precise line."""
    match = _KEY_FIRST.match(message)
    if match is None:
        return loc, message
    named = tuple(match.group(1).split("."))
    if named[: len(loc)] != loc:
        return loc, message
    return named, match.group(2)


def unset_reference(value: str) -> str | None:
    """The NAME of the first ``${NAME}`` left in ``value`` because it was not set.

    Unset references are kept as written, so that a section nobody uses does
    not stop the others; a secret read from one must be refused instead.
    """
    found = _ENV_REF.search(value)
    return found.group(1) if found else None


def unexpanded(value: str, bare: bool = True) -> str | None:
    """A shell-style reference in ``value`` that verger reads as literal text.

    Only ``${NAME}`` is taken from the environment; ``${NAME:-default}`` and a
    bare ``$NAME`` (the whole value; with ``bare``) stay as written, and a
    secret written so is known to anyone who reads verger.yml.
    """
    shell = _SHELL_REF.search(value)
    if shell is not None:
        # Named by its variable alone: the rest may be the secret itself.
        return f"${{{shell.group(1)}…}}"
    found = _BARE_REF.fullmatch(value.strip()) if bare else None
    return found.group(0) if found else None


def _unset_hint(value: Any) -> str:
    """Say so when a rejected value still holds a ``${NAME}`` that was not set."""
    if not isinstance(value, str):
        return ""
    name = unset_reference(value)
    return f" (environment variable {name} is not set)" if name else ""


def nearest_key(typed: str, known: list[str]) -> str | None:
    """The accepted key ``typed`` most likely meant: fewest edits, then most alike."""
    # Edit distance counts a swap as one edit, so "strat" means "start", not "state".
    distances = {key: _edits(typed, key) for key in known}
    close = sorted((d, key) for key, d in distances.items() if d <= 2 < len(key))
    if close:
        return close[0][1]
    near = difflib.get_close_matches(typed, known, n=1, cutoff=0.5)
    return near[0] if near else None


def _edits(a: str, b: str) -> int:
    """Optimal string alignment distance: inserts, deletes, changes and swaps."""
    rows = [list(range(len(b) + 1))]
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            row[j] = min(rows[-1][j] + 1, row[j - 1] + 1, rows[-1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], rows[-2][j - 2] + 1)
        rows.append(row)
    return rows[-1][-1]


def _is_validator_name(part: Any) -> bool:
    # Pydantic puts the tag of a union or function validator into the location.
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))


def _line_of(document: CommentedMap, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the deepest part of ``loc`` that exists in the file."""
    node: Any = document
    line: int | None = 1
    for part in loc:
        if isinstance(node, CommentedMap) and part in node:
            line = node.lc.key(part)[0] + 1
            node = node[part]
        elif (
            isinstance(node, CommentedSeq)
            and isinstance(part, int)
            and part < len(node)
        ):
            line = node.lc.item(part)[0] + 1
            node = node[part]
        else:
            break
    return line


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """The keys the model accepts at a location, for suggesting a near match."""
    annotation: Any = Config
    for part in loc:
        annotation = _step(annotation, part)
        if annotation is None:
            return []
    model = _model_of(annotation)
    return list(model.model_fields) if model else []


def _step(annotation: Any, part: Any) -> Any:
    model = _model_of(annotation)
    if model is not None:
        field = model.model_fields.get(str(part))
        return field.annotation if field else None
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (dict, list) and args:
        return args[-1]
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            found = _step(arg, part)
            if found is not None:
                return found
    return None


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return None
