"""WeightWatcher spectral measures (Martin & Mahoney): power-law tails and norms of each layer's eigenvalues.

For each linear layer W (conv kernels reshaped to (out, in·k·k)) the eigenvalues are λ_i = σ_i(W)², not
divided by the matrix size; biases are ignored.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from measures._registry import Context, Undefined, keep_detail, measure
from measures.layers import as_matrix, weight_layers

THRESHOLD = 1e-5  # eigenvalues at or below it are left out of the power-law fit (as in WeightWatcher)
MIN_TAIL = 8  # fewest eigenvalues in a fitted tail
SMALL_SAMPLE = 20  # below this many eigenvalues, the bias-corrected estimator α = 1 + (n − 1)/Σ ln(λ/xmin)
MIN_EVALS = {"min_evals": 8}
REFERENCE = "Martin & Mahoney 2021, Predicting trends in the quality of state-of-the-art neural networks (WeightWatcher)"


def eigenvalues(weight: torch.Tensor) -> np.ndarray:
    """λ_i = σ_i² of the weight as a matrix M (conv reshaped to (out, in·k·k)), float64, descending: the
    eigenvalues of the smaller of MMᵀ and MᵀM by the symmetric eigensolver (at 512² some 10-30× faster than
    torch's SVD on the CPU; the same values to about 1e-16·λ_max, far below the fit's threshold, so cached values
    of the SVD's time stay valid and the measures keep their version)."""
    matrix = as_matrix(weight.detach()).double()
    gram = matrix @ matrix.T if matrix.shape[0] <= matrix.shape[1] else matrix.T @ matrix
    return torch.linalg.eigvalsh(gram).clamp_(min=0).flip(0).cpu().numpy()


def fit_power_law(evals: np.ndarray, threshold: float = THRESHOLD,
                  min_tail: int = MIN_TAIL) -> tuple[float, float, float] | None:
    """(α, xmin, KS distance) of the Clauset–Shalizi–Newman fit to the eigenvalues above threshold.

    For each candidate xmin among the eigenvalues whose tail λ ≥ xmin has at least min_tail points, α is the
    continuous MLE on that tail and the candidate kept is the one with the smallest two-sided Kolmogorov–Smirnov
    distance between the tail's empirical CDF and 1 − (x/xmin)^(1−α). None when no tail can be fitted.
    """
    x = np.sort(np.asarray(evals, dtype=np.float64))
    x = x[x > threshold]
    total = len(x)
    if total < min_tail:
        return None
    correction = 1 if total < SMALL_SAMPLE else 0
    logs = np.log(x)
    suffix = np.cumsum(logs[::-1])[::-1]  # suffix[i] = Σ_{j ≥ i} ln λ_j
    best: tuple[float, float, float] | None = None
    for i in range(total - min_tail + 1):
        if i > 0 and x[i] == x[i - 1]:
            continue  # a tied candidate has the same tail λ ≥ xmin as its first occurrence
        n = total - i
        spread = suffix[i] - n * logs[i]
        if spread <= 0:
            continue  # all of the tail equals xmin
        alpha = 1.0 + (n - correction) / spread
        cdf = 1.0 - np.exp((1.0 - alpha) * (logs[i:] - logs[i]))
        steps = np.arange(n + 1) / n
        ks = float(max(np.max(steps[1:] - cdf), np.max(cdf - steps[:-1])))
        if best is None or ks < best[2]:
            best = (float(alpha), float(x[i]), ks)
    return best


def layer_spectra(model: nn.Module, min_evals: int = 8) -> list[dict[str, Any]]:
    """One dict per linear or conv layer: name, shape, alpha, xmin, ks, spectral_norm (σ_max²), stable_rank,
    log_norm (log10 ‖W‖_F²). alpha, xmin and ks are None for a layer with fewer than min_evals eigenvalues
    (smaller matrix dimension) or no tail of MIN_TAIL eigenvalues above THRESHOLD."""
    layers = []
    for name, module in weight_layers(model):
        evals = eigenvalues(module.weight)
        lam_max = float(evals[0])
        frobenius2 = float(as_matrix(module.weight.detach()).double().pow(2).sum())
        fit = fit_power_law(evals) if len(evals) >= min_evals else None
        layers.append({
            "name": name, "shape": tuple(module.weight.shape), "num_evals": len(evals),
            "alpha": fit[0] if fit else None, "xmin": fit[1] if fit else None, "ks": fit[2] if fit else None,
            "spectral_norm": lam_max,
            "stable_rank": frobenius2 / lam_max if lam_max > 0 else math.nan,
            "log_norm": math.log10(frobenius2) if frobenius2 > 0 else -math.inf,
        })
    return layers


def spectra(ctx: Context, min_evals: int = MIN_EVALS["min_evals"]) -> list[dict[str, Any]]:
    layers = ctx.cached(f"layer-spectra:{min_evals}", lambda: layer_spectra(ctx.model, min_evals))
    if not layers:
        raise Undefined("the model has no linear or conv layer")
    return layers


def fitted(ctx: Context, min_evals: int) -> list[dict[str, Any]]:
    layers = [layer for layer in spectra(ctx, min_evals) if layer["alpha"] is not None]
    if not layers:
        raise Undefined(f"no layer has at least {min_evals} eigenvalues and a tail of {MIN_TAIL} above "
                        f"{THRESHOLD:g} to fit a power law to")
    return layers


def log10_or_inf(value: float) -> float:
    return math.log10(value) if value > 0 else -math.inf


# Direction: Martin & Mahoney report that heavier tails (smaller α, and smaller α-hat) go with better test
# accuracy, so a larger value claims a worse-generalizing (more complex) model: direction 1.
# Invariance: α only depends on ratios of eigenvalues, but the absolute 1e-5 cutoff can drop eigenvalues of a
# layer scaled by a small c, so it is not exactly invariant; α·log10 λ_max changes by 2·log10 c·(α_i − α_{i+1}).
@measure("ww-alpha", family="spectra", needs=("weights",), direction=1, cost="instant", settings=MIN_EVALS,
         reference=REFERENCE,
         formula="mean over layers of α, the Clauset–Shalizi–Newman power-law MLE α = 1 + n/Σ ln(λ_i/xmin) on the "
                 "eigenvalues λ_i = σ_i(W)² above 1e-5 (conv W reshaped to (out, in·k·k)), xmin the eigenvalue "
                 "minimising the KS distance, tails ≥ 8 points, (n − 1) for fewer than 20 eigenvalues; layers with "
                 "fewer than min_evals eigenvalues skipped")
def ww_alpha(ctx: Context, min_evals: int) -> float:
    layers = fitted(ctx, min_evals)
    keep_detail(ctx, "ww-alpha", layers=np.array([layer["name"] for layer in layers], dtype=object),
                alpha=np.array([layer["alpha"] for layer in layers]), xmin=np.array([layer["xmin"] for layer in layers]),
                ks=np.array([layer["ks"] for layer in layers]))
    return float(np.mean([layer["alpha"] for layer in layers]))


@measure("ww-alpha-weighted", family="spectra", needs=("weights",), direction=1, cost="instant",
         settings=MIN_EVALS, reference=REFERENCE,
         formula="mean over the layers fitted for ww-alpha of α · log10 σ_max(W)² (conv W reshaped to "
                 "(out, in·k·k))")
def ww_alpha_weighted(ctx: Context, min_evals: int) -> float:
    return float(np.mean([layer["alpha"] * log10_or_inf(layer["spectral_norm"])
                          for layer in fitted(ctx, min_evals)]))


# The three norm measures average over every layer (min_evals only gates the power-law fit), so the means
# of log norms are exactly invariant: layer i gains 2·log10 c, layer i+1 loses it. Stable rank is a ratio.
@measure("ww-log-spectral-norm", family="spectra", needs=("weights",), direction=1, cost="instant",
         invariant=True, reference=REFERENCE,
         formula="mean over all layers of log10 σ_max(W)², conv W reshaped to (out, in·k·k), biases excluded")
def ww_log_spectral_norm(ctx: Context) -> float:
    return float(np.mean([log10_or_inf(layer["spectral_norm"]) for layer in spectra(ctx)]))


@measure("ww-stable-rank", family="spectra", needs=("weights",), direction=1, cost="instant", invariant=True,
         reference=REFERENCE,
         formula="mean over all layers of ‖W‖_F² / σ_max(W)², conv W reshaped to (out, in·k·k), biases excluded")
def ww_stable_rank(ctx: Context) -> float:
    return float(np.mean([layer["stable_rank"] for layer in spectra(ctx)]))


@measure("ww-log-norm", family="spectra", needs=("weights",), direction=1, cost="instant", invariant=True,
         reference=REFERENCE,
         formula="mean over all layers of log10 ‖W‖_F², conv W reshaped to (out, in·k·k), biases excluded")
def ww_log_norm(ctx: Context) -> float:
    return float(np.mean([layer["log_norm"] for layer in spectra(ctx)]))
