"""Tables that fit the terminal: columns kept by a fixed priority while the table's natural width fits, the
others left out and named under the table (`--wide` shows every column)."""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

Cell = str | Text
MEASURING = Console(width=100_000)  # renders nothing: measures a table's natural (unwrapped) width


def plain_table(title: str | None) -> Table:
    """The house style: a rule under the header, no vertical borders (two spaces between columns)."""
    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                 padding=(0, 1, 0, 0))


def build(title: str | None, columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Cell]],
          keep: Sequence[int]) -> Table:
    table = plain_table(title)
    for index in keep:
        header, justify = columns[index]
        table.add_column(header, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*(row[index] for index in keep))
    return table


def natural_width(table: Table) -> int:
    return MEASURING.measure(table).maximum


def fitted_table(title: str | None, columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[Cell]],
                 priority: Sequence[str], required: int, width: int | None) -> tuple[Table, list[str]]:
    """The table of `columns` ((header, justify), in display order) and `rows`, with every column when `width`
    is None, else the first `required` headers of `priority` and then each further one, in priority order,
    that still lets the table fit `width`; columns missing from `priority` come last. Returns the table and
    the headers left out, in display order."""
    headers = [header for header, _ in columns]
    order = [headers.index(h) for h in priority if h in headers] + [i for i, h in enumerate(headers)
                                                                   if h not in priority]
    if width is None:
        return build(title, columns, rows, range(len(columns))), []
    chosen = set(order[:required])
    for index in order[required:]:
        if natural_width(build(title, columns, rows, sorted(chosen | {index}))) <= width:
            chosen.add(index)
    left_out = [headers[i] for i in range(len(columns)) if i not in chosen]
    return build(title, columns, rows, sorted(chosen)), left_out


def left_out_note(left_out: list[str], width: int) -> str:
    """The line under a table that left columns out."""
    if not left_out:
        return ""
    return f"not shown at {width} columns: {', '.join(left_out)}; --wide shows them"
