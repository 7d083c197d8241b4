"""Measures × runs → verdicts: the randomization test per family, combined and corrected across measures."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from statistics import median
from typing import Any

import numpy as np
from scipy import stats

from audit.judge.rows import input_variants, variant_label
from audit.judge.statistics import (
    BOOTSTRAP_MIN_RUNS,
    BOOTSTRAP_RESAMPLES,
    HOEFFDING_DELTA,
    adjust,
    auc_test,
    kendall,
    median_ratio,
    tau_interval,
)
from audit.judge.sweeps import sweep_stats

ALPHA = 0.05  # family-wise error rate of the corrected tests

AUC_SEPARATES = 0.9  # oriented auc at or above this: the measure separates random from true labels

AUC_INVERTED = 0.1  # oriented auc at or below this: it separates them the wrong way

TREND_GROWS = 0.5  # oriented Kendall τ-b against p at or above this: it grows with the corruption

MIN_SEEDS = 3  # fewest runs each of true and random-labels for a verdict (in a family; pooled over families

#               that have at least 2 of each for the overall verdict)




CORRECTIONS = ("holm", "bh", "none")

VERDICT_ORDER = ("distinguishes", "unstable", "insufficient", "undefined", "fails", "inverted")


def rule(correction: str = "holm") -> dict[str, str]:
    """The rule in force, as printed under the table and written into the JSON."""
    method = {"holm": "Holm", "bh": "Benjamini–Hochberg", "none": "no"}[correction]
    return {
        "distinguishes": f"in every family with at least 2 runs each of true and random-labels: oriented auc ≥ {AUC_SEPARATES} and oriented trend ≥ "
                         f"{TREND_GROWS}; and the families' one-sided trend p-values, combined (Stouffer, weights "
                         f"√runs) and corrected across measures, ≤ {ALPHA}",
        "inverted": f"oriented auc ≤ {AUC_INVERTED} in every family with at least 2 runs of each",
        "unstable": "different effects (distinguishes, fails, inverted) in different families",
        "insufficient": f"fewer than {MIN_SEEDS} complete runs each of true and random-labels (in a family; "
                        "overall, pooled over the families with at least 2 of each), or a separation whose combined "
                        "trend is not yet significant after correction: the note says how many more seeds",
        "undefined": "the measure is null with its reason (not defined for these runs) on so many runs that fewer "
                     "than 2 of true or of random-labels have a value, in every family: not the same as failing",
        "fails": "otherwise, or when the values are all equal (a constant measure)",
        "oriented": "auc and trend are flipped for measures where smaller means more complex",
        "correction": f"{method} correction per kind of test over a fixed family of measures (every measure "
                      "cached in the store, whatever is shown): across them for the combined and overall p-values, "
                      "across them within a family of runs for a family's own p-values",
        "auc": "fraction of (random-labels, true) run pairs where the measure is larger on random labels, ties ½; "
               f"interval by bootstrap over seeds ({BOOTSTRAP_RESAMPLES} resamples) when both groups have ≥ "
               f"{BOOTSTRAP_MIN_RUNS} runs; with fewer, where resampling cannot inform, the table shows the exact "
               "one-sided Mann–Whitney p instead (the JSON keeps the exact null distribution's central 95% range "
               "as auc_interval, kind exact-null)",
        "trend": "Kendall τ-b of the measure against the corruption p over true, corrupt and random-labels runs",
        "tau": "Kendall τ-b of the measure against the gap (train acc − test acc) over all complete runs",
        "psi": "granulated Kendall Ψ over true-label runs: τ within groups differing in one hyperparameter, "
               "averaged per axis and then over axes",
        "sign_error": f"over pairs of true-label runs differing in one hyperparameter, the fraction where the "
                      f"oriented measure moves against the gap; pairs whose gap difference is within the "
                      f"Hoeffding bound of the test sets (δ = {HOEFFDING_DELTA}) are dropped; worst = worst axis",
        "cmi": "conditional mutual information (bits) of sign(Δmeasure) and sign(Δgap) given the axis, reported "
               "with the sign of their correlation",
    }


def family_stats(rows: list[dict[str, Any]], name: str, direction: int, log: bool) -> dict[str, Any]:
    """The randomization-test statistics of one measure on the complete runs of one family."""
    runs = [r for r in rows if r["status"] == "complete" and r["measures"].get(name) is not None]
    values = [r["measures"][name] for r in runs]
    by_variant: dict[str, list[float]] = defaultdict(list)
    for r in runs:
        by_variant[variant_label(r)].append(r["measures"][name])
    true_values, random_values = by_variant.get("true", []), by_variant.get("random-labels", [])
    complete = [r for r in rows if r["status"] == "complete"]
    nulls = [r["reasons"][name] for r in complete
             if r["measures"].get(name) is None and r.get("reasons", {}).get(name)]  # null with its reason
    undefined = bool(nulls) and min(len(true_values), len(random_values)) < 2 and all(
        sum(variant_label(r) == v for r in complete) >= 2 for v in ("true", "random-labels"))
    constant = len(set(values)) < 2 and not undefined
    label_axis = [r for r in runs if r["corrupt"] is not None]
    with_gap = [r for r in runs if r["gap"] is not None]
    oriented = "greater" if direction > 0 else "less"
    out: dict[str, Any] = {
        "measure": name, "family": rows[0]["family"], "runs": len(runs), "n_true": len(true_values),
        "n_random": len(random_values), "medians": {k: median(v) for k, v in by_variant.items()},
        "ratio": median_ratio(random_values, true_values, log),
        "label_levels": len({r["corrupt"] for r in label_axis}),
        "complete": len(complete), "nulls": len(nulls),
        "reason": Counter(nulls).most_common(1)[0][0] if nulls else None,
        "undefined": undefined,
        "unfitted": dict(Counter(variant_label(r) for r in complete if r.get("fitted") is False)),
    }
    if constant or undefined:
        out.update(auc=None, auc_interval=None, auc_interval_kind=None, auc_p=None, trend=None, trend_p=None,
                   tau=None, tau_p=None, input={}, constant=True)
        return out
    out.update(auc_test(random_values, true_values, direction))
    out["trend"], out["trend_p"] = kendall([r["measures"][name] for r in label_axis],
                                           [r["corrupt"] for r in label_axis], oriented)
    out["tau"], out["tau_p"] = kendall([r["measures"][name] for r in with_gap], [r["gap"] for r in with_gap])
    out["input"] = {v: {k: test[k] for k in ("auc", "auc_p")}
                    for v in input_variants(by_variant) if by_variant.get(v) and true_values
                    for test in [auc_test(by_variant[v], true_values, direction)]}
    out["constant"] = False
    return out


def seeds_needed(p: float | None, tests: int, families: list[dict[str, Any]]) -> int:
    """Seeds per variant and family for a one-sided p to pass the corrected test, if the effect stays:
    z grows with the square root of the number of runs."""
    z_now = stats.norm.isf(p) if p is not None and 0 < p < 1 else 0.0
    if z_now <= 0:
        return 0
    z_needed = stats.norm.isf(ALPHA / max(tests, 1))
    per_level = max(max(f["n_true"], f["n_random"]) for f in families)
    return max(1, math.ceil(per_level * (z_needed / z_now) ** 2) - per_level)


def effect(stat: dict[str, Any], direction: int) -> str:
    """The randomization-test effect in one family, by the named thresholds alone."""
    if stat.get("undefined"):
        return "undefined"
    if stat["constant"] or stat["auc"] is None:
        return "fails"
    oriented_auc = stat["auc"] if direction > 0 else 1.0 - stat["auc"]
    oriented_trend = None if stat["trend"] is None else stat["trend"] * direction
    if oriented_auc <= AUC_INVERTED:
        return "inverted"
    if oriented_auc >= AUC_SEPARATES and oriented_trend is not None and oriented_trend >= TREND_GROWS:
        return "distinguishes"
    return "fails"


def missing_seeds(stat: dict[str, Any]) -> str:
    """'' when the family has enough runs for a verdict, else what it lacks."""
    if stat["constant"]:
        return ""
    missing = {"true": MIN_SEEDS - stat["n_true"], "random-labels": MIN_SEEDS - stat["n_random"]}
    return ", ".join(f"{v} more seed{'s' * (v > 1)} of {k}" for k, v in missing.items() if v > 0)


def family_verdict(stat: dict[str, Any], direction: int) -> tuple[str, str]:
    """(verdict, note) of one measure in one family; its trend p corrected across the measures of the family."""
    if stat.get("undefined"):
        return "undefined", undefined_note(stat)
    if stat["constant"]:
        return "fails", "constant: the statistics are undefined, and no number of runs separates"
    used = f"values on {stat['runs']} of {stat['complete']} runs ({undefined_note(stat)})" if stat["nulls"] else ""
    lacking = missing_seeds(stat)
    kind = effect(stat, direction)
    if lacking:
        kind, note = "insufficient", f"needs {lacking}"
    elif kind == "distinguishes" and not (stat.get("trend_p_adj") is not None and stat["trend_p_adj"] <= ALPHA):
        kind, note = "insufficient", "separates, but its trend is not significant after correction"
    else:
        note = "separates the wrong way" if kind == "inverted" else ""
    return kind, "; ".join(filter(None, [note, used]))


def unfitted_note(unfitted: dict[str, int]) -> str:
    """The runs judged that never reached the fit target: a randomization test of unfitted models, said."""
    if not unfitted:
        return ""
    counts = ", ".join(f"{n} {variant}" for variant, n in unfitted.items())
    return (f"not all fitted: {counts} run{'s' * (sum(unfitted.values()) != 1)} did not reach the fit target, "
            "so this is not a randomization test of fitted models (train longer: --epochs)")


def undefined_note(stat: dict[str, Any]) -> str:
    """Why the measure has no value on some runs of a family: its own reason and on how many."""
    return f"null on {stat['nulls']} of {stat['complete']} runs: {stat['reason']}"


def overall_verdict(mine: list[dict[str, Any]], direction: int, p_raw: float | None, p_adj: float | None,
                    tests: int) -> tuple[str, list[str]]:
    """One verdict per measure: the common effect of the families with enough runs, with the evidence of all
    of them combined (Stouffer) and corrected across measures; different effects make it unstable."""
    if mine and all(s.get("undefined") for s in mine):
        return "undefined", [f"not defined for these runs: {mine[0]['reason']}"]
    judged = [s for s in mine if s["constant"] or min(s["n_true"], s["n_random"]) >= 2]
    if all(s["constant"] for s in mine) and mine:
        return "fails", ["constant: the statistics are undefined"]
    totals = {"true": sum(s["n_true"] for s in judged), "random-labels": sum(s["n_random"] for s in judged)}
    lacking = {k: MIN_SEEDS - v for k, v in totals.items() if v < MIN_SEEDS}
    if not judged or lacking:
        need = ", ".join(f"{v} more run{'s' * (v > 1)} of {k}" for k, v in lacking.items()) or "runs"
        return "insufficient", [f"needs {need} (families with at least 2 of each count)"]
    kinds = {effect(s, direction) for s in judged}
    if len(kinds) > 1:
        by_kind: dict[str, list[str]] = defaultdict(list)
        for s in judged:
            by_kind[effect(s, direction)].append(s["family"])
        common = max(by_kind, key=lambda k: len(by_kind[k]))
        others = "; ".join(f"{k} in {', '.join(v)}" for k, v in by_kind.items() if k != common)
        return "unstable", [f"{common} in {len(by_kind[common])} of {len(judged)} families; {others}"]
    kind = kinds.pop()
    if kind != "distinguishes":
        notes = ["constant: the statistics are undefined"] if all(s["constant"] for s in judged) else []
        return kind, notes
    if p_adj is not None and p_adj <= ALPHA:
        return "distinguishes", []
    more = seeds_needed(p_raw, tests, judged)
    shown = "undefined" if p_adj is None else f"{p_adj:.2g}"
    return "insufficient", [f"separates, but the combined trend's corrected p = {shown} > {ALPHA}: about "
                            f"{more} more seed{'s' * (more > 1)} per variant and family"]


def combined_trend_p(mine: list[dict[str, Any]]) -> float | None:
    """Stouffer's combination of the families' one-sided trend p-values, weighted by sqrt(runs)."""
    present = [(s["trend_p"], s["runs"]) for s in mine if s.get("trend_p") is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0][0]
    ps = np.clip([p for p, _ in present], 1e-300, 1 - 1e-16)
    weights = np.sqrt([n for _, n in present])
    return float(stats.combine_pvalues(ps, method="stouffer", weights=weights).pvalue)


def judge(rows: list[dict[str, Any]], judged: dict[str, dict[str, Any]], correction: str = "holm") -> dict[str, Any]:
    """Per-family statistics and verdicts, and one summary per measure (overall verdict and sweep protocols).
    `judged` maps each measure to judge, in order, to what judging needs of it: its direction (+1: larger means
    more complex), its family and whether it is reported as a log."""
    families: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        families[row["family"]].append(row)
    complete = [r for r in rows if r["status"] == "complete"]
    per_family: list[dict[str, Any]] = []
    summaries: list[dict[str, Any]] = []
    for name, measure_ in judged.items():
        mine = [family_stats(family_rows, name, measure_["direction"], measure_["log"]) for family_rows in families.values()]
        per_family += mine
        runs = [r for r in complete if r["measures"].get(name) is not None and r["gap"] is not None]
        values, gaps = [r["measures"][name] for r in runs], [r["gap"] for r in runs]
        tau, tau_p = kendall(values, gaps)
        seconds = [r["seconds"][name] for r in rows if r.get("seconds", {}).get(name) is not None]
        pooled: dict[str, list[float]] = defaultdict(list)
        for r in runs:
            pooled[variant_label(r)].append(r["measures"][name])
        summaries.append({"measure": name, "measure_family": measure_["family"], "direction": measure_["direction"],
                          "medians": {k: median(v) for k, v in pooled.items()},
                          "tau": tau, "tau_p": tau_p, "tau_interval": tau_interval(values, gaps) if tau else None,
                          "trend_p": combined_trend_p(mine),
                          "seconds_per_run": sum(seconds) / len(seconds) if seconds else None,
                          **sweep_stats(rows, name, measure_["direction"])})
    for family in families:  # within a family, across the measures judged on it
        stats_ = [s for s in per_family if s["family"] == family]
        for key in ("auc_p", "trend_p", "tau_p"):
            for stat, adjusted in zip(stats_, adjust([s.get(key) for s in stats_], correction)):
                stat[f"{key}_adj"] = adjusted
    for key in ("tau_p", "trend_p"):
        for summary, adjusted in zip(summaries, adjust([s[key] for s in summaries], correction)):
            summary[f"{key}_adj"] = adjusted
    tests = sum(s["trend_p"] is not None for s in summaries)
    for stat in per_family:
        stat["verdict"], stat["note"] = family_verdict(stat, judged[stat["measure"]]["direction"])
        stat["note"] = "; ".join(filter(None, [stat["note"], unfitted_note(stat["unfitted"])]))
    for summary in summaries:
        mine = [s for s in per_family if s["measure"] == summary["measure"]]
        summary["verdict"], summary["notes"] = overall_verdict(mine, summary["direction"], summary["trend_p"],
                                                               summary["trend_p_adj"], tests)
        summary["unfitted"] = dict(sum((Counter(s["unfitted"]) for s in mine), Counter()))
        summary["notes"] += [unfitted_note(summary["unfitted"])] if summary["unfitted"] else []
        summary["families"] = {s["family"]: s["verdict"] for s in mine}
        summary["strength"] = strength(mine, summary["direction"])
    summaries.sort(key=lambda s: (VERDICT_ORDER.index(s["verdict"]), -s["strength"]))
    return {"rule": rule(correction), "verdicts": per_family, "summary": summaries}


def strength(stats_: list[dict[str, Any]], direction: int) -> float:
    """Median oriented auc (then trend) across families, for sorting within a verdict."""
    aucs = [s["auc"] if direction > 0 else 1 - s["auc"] for s in stats_ if s.get("auc") is not None]
    trends = [direction * s["trend"] for s in stats_ if s.get("trend") is not None]
    return (median(aucs) if aucs else 0.0) + 0.01 * (median(trends) if trends else 0.0)
