"""Rendering: rich tables for the terminal and the JSON document shared by run, score and report."""

from __future__ import annotations

import json
import math
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

import measures
from audit.verdict import RULE

VERDICT_STYLE = {"distinguishes": "bold green", "fails": "red", "inverted": "bold magenta",
                 "unstable": "yellow", "insufficient": "dim"}


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.{digits}g}"
        return f"{value:.{digits}f}"
    return str(value)


def variant_label(row: dict[str, Any]) -> str:
    return f"corrupt:{row['corrupt']:g}" if row["variant"] == "corrupt" else row["variant"]


def runs_table(rows: list[dict[str, Any]], names: list[str], title: str = "runs") -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("run", "variant", "seed", "status", "fitted", "epochs", "train acc", "test acc", "gap"):
        table.add_column(column, justify="right" if column not in ("run", "variant", "status") else "left")
    for name in names:
        table.add_column(name, justify="right")
    for row in rows:
        status = row["status"] if row["status"] == "complete" else f"[yellow]{row['status']}[/]"
        cells = [row["run_id"], variant_label(row), str(row["seed"]), status, fmt(row["fitted"]),
                 fmt(row["epochs"]), fmt(row["train_acc"]), fmt(row["test_acc"]), fmt(row["gap"])]
        table.add_row(*cells, *(fmt(row["measures"].get(n), 4) for n in names))
    return table


def verdict_table(verdicts: list[dict[str, Any]], title: str = "verdicts") -> Table:
    table = Table(title=title, title_justify="left")
    multi = len({v["family"] for v in verdicts}) > 1
    table.add_column("measure")
    if multi:
        table.add_column("family")
    for column in ("dir", "median true", "median random", "auc", "trend", "tau", "verdict", "s/run"):
        table.add_column(column, justify="left" if column == "verdict" else "right")
    for v in verdicts:
        direction = "↑" if measures.get(v["measure"]).direction > 0 else "↓"
        medians = v["medians"]
        cells = [v["measure"]] + ([v["family"]] if multi else []) + [
            direction, fmt(medians.get("true"), 4), fmt(medians.get("random-labels"), 4),
            fmt(v["auc"], 2), fmt(v["trend"], 2), fmt(v["tau"], 2)]
        table.add_row(*cells, Text(v["verdict"], style=VERDICT_STYLE.get(v["verdict"], "")),
                      fmt(v.get("seconds_per_run"), 3))
    return table


def rule_text() -> str:
    lines = [f"  {key}: {text}" for key, text in RULE.items()]
    return "rule (↑ larger = more complex, ↓ smaller = more complex):\n" + "\n".join(lines)


def document(store: str, rows: list[dict[str, Any]], verdicts: list[dict[str, Any]],
             errors: list[str] | None = None) -> dict[str, Any]:
    return {"store": store, "rule": RULE, "runs": rows, "verdicts": verdicts, "errors": errors or []}


def clean(value: Any) -> Any:
    """NaN and infinities become null, so the JSON is strict."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def dumps(document_: Any) -> str:
    return json.dumps(clean(document_), indent=2, allow_nan=False, default=str)


def print_tables(console: Console, rows: list[dict[str, Any]], verdicts: list[dict[str, Any]],
                 show: list[str], store: str) -> None:
    complete = sum(r["status"] == "complete" for r in rows)
    families = len({r["family"] for r in rows})
    console.print(f"store {store}: {len(rows)} runs ({complete} complete), {families} "
                  f"famil{'y' if families == 1 else 'ies'}")
    console.print(runs_table(rows, show))
    if verdicts:
        console.print(verdict_table(verdicts))
        console.print(rule_text())


def catalogue_markdown(items: list[dict[str, Any]]) -> str:
    """The measure catalogue as a Markdown page, one section per family."""
    lines = ["# Measures", "",
             f"{len(items)} registered measures (`audit list measures`). W_i are the weight tensors of the linear "
             "and conv layers, biases excluded, batch norm folded; the model is measured in eval mode on the exact "
             "fitted train set. *log*: reported as a natural log. *invariant*: unchanged when a ReLU layer is "
             "multiplied by c > 0 and the next divided by c. Direction ↑: larger = more complex.", ""]
    families: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        families.setdefault(item["family"], []).append(item)
    for family, members in families.items():
        lines += [f"## {family}", "", "| measure | formula | dir | log | invariant | needs | cost | settings | reference |",
                  "| --- | --- | :-: | :-: | :-: | --- | --- | --- | --- |"]
        for m in members:
            arrow = "↑" if m["direction"].startswith("larger") else "↓"
            settings = ", ".join(f"{k}={v}" for k, v in m["settings"].items()) or "—"
            cells = [f"`{m['name']}`", m["formula"], arrow, "yes" if m["log"] else "", "yes" if m["invariant"] else "",
                     ", ".join(m["needs"]), m["cost"], settings, m["reference"]]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)
