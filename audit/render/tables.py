"""Terminal tables: runs, verdicts, the rule and the header, with rich."""

from __future__ import annotations

import math
import textwrap
from statistics import median
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from audit.judge.rows import variant_label
from audit.render.fit import Cell, fitted_table, left_out_note, natural_width

VERDICT_STYLE = {"distinguishes": "bold green", "fails": "red", "inverted": "bold magenta",
                 "unstable": "yellow", "insufficient": "dim", "undefined": "cyan"}


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


RUN_COLUMNS = ("run", "variant", "seed", "status", "fitted", "epochs", "train acc", "test acc", "gap")
RUN_PRIORITY = ("run", "variant", "seed", "gap", "train acc", "test acc", "status", "fitted", "epochs")


def runs_table(rows: list[dict[str, Any]], names: list[str], title: str = "runs",
               width: int | None = None) -> tuple[Table, list[str]]:
    """The runs and the measures `names`, fitting `width` (None: every column); and the columns left out."""
    columns = [(c, "left" if c in ("run", "variant", "status") else "right") for c in RUN_COLUMNS]
    columns += [(name, "right") for name in names]
    cells = []
    for row in rows:
        status = row["status"] if row["status"] == "complete" else f"[yellow]{row['status']}[/]"
        fitted = fmt(row["fitted"]) if row["fitted"] or row["status"] != "complete" else "[yellow]no[/]"
        cells.append([row["run_id"], variant_label(row), str(row["seed"]), status, fitted, fmt(row["epochs"]),
                      fmt(row["train_acc"]), fmt(row["test_acc"]), fmt(row["gap"]),
                      *(fmt(row["measures"].get(n), 4) for n in names)])
    return fitted_table(title, columns, cells, RUN_PRIORITY, 2, width)


def interval_text(stat: dict[str, Any]) -> str:
    if stat.get("auc") is None:
        return "—"
    interval = stat.get("auc_interval")
    if not interval:
        return fmt(stat["auc"], 2)
    if stat.get("auc_interval_kind") != "bootstrap":  # too few runs to resample: the exact one-sided p informs
        return f"{stat['auc']:.2f} (p {stat['auc_p']:.2g})" if stat.get("auc_p") is not None else fmt(stat["auc"], 2)
    return f"{stat['auc']:.2f} [{interval[0]:.2f},{interval[1]:.2f}]"


def auc_cell(summary: dict[str, Any], per_family: list[dict[str, Any]]) -> str:
    mine = [s for s in per_family if s["measure"] == summary["measure"]]
    if len(mine) == 1:
        return interval_text(mine[0])
    aucs = [s["auc"] for s in mine if s.get("auc") is not None]
    if not aucs:
        return "—"
    return f"{median(aucs):.2f} ({min(aucs):.2f}–{max(aucs):.2f})"


def trend_cell(summary: dict[str, Any], per_family: list[dict[str, Any]]) -> str:
    trends = [s["trend"] for s in per_family if s["measure"] == summary["measure"] and s.get("trend") is not None]
    return f"{median(trends):+.2f}" if trends else "—"


def p_cell(p: float | None) -> str:
    return "—" if p is None else f"{p:.1g}"


def significant(value: Any, digits: int = 4) -> str:
    """A number in `digits` significant digits, without an exponent below 1e6: 38410, 266.7, 0.0208, -5.377."""
    if not isinstance(value, float) or math.isnan(value) or value == 0 or not 1e-4 <= abs(value) < 1e6:
        return fmt(value, digits)
    return f"{value:.0f}" if abs(value) >= 10 ** (digits - 1) else f"{value:.{digits}g}"


SUMMARY_COLUMNS = ("measure", "kind", "dir", "med true", "med rand", "auc [95%]", "trend", "p adj", "tau", "psi",
                   "worst sign-err", "verdict", "s/run")
# kept first to last while the table fits; the measure and its verdict always
SUMMARY_PRIORITY = ("measure", "verdict", "auc [95%]", "trend", "p adj", "med true", "med rand", "dir", "tau",
                    "kind", "s/run", "psi", "worst sign-err")


def summary_cells(summary: dict[str, Any], per_family: list[dict[str, Any]]) -> list[Cell]:
    medians = summary.get("medians", {})
    verdict = summary["verdict"]
    return [summary["measure"], summary["measure_family"], "↑" if summary["direction"] > 0 else "↓",
            significant(medians.get("true")), significant(medians.get("random-labels")), auc_cell(summary, per_family),
            trend_cell(summary, per_family), p_cell(summary.get("trend_p_adj")), fmt(summary.get("tau"), 2),
            fmt(summary.get("psi_overall"), 2), fmt(summary.get("sign_error_worst"), 2),
            Text(verdict, style=VERDICT_STYLE.get(verdict, "")), fmt(summary.get("seconds_per_run"), 3)]


def verdict_table(judgement: dict[str, Any], title: str = "verdicts",
                  width: int | None = None) -> tuple[Table, list[str]]:
    """One row per measure, fitting `width` (None: every column); and the columns left out."""
    columns = [(c, "left" if c in ("measure", "kind", "verdict") else "right") for c in SUMMARY_COLUMNS]
    cells = [[Text(c) if isinstance(c, str) else c for c in summary_cells(summary, judgement["verdicts"])]
             for summary in judgement["summary"]]
    return fitted_table(title, columns, cells, SUMMARY_PRIORITY, 2, width)


def rule_text(rule: dict[str, str]) -> str:
    lines = [f"  {key}: {text}" for key, text in rule.items()]
    return "rule (↑ larger = more complex, ↓ smaller = more complex):\n" + "\n".join(lines)


def header(store: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    statuses = {s: sum(r["status"] == s for r in rows) for s in ("complete", "running", "diverged")}
    return {"store": store, "runs": len(rows), **statuses,
            "unfitted": sum(r["status"] == "complete" and not r["fitted"] for r in rows),
            "families": len({r["family"] for r in rows}), "seeds": len({r["seed"] for r in rows})}


def header_text(head: dict[str, Any]) -> str:
    text = f"store {head['store']}: {head['runs']} runs, {head['complete']} complete"
    excluded = head["running"] + head["diverged"]
    if excluded:
        text += f", {excluded} excluded from the statistics ({head['running']} running, {head['diverged']} diverged)"
    if head["unfitted"]:
        text += f", {head['unfitted']} complete but not fitted (kept)"
    families = head["families"]
    return text + f"; {families} famil{'y' if families == 1 else 'ies'}, {head['seeds']} seed{'s' * (head['seeds'] != 1)}"


def family_text(correction: dict[str, Any] | None) -> str:
    """The fixed family the p-values are corrected over, for the header."""
    if not correction or correction["method"] == "none":
        return ""
    size = correction["size"]
    return f"; p-values corrected over {size} measure{'s' * (size != 1)} (every measure cached in the store)"


def wrapped(lines: list[str], width: int) -> str:
    """Indented lines wrapped at `width`, continuation lines indented further."""
    return "\n".join(textwrap.fill(line, width, subsequent_indent="      ", break_on_hyphens=False)
                     for line in lines)


def print_table(console: Console, table: Table, left_out: list[str]) -> None:
    """A table, on a console wide enough for it when nothing was left out (--wide), and the note of what was."""
    wide = Console(width=max(console.width, natural_width(table)), soft_wrap=False, file=console.file)
    (console if left_out else wide).print(table)
    if left_out:
        console.print(left_out_note(left_out, console.width))


def print_tables(console: Console, rows: list[dict[str, Any]], judgement: dict[str, Any],
                 show: list[str], store: str, wide: bool = False) -> None:
    """The header, the runs and verdict tables fitting the console's width (every column when wide), the rule
    and the notes."""
    width = None if wide else console.width
    console.print(header_text(header(store, rows)) + family_text(judgement.get("correction")))
    print_table(console, *runs_table(rows, show, width=width))
    if judgement["summary"]:
        print_table(console, *verdict_table(judgement, width=width))
        rule = rule_text(judgement["rule"]).splitlines()
        console.print(rule[0] + "\n" + wrapped(rule[1:], console.width))
        notes = [f"  {s['measure']}: {note}" for s in judgement["summary"] for note in s["notes"]]
        if notes:
            console.print("notes:\n" + wrapped(notes, console.width))
