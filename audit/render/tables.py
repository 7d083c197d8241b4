"""Terminal tables: runs, verdicts, the rule and the header, with rich."""

from __future__ import annotations

import math
from statistics import median
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from audit.judge.rows import variant_label

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


def runs_table(rows: list[dict[str, Any]], names: list[str], title: str = "runs") -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("run", "variant", "seed", "status", "fitted", "epochs", "train acc", "test acc", "gap"):
        table.add_column(column, justify="right" if column not in ("run", "variant", "status") else "left")
    for name in names:
        table.add_column(name, justify="right")
    for row in rows:
        status = row["status"] if row["status"] == "complete" else f"[yellow]{row['status']}[/]"
        fitted = fmt(row["fitted"]) if row["fitted"] or row["status"] != "complete" else "[yellow]no[/]"
        cells = [row["run_id"], variant_label(row), str(row["seed"]), status, fitted,
                 fmt(row["epochs"]), fmt(row["train_acc"]), fmt(row["test_acc"]), fmt(row["gap"])]
        table.add_row(*cells, *(fmt(row["measures"].get(n), 4) for n in names))
    return table


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
    if not trends:
        return "—"
    p = summary.get("trend_p_adj")
    return f"{median(trends):+.2f}" + (f" (p {p:.1g})" if p is not None else "")

SUMMARY_COLUMNS = ("measure", "kind", "dir", "median true", "median random", "auc [95%] or (p)", "trend (p adj)",
                   "tau", "psi", "worst sign-err", "verdict", "s/run")


def summary_cells(summary: dict[str, Any], per_family: list[dict[str, Any]]) -> list[str]:
    medians = summary.get("medians", {})
    return [summary["measure"], summary["measure_family"], "↑" if summary["direction"] > 0 else "↓",
            fmt(medians.get("true"), 4), fmt(medians.get("random-labels"), 4), auc_cell(summary, per_family),
            trend_cell(summary, per_family), fmt(summary.get("tau"), 2), fmt(summary.get("psi_overall"), 2),
            fmt(summary.get("sign_error_worst"), 2), summary["verdict"], fmt(summary.get("seconds_per_run"), 3)]


def verdict_table(judgement: dict[str, Any], title: str = "verdicts") -> Table:
    table = Table(title=title, title_justify="left")
    for column in SUMMARY_COLUMNS:
        table.add_column(column, justify="left" if column in ("measure", "kind", "verdict") else "right")
    for summary in judgement["summary"]:
        cells = summary_cells(summary, judgement["verdicts"])
        table.add_row(*(Text(c) for c in cells[:10]), Text(cells[10], style=VERDICT_STYLE.get(cells[10], "")),
                      Text(cells[11]))
    return table


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


def print_tables(console: Console, rows: list[dict[str, Any]], judgement: dict[str, Any],
                 show: list[str], store: str) -> None:
    console.print(header_text(header(store, rows)) + family_text(judgement.get("correction")))
    console.print(runs_table(rows, show))
    if judgement["summary"]:
        console.print(verdict_table(judgement))
        console.print(rule_text(judgement["rule"]))
        notes = [f"  {s['measure']}: {note}" for s in judgement["summary"] for note in s["notes"]]
        if notes:
            console.print("notes:\n" + "\n".join(notes))
