"""Shared output conventions: a rich table by default, ``--json`` for scripts, ``--csv`` for spreadsheets.

Commands declare ``@output_options()`` (or ``@output_options(csv=False)``) and call
``emit(rows, columns, fmt)``. The format comes from the flag, else ``METALAB_OUTPUT``,
else the config file's ``output``, else ``table`` (see ``metalab.labctl.config``).
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, TypeVar

import click

from metalab.labctl import config

F = TypeVar("F", bound=Callable[..., Any])
# Width of a table written to a file or a pipe (a terminal's own width is used on a terminal; $COLUMNS overrides).
PIPE_WIDTH = 160

STATUS_STYLES = {
    "ok": "green",
    "warn": "yellow",
    "fail": "bold red",
    "n/a": "dim",
    "present": "green",
    "absent": "dim",
}


@dataclass(frozen=True)
class Column:
    key: str
    header: str = ""
    justify: str = "left"
    styled: bool = False  # colour the value with STATUS_STYLES

    @property
    def title(self) -> str:
        return self.header or self.key


def output_options(csv: bool = True) -> Callable[[F], F]:
    """``--json`` / ``--csv`` / ``--table`` flags, all setting the ``output`` parameter."""

    def decorate(func: F) -> F:
        if csv:
            func = click.option(
                "--csv", "output", flag_value="csv", default=None, help="Comma-separated values, with a header row."
            )(func)
        func = click.option("--json", "output", flag_value="json", default=None, help="JSON, for scripts.")(func)
        func = click.option("--table", "output", flag_value="table", default=None, help="A table (the default).")(func)
        return func

    return decorate


def resolve_format(flag: str | None, allowed: Sequence[str] = config.OUTPUT_FORMATS) -> str:
    fmt = config.output_format(flag)
    # A configured default the command does not offer falls back to the table; an explicit flag cannot get here.
    return fmt if fmt in allowed else "table"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def emit(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    fmt: str,
    *,
    title: str | None = None,
    stream: IO[str] | None = None,
) -> None:
    stream = stream or sys.stdout
    if fmt == "json":
        stream.write(json.dumps([dict(r) for r in rows], indent=2, default=str) + "\n")
    elif fmt == "csv":
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow([c.key for c in columns])
        for row in rows:
            writer.writerow(["" if row.get(c.key) is None else row.get(c.key) for c in columns])
    else:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        table = Table(title=title, title_justify="left")
        for c in columns:
            # fold, never cut: a path or an action that is cut off with an ellipsis is of no use to the reader
            table.add_column(c.title, justify=c.justify, overflow="fold")  # type: ignore[arg-type]
        for row in rows:
            cells = []
            for c in columns:
                text = _cell(row.get(c.key))
                style = STATUS_STYLES.get(text) if c.styled else None
                cells.append(f"[{style}]{escape(text)}[/]" if style else escape(text))
            table.add_row(*cells)
        console = Console(file=stream)
        if not console.is_terminal and "COLUMNS" not in os.environ:
            console = Console(file=stream, width=PIPE_WIDTH)  # a file or a pipe: not rich's 80 columns
        console.print(table)
