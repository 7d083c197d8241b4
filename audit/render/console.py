"""The consoles: results on stdout (as wide as the terminal), progress and stage lines on stderr, one-line messages."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable

from rich.console import Console

err_console = Console(stderr=True)


def terminal_width() -> int:
    """The width results are laid out for: COLUMNS when set, else the terminal's, else 100 (a file or a pipe)."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    if sys.stdout.isatty():
        return shutil.get_terminal_size((100, 40)).columns
    return 100


def out_console(width: int | None = None) -> Console:
    """A console on stdout, `width` columns wide (default: terminal_width()); text wraps at it."""
    return Console(width=width or terminal_width(), soft_wrap=False)


def one_line(message: object) -> str:
    """A message on one line: control characters of echoed user input (a newline or carriage return in a
    dataset name, say) written as escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(message))


def stage_printer(quiet: bool) -> Callable[[str], None]:
    """A callback printing each stage of a long computation, dimmed, on stderr; silent when quiet."""
    if quiet:
        return lambda text: None
    return lambda text: err_console.print(f"audit: {text}", style="dim")
