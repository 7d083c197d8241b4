"""Machine-readable output: the JSON document, CSV and Markdown tables, the measure catalogue."""

from __future__ import annotations

import csv
import json
import math
from typing import Any

from audit.render.tables import SUMMARY_COLUMNS, header, summary_cells


def document(store: str, rows: list[dict[str, Any]], judgement: dict[str, Any],
             errors: list[str] | None = None) -> dict[str, Any]:
    return {"store": store, "header": header(store, rows), "rule": judgement["rule"], "runs": rows,
            "verdicts": judgement["verdicts"], "summary": judgement["summary"],
            "correction": judgement.get("correction"), "errors": errors or []}


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


def summary_records(judgement: dict[str, Any]) -> list[dict[str, str]]:
    return [dict(zip(SUMMARY_COLUMNS, map(str, summary_cells(s, judgement["verdicts"])))) for s in judgement["summary"]]


def write_csv(path: Any, judgement: dict[str, Any]) -> None:
    """One row per measure and family, with every statistic, for spreadsheets and R."""
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
