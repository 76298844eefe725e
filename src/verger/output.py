"""The one path for what the user sees.

Commands hand results, tables, decisions and errors to an ``Output``; it
writes them for a person (Rich) or as JSON (``--json``), logs them, and
decides the exit code. Nothing else in verger prints.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.table import Table

from verger.errors import ConfigError, VergerError

log = logging.getLogger("verger")


class Output:
    """Writes results for a person or as JSON, and turns errors into exit codes."""

    def __init__(self, *, json_mode: bool = False, debug: bool = False) -> None:
        self.json_mode = json_mode
        self.debug = debug
        # Piped output is read by people too (CI logs, the demo): give tables room.
        self.console = Console(highlight=False, soft_wrap=True)
        if not self.console.is_terminal:
            self.console = Console(highlight=False, soft_wrap=True, width=160)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)
        self.exit_code = 0

    def result(self, data: Any, human: str | None = None) -> None:
        """Write a command's result: the data as JSON, or a line for a person."""
        if self.json_mode:
            sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
            sys.stdout.flush()
        elif human is not None:
            self.console.print(human)

    def table(
        self,
        title: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        data: Any = None,
    ) -> None:
        """Write a table for a person, or ``data`` (or the rows as objects) as JSON."""
        if self.json_mode:
            if data is None:
                data = [dict(zip(columns, row, strict=False)) for row in rows]
            self.result(data)
            return
        table = Table(title=title, title_justify="left")
        for index, column in enumerate(columns):
            # The first column names the row and stays whole; the others wrap, so
            # that one long message cannot squeeze a status or a hint to nothing.
            table.add_column(column, no_wrap=index == 0, overflow="fold")
        for row in rows:
            table.add_row(*("" if cell is None else str(cell) for cell in row))
        self.console.print(table)

    def say(self, line: str) -> None:
        """Write a line of progress or a decision; on stderr in JSON mode."""
        log.info(line)
        if self.json_mode:
            self.err.print(line)
        else:
            self.console.print(line)

    def warn(self, line: str) -> None:
        log.warning(line)
        self.err.print(f"[yellow]warning:[/yellow] {line}")

    def error(self, exc: VergerError) -> int:
        """Write one error line and its hint, and return the exit code."""
        log.error("%s", exc.message)
        if self.json_mode:
            body: dict[str, object] = {
                "error": exc.message,
                "hint": exc.hint,
                "kind": type(exc).__name__,
            }
            if isinstance(exc, ConfigError) and exc.problems:
                body["problems"] = exc.problems
            sys.stdout.write(json.dumps(body) + "\n")
        else:
            self.err.print(f"[red]error:[/red] {exc.message}", markup=True)
            if isinstance(exc, ConfigError):
                for problem in exc.problems:
                    self.err.print(f"  {problem}", markup=False)
            if exc.hint:
                self.err.print(f"[dim]hint:[/dim] {exc.hint}")
            if exc.detail and self.debug:
                self.err.print(exc.detail, markup=False)
        self.exit_code = exc.exit_code
        return exc.exit_code

    @contextmanager
    def progress(
        self, description: str, total: float | None = None, *, in_bytes: bool = False
    ) -> Iterator[Any]:
        """A progress bar on stderr for long work; silent in JSON mode.

        With ``in_bytes`` the bar also shows the percentage and the bytes done
        of the total, whenever a total is known.
        """
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        columns: list[Any] = [TextColumn("{task.description}"), BarColumn()]
        if in_bytes:
            columns.append(_bytes_column())
        progress = Progress(
            *columns,
            TimeElapsedColumn(),
            console=self.err,
            disable=self.json_mode or not self.err.is_terminal,
            transient=True,
        )
        with progress:
            task = progress.add_task(description, total=total)

            def advance(
                amount: float = 1.0,
                description: str | None = None,
                *,
                completed: float | None = None,
                total: float | None = None,
            ) -> None:
                if completed is None:
                    progress.update(task, advance=amount, description=description)
                else:
                    progress.update(
                        task,
                        completed=completed,
                        total=total or None,
                        description=description,
                    )

            yield advance


def _bytes(value: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def _bytes_column() -> Any:
    from rich.progress import ProgressColumn, Task
    from rich.text import Text

    class BytesColumn(ProgressColumn):
        """'42% 310.2 MB / 740.0 MB' once a total is known; nothing before."""

        def render(self, task: Task) -> Text:
            if not task.total:
                return Text("")
            share = 100 * task.completed / task.total
            return Text(
                f"{share:3.0f}% {_bytes(task.completed)} / {_bytes(task.total)}",
                style="progress.download",
            )

    return BytesColumn()
