"""`audit show`: one run's document as text (spec, status, history, timings, cached measures) or JSON."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from audit.render import formats, tables
from audit.render.console import out_console

HISTORY_COLUMNS = ("epoch", "step", "lr", "train_loss", "train_acc", "test_loss", "test_acc")
ATTRIBUTES = ("train_seconds", "samples_seen", "steps_to_fit", "epochs_to_fit", "best_test_acc", "device")


def history_table(history: dict[str, list[float]]) -> Table:
    """Every evaluation of the run, or its first 5 and last 6 when there are more than 12, the gap marked."""
    rows = list(zip(*(history[c] for c in HISTORY_COLUMNS)))
    title = "history (every evaluation)" if len(rows) <= 12 else f"history ({len(rows)} evaluations; --json has all)"
    table = Table(title=title, title_justify="left")
    for column in HISTORY_COLUMNS:
        table.add_column(column, justify="right")
    for index, row in enumerate(rows if len(rows) <= 12 else rows[:5] + rows[-6:]):
        if len(rows) > 12 and index == 5:
            table.add_row("…", f"{len(rows) - 11} rows not shown", *[""] * (len(HISTORY_COLUMNS) - 2))
        table.add_row(*(tables.fmt(int(v) if i < 2 else v, 4) for i, v in enumerate(row)))
    return table


def measures_table(cached: dict[str, dict[str, Any]]) -> Table:
    """The cached measures: value, seconds and the reason of a null."""
    table = Table(title="measures", title_justify="left")
    for column in ("measure", "value", "seconds", "note"):
        table.add_column(column)
    for name, entry in cached.items():
        table.add_row(name, tables.fmt(entry.get("value"), 5), tables.fmt(entry.get("seconds"), 3),
                      entry.get("reason") or "")
    return table


def print_run(document: dict[str, Any], as_json: bool) -> None:
    """A run document (audit.pipeline.report.run_document) as JSON or as text."""
    if as_json:
        print(formats.dumps(document))
        return
    console = out_console()
    console.print(f"run {document['run_id']}  {document['path']}")
    console.print(f"status {document['status']}, fitted {tables.fmt(document['fitted'])}, {document['integrity']}")
    for key, value in document["spec"].items():
        console.print(f"  {key:<14} {value}")
    console.print(history_table(document["history"]))
    for key in ATTRIBUTES:
        console.print(f"  {key:<14} {tables.fmt(document['attrs'].get(key))}")
    if "model_source" in document:
        console.print(f"  {'model source':<14} {document['model_source']}")
    if document["measures"]:
        console.print(measures_table(document["measures"]))
