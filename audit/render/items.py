"""Item tables: `audit list`, the plan of `audit run --plan`, the paper comparison, `audit import`,
`audit expressivity` and `audit kernel`; each as a rich table on stdout, or one JSON document."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from audit.render import formats, tables
from audit.render.console import out_console
from audit.render.fit import plain_table
from audit.store.record import RunRecord

PLAN_COLUMNS = ["run_id", "variant", "seed", "model", "dataset", "state"]
NOT_TRAINED = ("complete", "diverged", "newer schema (refused)")  # audit.pipeline.plan.NOT_TRAINED (no torch here)
FROM_FITS, FROM_FLOPS = "bench/scaling.py fits", "FLOPs"  # audit.pipeline.scaling's names of the two estimates
KERNEL_KEYS = ["dataset", "train_size", "variant", "model", "bandwidth", "jitter", "train_error", "train_residual",
               "test_error", "rkhs_norm", "seconds", "solve_seconds", "memory_gib"]


def print_items(items: list[dict[str, Any]], as_json: bool, columns: Sequence[str], note: str = "") -> None:
    """The items as one JSON list, or as a table of the columns (lists and dicts as JSON) with a note under it."""
    if as_json:
        print(formats.dumps(items))
        return
    table = plain_table(None)
    for column in columns:
        table.add_column(column, overflow="fold")
    for item in items:
        table.add_row(*(tables.fmt(item[c]) if not isinstance(item[c], (list, dict)) else
                        json.dumps(item[c], ensure_ascii=False) for c in columns))
    console = out_console()
    console.print(table)
    if note:
        console.print(note)


def quantities(pairs: list[tuple[str, Any]], note: str = "") -> None:
    """A two-column table of (quantity, value) pairs."""
    print_items([{"quantity": k, "value": v} for k, v in pairs], False, ["quantity", "value"], note=note)


def duration(seconds: float) -> str:
    """Seconds as a person reads them: 42 s, 3 min 20 s, 2 h 5 min."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min {seconds % 60:.0f} s"
    return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:.0f} min"


def print_plan(document: dict[str, Any], as_json: bool) -> None:
    """The runs of `audit run --plan` (audit.pipeline.run.plan_run), the settings that vary between them, and how
    many are left to train in at most how long on this machine, then how long scoring them takes."""
    if as_json:
        print(formats.dumps(document))
        return
    items = document["runs"]
    constant = [c for c in ("model", "dataset", "state") if len({i[c] for i in items}) == 1 and len(items) > 1]
    columns = [c for c in PLAN_COLUMNS if c not in constant] + (["settings"] if any(i.get("settings") for i in items)
                                                                 else [])
    rows = [{**i, "≤ s": None if i.get("seconds_at_most") is None else f"{i['seconds_at_most']:.1f}"} for i in items]
    todo = sum(i["state"] not in NOT_TRAINED for i in items)
    note = f"store {document['store']}: {todo} of {len(items)} runs to train"
    if constant:
        note += " (every one " + ", ".join(f"{c} {items[0][c]}" for c in constant) + ")"
    estimate = document.get("estimate")
    if estimate is not None:
        columns.append("≤ s")
        note += (f"; at most {duration(estimate['seconds_at_most'])} on this machine if every run trains its whole "
                 f"epoch budget (runs stop once fitted; {training_source(estimate)})")
        note += scoring_note(estimate.get("scoring"))
    print_items(rows, False, columns, note=note)


def training_source(estimate: dict[str, Any]) -> str:
    """Which estimate the training time is: from the fits, from FLOPs, or how many runs each."""
    rate = f"the {estimate['matmul_gflops']:.0f} GFLOP/s matmul rate measured now"
    flops = f"from {FROM_FLOPS}: training at {estimate['training_fraction']} of {rate}"
    sources = {k: v for k, v in estimate.get("training_from", {}).items() if v}
    fits = estimate.get("fits")
    scaled = f"from {FROM_FITS} at {rate}" + (f" (theirs: {fits['matmul_gflops']:.0f})" if fits else "")
    if set(sources) == {FROM_FITS}:
        return scaled
    if FROM_FITS in sources:
        return f"{sources[FROM_FITS]} runs {scaled}, {sources[FROM_FLOPS]} {flops}"
    return flops


def scoring_note(scoring: dict[str, Any] | None) -> str:
    """The plan's line on scoring: how long computing the measures takes, and what the fits could not estimate."""
    if scoring is None:
        return ""
    if not scoring["computations"]:
        return "; nothing to score (every measure cached)"
    note = (f"; then about {duration(scoring['seconds'])} scoring {scoring['computations']:,} measure values "
            f"({scoring['measures']} measures a run, from {FROM_FITS}{extrapolated(scoring)})")
    if scoring["not_estimated"]:
        note += f"; not estimated: {', '.join(scoring['not_estimated'])}"
    return note


def extrapolated(estimate: dict[str, Any]) -> str:
    """How many runs lie outside the fits' parameter counts or train sizes (their estimates extrapolate)."""
    count = estimate.get("extrapolated", 0)
    return f", extrapolated beyond their range for {count} run{'s' * (count != 1)}" if count else ""


def print_score_plan(document: dict[str, Any], as_json: bool) -> None:
    """`audit score --plan` (audit.pipeline.plan.plan_score): per complete run the measures to compute and their
    seconds, per family the measures and seconds, and one line of total; notes and unreadable runs on stderr."""
    for line in document["notes"] + document["errors"]:
        print(f"audit: {line}", file=sys.stderr)
    if as_json:
        print(formats.dumps(document))
        return
    estimate, runs = document["estimate"], document["runs"]
    rows = [{**r, "to compute": len(r["to_compute"]), "≈ s": f"{r['seconds']:.1f}" + "+" * bool(r["not_estimated"])}
            for r in runs if r["to_compute"]]
    total = (f"store {document['store']}: {estimate['computations']:,} measure values to compute on {len(rows)} of "
             f"{len(runs)} complete runs")
    if not rows:
        out_console().print(f"store {document['store']}: nothing to compute: " + (
            f"every measure is cached on its {len(runs)} complete runs" if runs else "no complete run"),
            highlight=False)
        return
    columns = ["run_id", "variant", "seed"] + (["model"] if len({r["model"] for r in runs}) > 1 else [])
    print_items(rows, False, [*columns, "to compute", "≈ s"])
    families = [{**f, "measures": ", ".join(f["measures"]), "≈ s": f"{f['seconds']:.1f}" + "+" * bool(
        f["not_estimated"])} for f in document["families"]]
    total += (f", about {duration(estimate['seconds'])} on this machine (from {FROM_FITS} at the "
              f"{estimate['matmul_gflops']:.0f} GFLOP/s matmul rate measured now{extrapolated(estimate)})")
    if estimate["not_estimated"]:
        total += f"; + not estimated: {', '.join(estimate['not_estimated'])}"
    if estimate["at_default_settings"]:
        total += f"; estimated at the default settings of {', '.join(estimate['at_default_settings'])}"
    print_items(families, False, ["family", "measures", "runs", "≈ s"], note=total)


def print_paper(paper: str, lines: list[dict[str, Any]], as_json: bool) -> None:
    """Our numbers beside the paper's (audit.judge.paper.compare), row by row."""
    if as_json:
        print(formats.dumps({"paper": paper, "rows": lines}))
        return
    table = Table(title=f"ours beside Zhang et al. 2017, {paper}", title_justify="left")
    for column in lines[0]:
        table.add_column(column, justify="left" if column in ("model", "variant", "quantity") else "right")
    for line in lines:
        table.add_row(*(tables.fmt(v, 2) for v in line.values()))
    console = out_console()
    console.print(table)
    console.print("— : no matching complete run in this store. Figure 1 values are read off the figure (≈).")


def print_import(summary: dict[str, Any], as_json: bool) -> None:
    """The run `audit import` added: its id, store, accuracies and whether it fitted."""
    if as_json:
        print(formats.dumps(summary))
        return
    out_console().print(f"imported run {summary['run_id']} into {summary['store']}: train acc "
                        f"{summary['train_acc']:.4f}, test acc {summary['test_acc']:.4f}, "
                        f"fitted {tables.fmt(summary['fitted'])}")


def print_expressivity(document: dict[str, Any], as_json: bool) -> None:
    """Theorem 1's check (audit.theory.expressivity): the construction, its growth in n, the deep network."""
    if as_json:
        print(formats.dumps(document))
        return
    out_console().print(f"{document['points']:,} points in {document['d']} dimensions ({document['inputs']}), "
                        f"targets: {document['variant'] or 'real values'}; {document['merged_duplicates']} "
                        "duplicates merged")
    rows = [("weights (2n + d)", f"{document['weights']:,}"),
            ("max |c(x_i) − y_i|", tables.fmt(document["max_error"], 3)),
            ("condition number of A", f"{tables.fmt(document['condition_number'], 3)} ({document['condition_norm']})"),
            ("smallest projection gap / spread", tables.fmt(document["relative_gap"], 3)),
            ("directions tried", str(document["directions_tried"])),
            ("‖a‖, ‖b‖, ‖w‖", ", ".join(tables.fmt(document[k], 4) for k in ("norm_a", "norm_b", "norm_w")))]
    if "accuracy" in document:
        rows.append(("train accuracy (nearest label)", tables.fmt(document["accuracy"], 4)))
    quantities(rows)
    print_items(document["growth"], False, ["n", "max_error", "condition_number", "relative_gap"],
                note="error and conditioning against n (the first n points, directions from the same seed)")
    if "deep" in document:
        deep = document["deep"]
        quantities([(k.replace("_", " "), tables.fmt(v, 3) if isinstance(v, float) else f"{v:,}")
                    for k, v in deep.items()], note=f"the corollary's depth-{deep['depth']} network, built from the "
                                                    "two-layer one")


def print_kernel(document: dict[str, Any], run_id: str, as_json: bool) -> None:
    """A kernel fit (audit.theory.kernel_runs): errors, RKHS norm, time and memory; the store it went into."""
    if as_json:
        print(formats.dumps(document))
        return
    stored = f" written to {document['store']}" if "store" in document else ""
    quantities([(k, document[k]) for k in KERNEL_KEYS], note=f"run {run_id}{stored}")


def print_verify(document: dict[str, Any], as_json: bool) -> None:
    """`audit verify` (audit.pipeline.verify): a row per file that is not verified, then the counts."""
    if as_json:
        print(formats.dumps(document))
        return
    root = document["store"]
    rows = [{"file": str(Path(f["path"]).relative_to(root)) if f["path"].startswith(root) else f["path"],
             "state": f["state"], "problem": f["message"].removeprefix(f["path"]).lstrip(": ")}
            for f in document["files"] if f["state"] != "verified"]
    counts = ", ".join(f"{n} {state}" for state, n in sorted(document["counts"].items()))
    note = f"store {root}: {counts or 'no files'} ({document['seconds']:.2f} s)"
    if rows:
        print_items(rows, False, ["file", "state", "problem"], note=note)
    else:
        out_console().print(note)


def analysis_estimate(kind: str, estimate: dict[str, Any]) -> str:
    """The line printed before `audit landscape` or `audit density` starts: what it will cost."""
    runs, todo = estimate["runs"], estimate["to_compute"]
    if not todo:
        return f"{kind} of {runs} run{'s' * (runs != 1)}: every one cached with these settings"
    unit = "example forward passes" if kind == "landscape" else "Hessian-vector products × examples"
    return (f"{kind} of {runs} run{'s' * (runs != 1)} ({todo} to compute): {estimate['forward_passes']:,} {unit}, "
            f"about {duration(estimate['seconds'])} on this machine")


def analysis_run(kind: str, record: RunRecord, computed: bool) -> dict[str, Any]:
    """One run of `audit landscape` / `audit density` in its JSON document: what was cached, in numbers."""
    entry: dict[str, Any] = {"run_id": record.run_id, "variant": record.spec.variant_label, "seed": record.spec.seed,
                             "computed": computed}
    if kind == "landscape":
        line, plane = record.analyses["landscape/line"], record.analyses["landscape/plane"]
        alpha, loss = line["arrays"]["alpha"], line["arrays"]["loss"]
        centre = plane["arrays"]["loss"][len(plane["arrays"]["a"]) // 2, len(plane["arrays"]["b"]) // 2]
        entry.update(init_loss=float(loss[alpha == 0.0][0]), final_loss=float(loss[alpha == 1.0][0]),
                     plane_centre_loss=float(centre), plane_max_loss=float(plane["arrays"]["loss"].max()),
                     seconds=float(line["attrs"]["seconds"]) + float(plane["attrs"]["seconds"]))
    else:
        cached = record.analyses["density"]
        entry.update(trace_estimate=cached["attrs"].get("trace_estimate"),
                     largest_ritz_value=float(cached["arrays"]["nodes"].max()),
                     seconds=float(cached["attrs"]["seconds"]))
    return entry


def print_analysis(document: dict[str, Any], as_json: bool) -> None:
    """`audit landscape` / `audit density`: one JSON document, or a line per run and the figures written."""
    if as_json:
        print(formats.dumps(document))
        return
    console = out_console()
    for run in document["runs"]:
        if document["kind"] == "landscape":
            numbers = (f"train loss {run['init_loss']:.4g} at init, {run['final_loss']:.4g} final; plane up to "
                       f"{run['plane_max_loss']:.4g}")
        else:
            numbers = f"Hessian trace ≈ {run['trace_estimate']:.4g}, largest Ritz value {run['largest_ritz_value']:.4g}"
        console.print(f"{run['run_id']}  {run['variant']} seed {run['seed']}: {numbers}", highlight=False)
    for path in document["figures"]:
        console.print(path, highlight=False)
    for note in document["notes"]:
        print(f"audit: {note}", file=sys.stderr)
