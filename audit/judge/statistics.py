"""The statistics behind verdicts: pairwise auc, Kendall τ-b, exact null ranges, corrections, CMI."""

from __future__ import annotations

import itertools
import math
from statistics import median
from typing import Any

import numpy as np
from scipy import stats

BOOTSTRAP_MIN_RUNS = 5  # below this many runs per group, the auc interval is the exact Mann–Whitney null range
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
HOEFFDING_DELTA = 0.05  # a pair's gap difference within 2·sqrt(ln(2/δ)/(2·n_test)) is test-set noise



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


def json_key(value: Any) -> str:
    return repr(value)


def hoeffding(n_test: int) -> float:
    return math.sqrt(math.log(2 / HOEFFDING_DELTA) / (2 * n_test))


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
