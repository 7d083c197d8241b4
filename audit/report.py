"""Rendering: rich tables for the terminal and the JSON document shared by run, score and report."""

from __future__ import annotations

import json
import math
from statistics import median
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from audit.verdict import variant_label

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
    mark = "" if stat.get("auc_interval_kind") == "bootstrap" else "~"  # ~: the exact null range
    return f"{stat['auc']:.2f} {mark}[{interval[0]:.2f},{interval[1]:.2f}]"


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


SUMMARY_COLUMNS = ("measure", "kind", "dir", "median true", "median random", "auc, interval", "trend (p adj)",
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
    return text + f"; {families} famil{'y' if families == 1 else 'ies'}, {head['seeds']} seeds"


def document(store: str, rows: list[dict[str, Any]], judgement: dict[str, Any],
             errors: list[str] | None = None) -> dict[str, Any]:
    return {"store": store, "header": header(store, rows), "rule": judgement["rule"], "runs": rows,
            "verdicts": judgement["verdicts"], "summary": judgement["summary"], "errors": errors or []}


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


def print_tables(console: Console, rows: list[dict[str, Any]], judgement: dict[str, Any],
                 show: list[str], store: str) -> None:
    console.print(header_text(header(store, rows)))
    console.print(runs_table(rows, show))
    if judgement["summary"]:
        console.print(verdict_table(judgement))
        console.print(rule_text(judgement["rule"]))
        notes = [f"  {s['measure']}: {note}" for s in judgement["summary"] for note in s["notes"]]
        if notes:
            console.print("notes:\n" + "\n".join(notes))


def summary_records(judgement: dict[str, Any]) -> list[dict[str, str]]:
    return [dict(zip(SUMMARY_COLUMNS, summary_cells(s, judgement["verdicts"]))) for s in judgement["summary"]]


def write_csv(path: Any, judgement: dict[str, Any]) -> None:
    """One row per measure and family, with every statistic, for spreadsheets and R."""
    import csv

    fields = ["measure", "family", "verdict", "note", "runs", "n_true", "n_random", "median_true", "median_random",
              "ratio", "auc", "auc_low", "auc_high", "auc_interval_kind", "auc_p", "auc_p_adj", "trend", "trend_p",
              "trend_p_adj", "tau", "tau_p", "tau_p_adj", "psi", "sign_error_mean", "sign_error_worst", "cmi",
              "cmi_sign", "overall_verdict"]
    by_measure = {s["measure"]: s for s in judgement["summary"]}
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for stat in judgement["verdicts"]:
            summary = by_measure[stat["measure"]]
            interval = stat.get("auc_interval") or [None, None]
            row = {k: stat.get(k) for k in fields if k in stat}
            row.update(median_true=stat["medians"].get("true"), median_random=stat["medians"].get("random-labels"),
                       auc_low=interval[0], auc_high=interval[1], psi=summary.get("psi_overall"),
                       overall_verdict=summary["verdict"],
                       **{k: summary.get(k) for k in ("sign_error_mean", "sign_error_worst", "cmi", "cmi_sign")})
            writer.writerow(row)


def markdown_table(judgement: dict[str, Any]) -> str:
    """The verdict table as Markdown, to paste into a paper."""
    lines = ["| " + " | ".join(SUMMARY_COLUMNS) + " |", "|" + "---|" * len(SUMMARY_COLUMNS)]
    for record in summary_records(judgement):
        lines.append("| " + " | ".join(record[c] for c in SUMMARY_COLUMNS) + " |")
    return "\n".join(lines)


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
