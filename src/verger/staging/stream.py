"""Rows read from the source as COPY's text lines, by psql, a megabyte at a time."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

from verger.backup.system import pg_program
from verger.staging.databases import RefreshError

# The same text for dates, times and floats as the writing session gets (_settle).
PSQL_SETTINGS = {
    "PGCLIENTENCODING": "UTF8",
    "PGDATESTYLE": "ISO, YMD",
    "PGTZ": "UTC",
    "PGOPTIONS": "-c extra_float_digits=3 -c IntervalStyle=postgres",
}
# COPY's text format: what a backslash escape stands for, and the reverse.
UNESCAPED = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
ESCAPE = str.maketrans(
    {"\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    | {"\v": "\\v"}
)
NULL = b"\\N"
SPECIAL = re.compile(r"[\\\b\f\n\r\t\v]")
ESCAPED = re.compile(r"\\(x[0-9A-Fa-f]{1,2}|[0-7]{1,3}|.)")


@dataclass(frozen=True)
class Origin:
    """How a second session sees the rows the source's transaction sees."""

    dsn: str
    snapshot: str | None


def lines(origin: Origin, query: str) -> Iterator[list[bytes]]:
    """The rows of a ``COPY ... TO STDOUT``, a megabyte of lines at a time.

    psql reads them, not this process: its C loop hands over large chunks,
    where a client library would cost a Python call per row. With a
    snapshot, psql's transaction sees exactly what the source's does.
    """
    steps = _steps(origin, query)
    psql = [pg_program("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", origin.dsn]
    env = {**os.environ, **PSQL_SETTINGS}
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            [*psql, *steps],
            stdout=subprocess.PIPE,
            stderr=errors,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        try:
            yield from _chunks(process)
        finally:
            if process.poll() is None:
                process.kill()
            code = process.wait()
        if code != 0:
            errors.seek(0)
            raise RefreshError(
                f"reading the source failed: {errors.read().decode().strip()[-400:]}",
                "check that the source database is reachable, then refresh again",
            )


def copy(origin: Origin, query: str, target: str, statements: list[str]) -> None:
    """Rows of ``query`` at the source piped by psql into psql running ``statements``.

    The last statement is the ``COPY ... FROM STDIN`` that reads them; all
    run in one transaction at ``target``.
    """
    env = {**os.environ, **PSQL_SETTINGS}
    psql = [pg_program("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"]
    into = [*psql, "-d", target, "-c", "BEGIN"]
    for statement in statements:
        into += ["-c", statement]
    into += ["-c", "COMMIT"]
    with tempfile.TemporaryFile() as errors:
        reader = subprocess.Popen(
            [*psql, "-d", origin.dsn, *_steps(origin, query)],
            stdout=subprocess.PIPE,
            stderr=errors,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        assert reader.stdout is not None
        writer = subprocess.run(
            into, stdin=reader.stdout, capture_output=True, env=env, check=False
        )
        reader.stdout.close()
        if reader.wait() != 0 or writer.returncode != 0:
            errors.seek(0)
            told = (errors.read() + writer.stderr).decode().strip()
            raise RefreshError(
                f"copying a table failed: {told[-400:]}",
                "check the staging server's log, then refresh again",
            )


def _steps(origin: Origin, query: str) -> list[str]:
    steps = ["-c", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"]
    if origin.snapshot:
        steps += ["-c", f"SET TRANSACTION SNAPSHOT '{origin.snapshot}'"]
    return [*steps, "-c", query, "-c", "COMMIT"]


def _chunks(process: subprocess.Popen[bytes]) -> Iterator[list[bytes]]:
    assert process.stdout is not None
    rest = b""
    while chunk := process.stdout.read(1 << 20):
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        yield lines


def unescape(text: str) -> str:
    if "\\" not in text:
        return text
    return ESCAPED.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    code = match.group(1)
    if code in UNESCAPED:
        return UNESCAPED[code]
    if code[0] == "x" and len(code) > 1:
        return chr(int(code[1:], 16))
    if code[0].isdigit() and code[0] in "01234567":
        return chr(int(code, 8))
    return code
