"""The state store check: the SQLite folder is writable, or PostgreSQL answers."""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from verger.checks.base import Check, Context, nearest_existing, register

CONNECT_TIMEOUT = 3


@register("state", order=60)
def check_state(context: Context) -> Iterator[Check]:
    """The state store named by ``state:`` can be opened for writing."""
    loaded = context.loaded
    if loaded is None:
        yield Check("state", "skip", "the config is not valid", severity="info")
        return
    yield state_check(loaded.config.state, loaded.root)


def state_check(state: str, root: Path) -> Check:
    """Whether ``state`` (a path relative to ``root`` or a URL) can be used."""
    if state.startswith(("postgresql://", "postgres://")):
        return _postgres(state)
    path = Path(state).expanduser()
    return _sqlite(path if path.is_absolute() else root / path)


def _postgres(url: str) -> Check:
    shown = mask_password(url)
    try:
        with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT) as connection:
            connection.execute("select 1")
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        return Check(
            "state",
            "fail",
            f"cannot connect to {shown}: {reason}",
            "check the server is up and the URL's user, host and database",
        )
    return Check("state", "ok", f"PostgreSQL at {shown} answers")


def _sqlite(path: Path) -> Check:
    if path.exists():
        return _sqlite_file(path)
    folder = nearest_existing(path.parent)
    if not folder.is_dir():
        return Check(
            "state",
            "fail",
            f"cannot create {path}: {folder} is a file, not a folder",
            "point state: at a folder verger can write, such as .verger/state.db",
        )
    try:
        # os.access says yes to root even on read-only mounts; a real file tells.
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return Check(
            "state",
            "fail",
            f"cannot write in {folder}: {exc.strerror}",
            "fix the folder's permissions or point state: elsewhere",
        )
    return Check("state", "ok", f"{path} will be created")


def _sqlite_file(path: Path) -> Check:
    try:
        connection = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=3)
        try:
            connection.execute("select count(*) from sqlite_master").fetchone()
        finally:
            connection.close()
    except sqlite3.Error as exc:
        return Check(
            "state",
            "fail",
            f"cannot open {path}: {exc}",
            "check the file is a SQLite database verger can write",
        )
    return Check("state", "ok", f"{path} opens for writing")


def mask_password(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    netloc = f"{user}:***@{host}{port}"
    return urlunsplit(parts._replace(netloc=netloc))
