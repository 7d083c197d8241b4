"""The benchmark's leaderboard printed: three rich tables that fit 100 columns (the ranks, the randomization test,
the hyperparameter sweeps), one JSON document, Markdown, or a CSV file; notices and errors on stderr."""

from __future__ import annotations

import csv
import sys
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from audit.judge.leaderboard import PartRows, leaderboard
from audit.judge.rows import run_rows
from audit.render.console import out_console
from audit.render.formats import dumps
from audit.render.report import Output
from audit.render.tables import VERDICT_STYLE, fmt

WIDTH = 100
VERDICT_MARK = {"distinguishes": "✓", "fails": "✗", "inverted": "⇅", "unstable": "~", "insufficient": "?",
                "undefined": "∅"}
AXIS_LABELS = {"weight_decay": "wd", "train_size": "size", "batch_size": "batch", "lr_decay": "decay"}


def benchmark_document(bench: Any, correction: str) -> dict[str, Any]:
    """The judged benchmark (an audit.pipeline.benchmark.Benchmark) as one plain document."""
    parts = [PartRows(p.name, run_rows(p.scored.records, bench.ranked), bool(p.sweep)) for p in bench.parts]
    board = leaderboard(parts, bench.judged, correction)
    experiments = [{"name": p.name, "description": p.description, "store": str(p.scored.root), "runs": p.runs,
                    "complete": sum(r["status"] == "complete" for r in rows.rows), "sweep": list(p.sweep)}
                   for p, rows in zip(bench.parts, parts)]
    return {"benchmark": {"version": bench.version, "suite": bench.suite, "experiments": experiments,
                          "builtins": bench.builtins, "asked": bench.asked, "scored": bench.scored,
                          "seconds": round(bench.seconds, 1)},
            **board, "notices": bench.notices, "errors": bench.errors}


def short(column: dict[str, Any]) -> str:
    """A column's header in the ranks table: at most 7 characters a line."""
    if column["key"].startswith("psi."):
        axis = column["key"][4:]
        return f"Ψ\n{AXIS_LABELS.get(axis, axis)}"
    return column["label"].replace("-", "\n", 1)


def compact(padding: int = 1) -> Table:
    return Table(box=box.SIMPLE_HEAD, padding=(0, padding), pad_edge=False, show_edge=False)


def place(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"


def ranks_table(document: dict[str, Any]) -> Table:
    table = compact(padding=0)
    for header in ("#", "measure", "score"):
        table.add_column(header, justify="left" if header == "measure" else "right")
    for column in document["columns"]:
        table.add_column(short(column), justify="right")
    for entry in document["leaderboard"]:
        table.add_row(place(entry["rank"]), entry["measure"], fmt(entry["score"], 2),
                      *(place(entry["ranks"][c["key"]]) for c in document["columns"]))
    return table


def randomization_cell(entry: dict[str, Any], key: str) -> Text:
    verdict = entry.get(f"{key}.verdict")
    auc, trend = entry.get(f"{key}.auc"), entry.get(f"{key}.trend")
    text = Text(VERDICT_MARK.get(verdict, "·"), style=VERDICT_STYLE.get(verdict, ""))
    text.append(f" {fmt(auc, 2)} {'—' if trend is None else f'{trend:+.2f}'}")
    return text


def randomization_table(document: dict[str, Any]) -> Table:
    keys = [c["key"] for c in document["columns"] if c["protocol"] == "randomization"]
    table = compact()
    table.add_column("#", justify="right")
    table.add_column("measure")
    for key in keys:
        table.add_column(key, justify="right")
    for entry in document["leaderboard"]:
        table.add_row(place(entry["rank"]), entry["measure"], *(randomization_cell(entry, k) for k in keys))
    return table


def sweeps_table(document: dict[str, Any]) -> Table | None:
    columns = [c for c in document["columns"] if c["protocol"] == "sweeps"]
    if not columns:
        return None
    table = compact()
    table.add_column("#", justify="right")
    table.add_column("measure")
    for column in columns:
        table.add_column(short(column).replace("\n", " "), justify="right")
    for entry in document["leaderboard"]:
        cells = [fmt(entry.get(c["key"]), 2) if c["key"] != "cmi" else signed(entry.get("cmi")) for c in columns]
        table.add_row(place(entry["rank"]), entry["measure"], *cells)
    return table


def signed(value: float | None) -> str:
    return "—" if value is None else f"{value:+.3f}"


def legend(document: dict[str, Any]) -> str:
    marks = ", ".join(f"{mark} {verdict}" for verdict, mark in VERDICT_MARK.items())
    return (f"aggregation: {document['aggregation']}.\n{document['orientation']}. Verdicts: {marks}. Correction: "
            f"{document['correction']['method']} over the {document['correction']['size']} measures ranked (the "
            "benchmark's own family: the built-ins plus the measures asked or loaded from plugins)."
            + "".join(f"\n{line}." for line in document["left_out"]))


def print_benchmark(console: Console, document: dict[str, Any]) -> None:
    for experiment in document["benchmark"]["experiments"]:
        console.print(f"{experiment['name']}: {experiment['complete']} of {experiment['runs']} runs complete in "
                      f"{experiment['store']}")
    head = document["benchmark"]
    console.print(f"leaderboard of benchmark v{head['version']} ({head['suite']} suite): each measure's rank per "
                  "column and overall", width=WIDTH)
    console.print(ranks_table(document), width=WIDTH)
    console.print("randomization test: verdict, oriented auc, oriented trend (medians over each experiment's "
                  "families)", width=WIDTH)
    console.print(randomization_table(document), width=WIDTH)
    sweeps = sweeps_table(document)
    if sweeps is not None:
        console.print("hyperparameter sweeps over the true-label runs of "
                      f"{', '.join(document['sweep_experiments'])} (oriented)",
                      width=WIDTH)
        console.print(sweeps, width=WIDTH)
    console.print(legend(document), width=WIDTH)


def markdown(document: dict[str, Any]) -> str:
    """The leaderboard as one Markdown table: rank, measure, score, then every column's value and rank."""
    columns = document["columns"]
    head = ["#", "measure", "score"] + [c["label"] for c in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for entry in document["leaderboard"]:
        cells = [place(entry["rank"]), f"`{entry['measure']}`", fmt(entry["score"], 2)]
        cells += [f"{value_text(entry, c)} ({place(entry['ranks'][c['key']])})" for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"*{document['aggregation']}; {document['orientation']}.*"] + [f"*{line}.*" for line in document["left_out"]]
    return "\n".join(lines + [""] + notes)


def value_text(entry: dict[str, Any], column: dict[str, Any]) -> str:
    if column["protocol"] == "randomization":
        return randomization_cell(entry, column["key"]).plain
    return signed(entry.get("cmi")) if column["key"] == "cmi" else fmt(entry.get(column["key"]), 2)


def write_csv(path: Any, document: dict[str, Any]) -> None:
    """One row per measure: rank, score, then per column its value(s) and rank."""
    fields = ["rank", "measure", "measure_family", "direction", "score"]
    for column in document["columns"]:
        key = column["key"]
        values = [f"{key}.verdict", f"{key}.auc", f"{key}.trend"] if column["protocol"] == "randomization" else [key]
        fields += values + [f"rank {key}"]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for entry in document["leaderboard"]:
            writer.writerow({**entry, **{f"rank {k}": v for k, v in entry["ranks"].items()}})


def emit_benchmark(bench: Any, output: Output) -> int:
    """Judge and print the benchmark as `output` says; the exit code: 1 when a run failed, else 0."""
    document = benchmark_document(bench, output.correction)
    for line in document["notices"]:
        print(f"audit: {line}", file=sys.stderr)
    if output.csv is not None:
        write_csv(output.csv, document)
    if output.as_json:
        print(dumps(document))
    elif output.markdown:
        print(markdown(document))
    else:
        print_benchmark(out_console(), document)
    for line in document["errors"]:
        print(f"audit: {line}", file=sys.stderr)
    return 1 if document["errors"] else 0
