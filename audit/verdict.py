"""Measures × runs → statistics and verdicts, per measure and family (DESIGN.md, "Regimes and verdicts").

A family is a set of runs identical but for variant and seed. Per measure and family:
  auc   — over all (random-labels run, true run) pairs, the fraction where the measure is larger on
          the random-labels run (ties count one half);
  trend — Kendall τ-b of the measure against the corruption p over the label axis;
  tau   — Kendall τ-b of the measure against the generalization gap over all complete runs.
The verdict orients auc and trend by the measure's direction and applies the thresholds below.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from statistics import median
from typing import Any

from scipy import stats

import measures
from audit.spec import RunSpec
from audit.store import RunRecord

AUC_SEPARATES = 0.9  # oriented auc at or above this: the measure separates random from true labels
AUC_INVERTED = 0.1  # oriented auc at or below this: it separates them the wrong way
TREND_GROWS = 0.5  # oriented Kendall τ-b against p at or above this: it grows with the corruption

RULE = {
    "distinguishes": f"oriented auc ≥ {AUC_SEPARATES} and oriented trend ≥ {TREND_GROWS}",
    "inverted": f"oriented auc ≤ {AUC_INVERTED}",
    "fails": "otherwise, or when the statistics are undefined (a constant measure)",
    "oriented": "auc and trend are flipped for measures where smaller means more complex",
    "auc": "fraction of (random-labels, true) run pairs where the measure is larger on random labels; ties ½",
    "trend": "Kendall τ-b of the measure against the corruption p over true, corrupt and random-labels runs",
    "tau": "Kendall τ-b of the measure against the gap (train acc − test acc) over all complete runs",
}


def family_labels(specs: list[RunSpec]) -> dict[str, str]:
    """A readable name per family: model·dataset, plus the settings that differ between families."""
    by_family: dict[str, RunSpec] = {}
    for spec in specs:
        by_family.setdefault(spec.family_key(), spec)
    skip = {"variant", "corrupt", "seed", "model", "dataset"}
    varying = [f.name for f in dataclasses.fields(RunSpec) if f.name not in skip
               and len({getattr(s, f.name) for s in by_family.values()}) > 1]
    labels = {}
    for key, spec in by_family.items():
        extra = "".join(f" {name}={getattr(spec, name)}" for name in varying)
        labels[key] = f"{spec.model}·{spec.dataset}{extra}"
    return labels


def run_rows(records: list[RunRecord], names: list[str]) -> list[dict[str, Any]]:
    """One plain row per run, in the shape of the JSON document."""
    from audit.score import measure_value

    labels = family_labels([r.spec for r in records])
    rows = []
    for record in records:
        spec, attrs = record.spec, record.attrs
        train_acc, test_acc = attrs.get("train_acc"), attrs.get("test_acc")
        gap = train_acc - test_acc if train_acc is not None and test_acc is not None else None
        rows.append({
            "run_id": record.run_id, "family": labels[spec.family_key()], "model": spec.model,
            "dataset": spec.dataset, "variant": spec.variant, "corrupt": spec.corrupt, "seed": spec.seed,
            "status": record.status, "fitted": record.fitted, "train_acc": train_acc, "test_acc": test_acc,
            "gap": gap, "epochs": attrs.get("epochs"), "steps_to_fit": attrs.get("steps_to_fit"),
            "measures": {name: measure_value(record, name) for name in names},
            "seconds": {name: record.measures[name].get("seconds") for name in names if name in record.measures},
        })
    order = {name: i for i, name in enumerate(("true", "corrupt", "random-labels", "shuffled-pixels",
                                               "random-pixels", "gaussian"))}
    rows.sort(key=lambda r: (r["family"], order[r["variant"]], r["corrupt"] or 0.0, r["seed"], r["run_id"]))
    return rows


def pairwise_auc(random_values: list[float], true_values: list[float]) -> float | None:
    if not random_values or not true_values:
        return None
    wins = sum((r > t) + 0.5 * (r == t) for r in random_values for t in true_values)
    return wins / (len(random_values) * len(true_values))


def kendall(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 2 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    tau = stats.kendalltau(xs, ys).statistic
    return None if tau is None or math.isnan(tau) else float(tau)


def judge_family(rows: list[dict[str, Any]], name: str, direction: int) -> dict[str, Any]:
    """Statistics and verdict of one measure on the complete runs of one family."""
    runs = [r for r in rows if r["status"] == "complete" and r["measures"].get(name) is not None]
    values = [r["measures"][name] for r in runs]
    by_variant: dict[str, list[float]] = defaultdict(list)
    for r in runs:
        label = r["variant"] if r["variant"] != "corrupt" else f"corrupt:{r['corrupt']:g}"
        by_variant[label].append(r["measures"][name])
    medians = {label: median(v) for label, v in by_variant.items()}
    constant = len(set(values)) < 2
    label_axis = [r for r in runs if r["corrupt"] is not None]
    with_gap = [r for r in runs if r["gap"] is not None]
    auc = None if constant else pairwise_auc(by_variant.get("random-labels", []), by_variant.get("true", []))
    trend = None if constant else kendall([r["corrupt"] for r in label_axis], [r["measures"][name] for r in label_axis])
    tau = None if constant else kendall([r["measures"][name] for r in with_gap], [r["gap"] for r in with_gap])
    seconds = [r["seconds"][name] for r in rows if r.get("seconds", {}).get(name) is not None]
    return {"measure": name, "family": rows[0]["family"] if rows else None, "runs": len(runs),
            "seconds_per_run": sum(seconds) / len(seconds) if seconds else None, "medians": medians, "auc": auc, "trend": trend, "tau": tau,
            "verdict": verdict_of(auc, trend, direction)}


def verdict_of(auc: float | None, trend: float | None, direction: int) -> str:
    if auc is None:
        return "fails"
    oriented_auc = auc if direction > 0 else 1.0 - auc
    oriented_trend = None if trend is None else trend * direction
    if oriented_auc <= AUC_INVERTED:
        return "inverted"
    if oriented_auc >= AUC_SEPARATES and oriented_trend is not None and oriented_trend >= TREND_GROWS:
        return "distinguishes"
    return "fails"


def judge(rows: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """Verdicts for every measure in every family, in the order of names."""
    families: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        families[row["family"]].append(row)
    out = []
    for name in names:
        direction = measures.get(name).direction
        for family_rows in families.values():
            out.append(judge_family(family_rows, name, direction))
    return out
