"""Output margins and the margin-normalized norm bounds of Neyshabur et al. 2017."""

from __future__ import annotations

import math

import numpy as np
import torch

from measures._registry import Context, Undefined, measure
from measures.norms import bartlett_log, depth, l2_init, log_frobenius, log_spectral, path_norm

PERCENTILE = {"percentile": 10.0}


def margins(ctx: Context) -> torch.Tensor:
    """f(x)_y − max_{j≠y} f(x)_j for every fitted training example (the max over the other classes only)."""
    def make() -> torch.Tensor:
        _, y = ctx.require_train()
        logits = ctx.logits().double()
        true = logits.gather(1, y.view(-1, 1)).squeeze(1)
        others = logits.scatter(1, y.view(-1, 1), float("-inf"))
        return true - others.max(dim=1).values
    return ctx.cached("margins", make)


def margin_value(ctx: Context, percentile: float) -> float:
    return float(np.percentile(margins(ctx).cpu().numpy(), percentile))


def positive_margin(ctx: Context, percentile: float) -> float:
    gamma = margin_value(ctx, percentile)
    if gamma <= 0:
        raise Undefined(f"margin γ = {gamma:.4g} ≤ 0 at the {percentile:g}th percentile: the train set is not fitted")
    return gamma


@measure("margin", family="margin", needs=("weights", "train"), direction=-1, cost="pass", invariant=True,
         settings=PERCENTILE,
         reference="Bartlett et al. 2017; Jiang et al. 2020 (10th percentile)",
         formula="γ = q-th percentile over the train set of f(x)_y − max_{j≠y} f(x)_j (negative values kept)")
def margin(ctx: Context, percentile: float) -> float:
    return margin_value(ctx, percentile)


@measure("l2-margin", family="margin-normalized", needs=("weights", "train"), direction=1, cost="pass", log=True,
         invariant=True, settings=PERCENTILE,
         reference="Neyshabur et al. 2017, Exploring generalization in deep learning",
         formula="2 Σ_i log ‖W_i‖_F − 2 log γ (null when γ ≤ 0)")
def l2_margin(ctx: Context, percentile: float) -> float:
    gamma = positive_margin(ctx, percentile)
    return 2 * log_frobenius(ctx) - 2 * math.log(gamma)


@measure("spectral-margin", family="margin-normalized", needs=("weights", "train"), direction=1, cost="pass",
         log=True, invariant=True, settings=PERCENTILE,
         reference="Bartlett et al. 2017; Neyshabur et al. 2017",
         formula="2 Σ_i log ‖W_i‖_2 − 2 log γ (null when γ ≤ 0)")
def spectral_margin(ctx: Context, percentile: float) -> float:
    gamma = positive_margin(ctx, percentile)
    return 2 * log_spectral(ctx) - 2 * math.log(gamma)


@measure("path-l2-margin", family="margin-normalized", needs=("weights", "train"), direction=1, cost="pass",
         log=True, invariant=True, settings=PERCENTILE,
         reference="Neyshabur et al. 2017, Exploring generalization in deep learning",
         formula="2 log path-l2 − 2 log γ (null when γ ≤ 0)")
def path_l2_margin(ctx: Context, percentile: float) -> float:
    gamma = positive_margin(ctx, percentile)
    return 2 * math.log(path_norm(ctx, 2)) - 2 * math.log(gamma)


@measure("inverse-margin", family="margin", needs=("weights", "train"), direction=1, cost="pass", invariant=True,
         settings=PERCENTILE, reference="Jiang et al. 2020, inverse margin",
         formula="1/γ² (null when γ ≤ 0)")
def inverse_margin(ctx: Context, percentile: float) -> float:
    return 1.0 / positive_margin(ctx, percentile) ** 2


@measure("bartlett-margin", family="margin-normalized", needs=("weights", "init", "train"), direction=1,
         cost="pass", log=True, settings=PERCENTILE,
         reference="Bartlett, Foster & Telgarsky 2017, spectrally-normalized margin bound",
         formula="log R_A − log γ, R_A Bartlett's spectral complexity (null when γ ≤ 0)")
def bartlett_margin(ctx: Context, percentile: float) -> float:
    gamma = positive_margin(ctx, percentile)
    return bartlett_log(ctx) - math.log(gamma)


@measure("l2-init-margin", family="margin-normalized", needs=("weights", "init", "train"), direction=1,
         cost="pass", log=True, settings=PERCENTILE,
         reference="Nagarajan & Kolter 2019; Jiang et al. 2020 (distance from init over margin)",
         formula="2 log l2-init − 2 log γ (null when γ ≤ 0)")
def l2_init_margin(ctx: Context, percentile: float) -> float:
    gamma = positive_margin(ctx, percentile)
    return 2 * math.log(l2_init(ctx)) - 2 * math.log(gamma)


@measure("frobenius-sum-margin", family="margin-normalized", needs=("weights", "train"), direction=1,
         cost="pass", log=True, invariant=True, settings=PERCENTILE,
         reference="Jiang et al. 2020, sum-of-fro/margin",
         formula="log d + (1/d)(2 Σ_i log ‖W_i‖_F − 2 log γ) (null when γ ≤ 0)")
def frobenius_sum_margin(ctx: Context, percentile: float) -> float:
    gamma = positive_margin(ctx, percentile)
    d = depth(ctx)
    return math.log(d) + (2 * log_frobenius(ctx) - 2 * math.log(gamma)) / d


@measure("spectral-sum-margin", family="margin-normalized", needs=("weights", "train"), direction=1,
         cost="pass", log=True, invariant=True, settings=PERCENTILE,
         reference="Jiang et al. 2020, sum-of-spec/margin",
         formula="log d + (1/d)(2 Σ_i log ‖W_i‖_2 − 2 log γ) (null when γ ≤ 0)")
def spectral_sum_margin(ctx: Context, percentile: float) -> float:
    gamma = positive_margin(ctx, percentile)
    d = depth(ctx)
    return math.log(d) + (2 * log_spectral(ctx) - 2 * math.log(gamma)) / d
