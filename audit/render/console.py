"""The consoles: results on stdout (wide, never wrapped), progress and stage lines on stderr, one-line messages."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable

from rich.console import Console

err_console = Console(stderr=True)


def out_console() -> Console:
    """A console on stdout: the terminal's width (at least 100 columns), 200 columns when not a terminal."""
    width = shutil.get_terminal_size((200, 40)).columns if sys.stdout.isatty() else 200
    return Console(width=max(width, 100), soft_wrap=False)


def one_line(message: object) -> str:
    """A message on one line: control characters of echoed user input (a newline or carriage return in a
    dataset name, say) written as escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(message))


def stage_printer(quiet: bool) -> Callable[[str], None]:
    """A callback printing each stage of a long computation, dimmed, on stderr; silent when quiet."""
    if quiet:
        return lambda text: None
    return lambda text: err_console.print(f"audit: {text}", style="dim")
