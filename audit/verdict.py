"""Measures × runs → statistics and verdicts: the randomization test and the hyperparameter protocols.

Randomization test, per measure and family (runs identical but for variant and seed):
  auc    over all (random-labels run, true run) pairs, the fraction where the measure is larger on the
         random-labels run (ties ½); its interval by bootstrap over seeds, or, with few runs, the exact
         Mann–Whitney null range; its one-sided p from the exact Mann–Whitney distribution when exact applies;
  ratio  of the medians (random-labels over true; for log measures, of the underlying quantities);
  trend  Kendall τ-b of the measure against the corruption p over the label axis, with its one-sided p;
  input  the same auc comparison for each input variant (gaussian, random pixels, shuffled pixels) against true.
Hyperparameter protocols, per measure over the true-label runs (Jiang et al. 2020; Dziugaite et al. 2020):
  tau    Kendall τ-b against the generalization gap over all complete runs (sign kept), p and interval;
  psi    granulated Kendall Ψ: τ within groups that differ along one axis, averaged per axis, then over axes;
  sign_error  over pairs differing in one axis, mean and worst axis, pairs within test-set noise dropped;
  cmi    conditional mutual information of sign(Δmeasure) and sign(Δgap) given the axis, with its sign.
p-values of each kind are corrected for multiple testing across all measures and families (Holm by default).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections import defaultdict
from statistics import median
from typing import Any

import numpy as np
from scipy import stats

import measures
from audit.spec import INPUT_VARIANTS, RunSpec
from audit.store import RunRecord

ALPHA = 0.05  # family-wise error rate of the corrected tests
AUC_SEPARATES = 0.9  # oriented auc at or above this: the measure separates random from true labels
AUC_INVERTED = 0.1  # oriented auc at or below this: it separates them the wrong way
TREND_GROWS = 0.5  # oriented Kendall τ-b against p at or above this: it grows with the corruption
MIN_SEEDS = 3  # fewest runs each of true and random-labels for a verdict (in a family; pooled over families
#               that have at least 2 of each for the overall verdict)
BOOTSTRAP_MIN_RUNS = 5  # below this many runs per group, the auc interval is the exact Mann–Whitney null range
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
HOEFFDING_DELTA = 0.05  # a pair's gap difference within 2·sqrt(ln(2/δ)/(2·n_test)) is test-set noise
CORRECTIONS = ("holm", "bh", "none")
VERDICT_ORDER = ("distinguishes", "unstable", "insufficient", "fails", "inverted")


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
        "fails": "otherwise, or when the statistics are undefined (a constant measure)",
        "oriented": "auc and trend are flipped for measures where smaller means more complex",
        "correction": f"{method} correction per kind of test: across measures for the combined and overall "
                      "p-values, across the measures of a family for a family's own p-values",
        "auc": "fraction of (random-labels, true) run pairs where the measure is larger on random labels, ties ½; "
               f"interval by bootstrap over seeds ({BOOTSTRAP_RESAMPLES} resamples) when both groups have ≥ "
               f"{BOOTSTRAP_MIN_RUNS} runs, else (marked ~) the central 95% range of auc under the exact "
               "Mann–Whitney null distribution: an auc outside it is significant at 5% before correction",
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


# ---------------------------------------------------------------- rows

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


def hyperparameters(spec: RunSpec) -> dict[str, Any]:
    """The settings a sweep varies, with an mlp-DxW model split into its width and depth."""
    values = {k: v for k, v in spec.to_dict().items() if k not in ("variant", "corrupt", "seed")}
    match = re.match(r"^mlp-(\d+)x(\d+)$", spec.model)
    if match:
        values["depth"], values["width"] = int(match.group(1)), int(match.group(2))
    return values


def run_rows(records: list[RunRecord], names: list[str], at: str | None = None) -> list[dict[str, Any]]:
    """One plain row per run, in the shape of the JSON document. With `at` (a keep point such as loss:0.1),
    accuracies, gap and measures are those at that point; runs that never reached it have none."""
    from audit.score import cache_key, measure_value

    labels = family_labels([r.spec for r in records])
    rows = []
    for record in records:
        spec, attrs = record.spec, record.attrs
        if at is not None:
            point = record.kept.get(at, {}).get("attrs", {})
            attrs = {**attrs, "train_acc": point.get("train_acc"), "test_acc": point.get("test_acc"),
                     "epochs": int(point["epoch"]) if "epoch" in point else None}
        train_acc, test_acc = attrs.get("train_acc"), attrs.get("test_acc")
        gap = train_acc - test_acc if train_acc is not None and test_acc is not None else None
        rows.append({
            "run_id": record.run_id, "family": labels[spec.family_key()], "model": spec.model,
            "dataset": spec.dataset, "variant": spec.variant, "corrupt": spec.corrupt, "seed": spec.seed,
            "status": record.status, "fitted": record.fitted, "train_acc": train_acc, "test_acc": test_acc,
            "train_top5": attrs.get("train_top5") if at is None else None,
            "test_top5": attrs.get("test_top5") if at is None else None, "gap": gap, "epochs": attrs.get("epochs"), "steps_to_fit": attrs.get("steps_to_fit"),
            "test_size": attrs.get("test_size"), "hyperparameters": hyperparameters(spec),
            "measures": {name: measure_value(record, name, at) for name in names},
            "seconds": {name: record.measures[cache_key(name, at)].get("seconds") for name in names
                        if cache_key(name, at) in record.measures},
        })
    order = {name: i for i, name in enumerate(("true", "corrupt", "random-labels") + INPUT_VARIANTS)}
    rows.sort(key=lambda r: (r["family"], order[r["variant"]], r["corrupt"] or 0.0, r["seed"], r["run_id"]))
    return rows


def variant_label(row: dict[str, Any]) -> str:
    return f"corrupt:{row['corrupt']:g}" if row["variant"] == "corrupt" else row["variant"]


# ---------------------------------------------------------------- statistics

def pairwise_auc(random_values: list[float], true_values: list[float]) -> float | None:
    if not random_values or not true_values:
        return None
    wins = sum((r > t) + 0.5 * (r == t) for r in random_values for t in true_values)
    return wins / (len(random_values) * len(true_values))


def kendall(xs: list[float], ys: list[float], alternative: str = "two-sided") -> tuple[float | None, float | None]:
    """Kendall τ-b and its p-value; (None, None) when undefined (fewer than 2 points or a constant)."""
    if len(xs) < 2 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return None, None
    result = stats.kendalltau(xs, ys, alternative=alternative)
    tau, p = float(result.statistic), float(result.pvalue)
    return (None, None) if math.isnan(tau) else (tau, None if math.isnan(p) else p)


def auc_test(random_values: list[float], true_values: list[float], direction: int) -> dict[str, Any]:
    """auc, its interval and the one-sided p that the measure is larger (oriented) on random labels."""
    auc = pairwise_auc(random_values, true_values)
    if auc is None or len(set(random_values) | set(true_values)) < 2:
        return {"auc": None, "auc_interval": None, "auc_interval_kind": None, "auc_p": None}
    alternative = "greater" if direction > 0 else "less"
    p = float(stats.mannwhitneyu(random_values, true_values, alternative=alternative, method="auto").pvalue)
    if min(len(random_values), len(true_values)) >= BOOTSTRAP_MIN_RUNS:
        result = stats.bootstrap((np.asarray(random_values), np.asarray(true_values)), pairwise_auc_vectorized,
                                 n_resamples=BOOTSTRAP_RESAMPLES, method="percentile", vectorized=True,
                                 rng=np.random.default_rng(BOOTSTRAP_SEED))
        interval, kind = [float(result.confidence_interval.low), float(result.confidence_interval.high)], "bootstrap"
    else:
        interval, kind = exact_null_range(len(random_values), len(true_values)), "exact-null"
    return {"auc": auc, "auc_interval": interval, "auc_interval_kind": kind, "auc_p": p}


def pairwise_auc_vectorized(random_values: np.ndarray, true_values: np.ndarray, axis: int = -1) -> np.ndarray:
    r = np.moveaxis(random_values, axis, -1)[..., :, None]
    t = np.moveaxis(true_values, axis, -1)[..., None, :]
    return ((r > t) + 0.5 * (r == t)).mean(axis=(-2, -1))


def exact_null_range(n_random: int, n_true: int) -> list[float]:
    """The central 95% range of auc over all equally likely splits of n_random + n_true distinct values."""
    total = n_random + n_true
    aucs = []
    for chosen in itertools.combinations(range(total), n_random):
        ranks = sum(chosen) + n_random  # 1-based rank sum of the random group
        u = ranks - n_random * (n_random + 1) / 2
        aucs.append(u / (n_random * n_true))
    low, high = np.quantile(aucs, [0.025, 0.975], method="inverted_cdf")  # values the null actually takes
    return [float(low), float(high)]


def median_ratio(random_values: list[float], true_values: list[float], log: bool) -> float | None:
    if not random_values or not true_values:
        return None
    r, t = median(random_values), median(true_values)
    if log:
        return math.exp(r - t) if abs(r - t) < 700 else None
    return r / t if r > 0 and t > 0 else None


def family_stats(rows: list[dict[str, Any]], name: str, direction: int, log: bool) -> dict[str, Any]:
    """The randomization-test statistics of one measure on the complete runs of one family."""
    runs = [r for r in rows if r["status"] == "complete" and r["measures"].get(name) is not None]
    values = [r["measures"][name] for r in runs]
    by_variant: dict[str, list[float]] = defaultdict(list)
    for r in runs:
        by_variant[variant_label(r)].append(r["measures"][name])
    true_values, random_values = by_variant.get("true", []), by_variant.get("random-labels", [])
    constant = len(set(values)) < 2
    label_axis = [r for r in runs if r["corrupt"] is not None]
    with_gap = [r for r in runs if r["gap"] is not None]
    oriented = "greater" if direction > 0 else "less"
    out: dict[str, Any] = {
        "measure": name, "family": rows[0]["family"], "runs": len(runs), "n_true": len(true_values),
        "n_random": len(random_values), "medians": {k: median(v) for k, v in by_variant.items()},
        "ratio": median_ratio(random_values, true_values, log),
        "label_levels": len({r["corrupt"] for r in label_axis}),
    }
    if constant:
        out.update(auc=None, auc_interval=None, auc_interval_kind=None, auc_p=None, trend=None, trend_p=None,
                   tau=None, tau_p=None, input={}, constant=True)
        return out
    out.update(auc_test(random_values, true_values, direction))
    out["trend"], out["trend_p"] = kendall([r["measures"][name] for r in label_axis],
                                           [r["corrupt"] for r in label_axis], oriented)
    out["tau"], out["tau_p"] = kendall([r["measures"][name] for r in with_gap], [r["gap"] for r in with_gap])
    out["input"] = {v: {k: test[k] for k in ("auc", "auc_p")}
                    for v in INPUT_VARIANTS if by_variant.get(v) and true_values
                    for test in [auc_test(by_variant[v], true_values, direction)]}
    out["constant"] = False
    return out


def tau_b_matrix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall τ-b of each row pair of x and y (shape (resamples, n)): Σ sx·sy / sqrt(Σ sx² · Σ sy²) over pairs,
    which leaves tied pairs out exactly as τ-b does."""
    sx = np.sign(x[:, :, None] - x[:, None, :])
    sy = np.sign(y[:, :, None] - y[:, None, :])
    numerator = (sx * sy).sum(axis=(1, 2))
    denominator = np.sqrt((sx * sx).sum(axis=(1, 2)) * (sy * sy).sum(axis=(1, 2)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return numerator / denominator


def tau_interval(values: list[float], gaps: list[float]) -> list[float] | None:
    """Bootstrap percentile interval of Kendall τ-b over runs (resamples in blocks, vectorized)."""
    if len(values) < 4:
        return None
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    x, y = np.asarray(values, dtype=float), np.asarray(gaps, dtype=float)
    block = max(1, 2_000_000 // len(x) ** 2)
    taus = []
    for start in range(0, BOOTSTRAP_RESAMPLES, block):
        index = rng.integers(0, len(x), (min(block, BOOTSTRAP_RESAMPLES - start), len(x)))
        taus.append(tau_b_matrix(x[index], y[index]))
    taus = np.concatenate(taus)
    taus = taus[np.isfinite(taus)]
    if len(taus) < 10:
        return None
    low, high = np.quantile(taus, [0.025, 0.975])
    return [float(low), float(high)]


def axes_of(rows: list[dict[str, Any]]) -> list[str]:
    """Hyperparameters that take more than one value among the rows."""
    keys = set().union(*(r["hyperparameters"] for r in rows)) if rows else set()
    varying = [k for k in sorted(keys) if len({json_key(r["hyperparameters"].get(k)) for r in rows}) > 1]
    if "width" in varying or "depth" in varying:
        varying = [k for k in varying if k != "model"]  # the model axis is its width and depth
    return varying


def json_key(value: Any) -> str:
    return repr(value)


def hoeffding(n_test: int) -> float:
    return math.sqrt(math.log(2 / HOEFFDING_DELTA) / (2 * n_test))


def axis_groups(rows: list[dict[str, Any]], axis: str, axes: list[str]) -> list[list[dict[str, Any]]]:
    """Groups of runs equal in every other axis and in seed, varying along `axis`."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        key = tuple(json_key(r["hyperparameters"].get(a)) for a in axes if a != axis) + (r["seed"],)
        groups[key].append(r)
    return [g for g in groups.values() if len({json_key(r["hyperparameters"].get(axis)) for r in g}) > 1]


def sweep_stats(rows: list[dict[str, Any]], name: str, direction: int) -> dict[str, Any]:
    """Ψ, sign-error and CMI of one measure over the complete true-label runs of all families."""
    runs = [r for r in rows if r["status"] == "complete" and r["variant"] == "true"
            and r["measures"].get(name) is not None and r["gap"] is not None]
    axes = axes_of(runs)
    psi: dict[str, float] = {}
    errors: dict[str, list[float]] = {}
    agreements: dict[str, list[tuple[int, int]]] = {}
    for axis in axes:
        taus = []
        for group in axis_groups(runs, axis, axes):
            tau, _ = kendall([r["measures"][name] for r in group], [r["gap"] for r in group])
            if tau is not None:
                taus.append(tau)
            for a, b in itertools.combinations(group, 2):
                if a["hyperparameters"].get(axis) == b["hyperparameters"].get(axis):
                    continue
                noise = 2 * hoeffding(min(a.get("test_size") or 1, b.get("test_size") or 1))
                gap_change = b["gap"] - a["gap"]
                if abs(gap_change) <= noise:
                    continue
                change = direction * (b["measures"][name] - a["measures"][name])
                errors.setdefault(axis, []).append(0.5 if change == 0 else float(np.sign(change) != np.sign(gap_change)))
                # both orders of the pair, so that sign(Δgap) is balanced and only agreement is measured
                agreements.setdefault(axis, []).extend([(int(change > 0), int(gap_change > 0)),
                                                        (int(change < 0), int(gap_change < 0))])
        if taus:
            psi[axis] = float(np.mean(taus))
    per_axis_error = {axis: float(np.mean(e)) for axis, e in errors.items()}
    pairs = sum(len(e) for e in errors.values())
    cmi, sign = conditional_mutual_information(agreements)
    return {"axes": axes, "psi": psi, "psi_overall": float(np.mean(list(psi.values()))) if psi else None,
            "sign_error_mean": float(np.mean([x for e in errors.values() for x in e])) if pairs else None,
            "sign_error_worst": max(per_axis_error.values()) if per_axis_error else None,
            "sign_error_by_axis": per_axis_error, "sign_error_pairs": pairs, "cmi": cmi, "cmi_sign": sign}


def conditional_mutual_information(pairs_by_axis: dict[str, list[tuple[int, int]]]) -> tuple[float | None, int | None]:
    """I(sign Δmeasure; sign Δgap | axis) in bits, and the sign of their correlation (+1 agree, −1 oppose)."""
    total = sum(len(p) for p in pairs_by_axis.values())
    if total == 0:
        return None, None
    cmi = 0.0
    for pairs in pairs_by_axis.values():
        table = np.zeros((2, 2))
        for a, b in pairs:
            table[a, b] += 1
        joint = table / table.sum()
        pa, pb = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(joint > 0, joint * np.log2(joint / (pa * pb)), 0.0)
        cmi += len(pairs) / total * float(terms.sum())
    agree = sum(a == b for pairs in pairs_by_axis.values() for a, b in pairs) / total
    return cmi, (1 if agree > 0.5 else -1 if agree < 0.5 else 0)


# ---------------------------------------------------------------- multiple testing and verdicts

def adjust(pvalues: list[float | None], correction: str) -> list[float | None]:
    """Holm (step-down, family-wise) or Benjamini–Hochberg (scipy) adjusted p-values; None stays None."""
    present = [(i, p) for i, p in enumerate(pvalues) if p is not None]
    out: list[float | None] = [None] * len(pvalues)
    if not present or correction == "none":
        return list(pvalues)
    ps = np.array([p for _, p in present])
    if correction == "bh":
        adjusted = stats.false_discovery_control(ps, method="bh")
    else:
        order = np.argsort(ps)
        m = len(ps)
        stepped = np.maximum.accumulate((m - np.arange(m)) * ps[order])
        adjusted = np.empty(m)
        adjusted[order] = np.minimum(stepped, 1.0)
    for (i, _), value in zip(present, adjusted):
        out[i] = float(value)
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
    if stat["constant"]:
        return "fails", "constant: the statistics are undefined, and no number of runs separates"
    lacking = missing_seeds(stat)
    if lacking:
        return "insufficient", f"needs {lacking}"
    kind = effect(stat, direction)
    if kind == "distinguishes" and not (stat.get("trend_p_adj") is not None and stat["trend_p_adj"] <= ALPHA):
        return "insufficient", "separates, but its trend is not significant after correction"
    return kind, "separates the wrong way" if kind == "inverted" else ""


def overall_verdict(mine: list[dict[str, Any]], direction: int, p_raw: float | None, p_adj: float | None,
                    tests: int) -> tuple[str, list[str]]:
    """One verdict per measure: the common effect of the families with enough runs, with the evidence of all
    of them combined (Stouffer) and corrected across measures; different effects make it unstable."""
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


def judge(rows: list[dict[str, Any]], names: list[str], correction: str = "holm") -> dict[str, Any]:
    """Per-family statistics and verdicts, and one summary per measure (overall verdict and sweep protocols)."""
    families: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        families[row["family"]].append(row)
    complete = [r for r in rows if r["status"] == "complete"]
    per_family: list[dict[str, Any]] = []
    summaries: list[dict[str, Any]] = []
    for name in names:
        measure_ = measures.get(name)
        mine = [family_stats(family_rows, name, measure_.direction, measure_.log) for family_rows in families.values()]
        per_family += mine
        runs = [r for r in complete if r["measures"].get(name) is not None and r["gap"] is not None]
        values, gaps = [r["measures"][name] for r in runs], [r["gap"] for r in runs]
        tau, tau_p = kendall(values, gaps)
        seconds = [r["seconds"][name] for r in rows if r.get("seconds", {}).get(name) is not None]
        pooled: dict[str, list[float]] = defaultdict(list)
        for r in runs:
            pooled[variant_label(r)].append(r["measures"][name])
        summaries.append({"measure": name, "measure_family": measure_.family, "direction": measure_.direction,
                          "medians": {k: median(v) for k, v in pooled.items()},
                          "tau": tau, "tau_p": tau_p, "tau_interval": tau_interval(values, gaps) if tau else None,
                          "trend_p": combined_trend_p(mine),
                          "seconds_per_run": sum(seconds) / len(seconds) if seconds else None,
                          **sweep_stats(rows, name, measure_.direction)})
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
        stat["verdict"], stat["note"] = family_verdict(stat, measures.get(stat["measure"]).direction)
    for summary in summaries:
        mine = [s for s in per_family if s["measure"] == summary["measure"]]
        summary["verdict"], summary["notes"] = overall_verdict(mine, summary["direction"], summary["trend_p"],
                                                               summary["trend_p_adj"], tests)
        summary["families"] = {s["family"]: s["verdict"] for s in mine}
        summary["strength"] = strength(mine, summary["direction"])
    summaries.sort(key=lambda s: (VERDICT_ORDER.index(s["verdict"]), -s["strength"]))
    return {"rule": rule(correction), "verdicts": per_family, "summary": summaries}


def strength(stats_: list[dict[str, Any]], direction: int) -> float:
    """Median oriented auc (then trend) across families, for sorting within a verdict."""
    aucs = [s["auc"] if direction > 0 else 1 - s["auc"] for s in stats_ if s.get("auc") is not None]
    trends = [direction * s["trend"] for s in stats_ if s.get("trend") is not None]
    return (median(aucs) if aucs else 0.0) + 0.01 * (median(trends) if trends else 0.0)
