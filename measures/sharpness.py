"""Sharpness, worst and average case (PAC-Bayes flatness and its bounds: measures/flatness.py).

Every measure here perturbs all parameters (weights and biases) of a copy of the weights; the model
itself is never modified. Random numbers come from a CPU torch.Generator seeded by the `seed` setting.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from measures._registry import Context, measure
from measures.functional import Params, batched_metric, loss_at, params_of, subset

GROUP_BYTES = 2**28  # at most this many bytes of stacked weight samples on the device at once


def group_size(params: Params, draws: int) -> int:
    numel = sum(p.numel() for p in params.values())
    return max(1, min(draws, GROUP_BYTES // max(1, 4 * numel)))


def gaussian(scale: Params, draws: int, generator: torch.Generator) -> Params:
    """(draws, ...) stacked N(0, scale²) perturbations, drawn draw by draw and parameter by parameter
    so that the sequence does not depend on how draws are grouped."""
    out: dict[str, list[torch.Tensor]] = {name: [] for name in scale}
    for _ in range(draws):
        for name, s in scale.items():
            z = torch.randn(s.shape, generator=generator, dtype=torch.float32)
            out[name].append(z.to(s.device) * s)
    return {name: torch.stack(values) for name, values in out.items()}


def noise(params: Params, sigma: float, magnitude_aware: bool, eps: float, draws: int,
          generator: torch.Generator) -> Params:
    """`draws` stacked noisy copies of params: w_i + n_i with n_i ~ N(0, s_i²), s_i = σ (standard deviation
    σ, not σ²), or s_i = σ|w_i| + eps when magnitude aware."""
    if magnitude_aware:
        scale = {name: sigma * p.abs() + eps for name, p in params.items()}
    else:
        scale = {name: torch.full_like(p, sigma) for name, p in params.items()}
    perturbation = gaussian(scale, draws, generator)
    return {name: params[name].unsqueeze(0) + perturbation[name] for name in params}


def train_subset(ctx: Context, samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = ctx.require_train()
    return subset(x, y, samples, seed)


# ---------------------------------------------------------------- worst case: projected sign ascent


def keskar_radius(params: Params, epsilon: float) -> Params:
    return {name: epsilon * (p.abs() + 1) for name, p in params.items()}


def adaptive_radius(params: Params, rho: float) -> Params:
    return {name: rho * p.abs() for name, p in params.items()}


def worst_case(model: torch.nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, radius: Params,
               steps: int, generator: torch.Generator) -> tuple[float, float, Params]:
    """Maximise L(w+δ) − L(w) over the box |δ_i| ≤ radius_i by projected signed gradient ascent.

    Starts at a uniform point of the box, takes `steps` steps of radius/5 · sign(∂L/∂δ), clipping back
    into the box after each. Returns (L(w), the best increase seen, the δ reaching it); δ = 0 is a
    point of the box, so the increase is never below 0.
    """
    def loss_of(delta: Params) -> torch.Tensor:
        return loss_at(model, {name: params[name] + delta[name] for name in params}, x, y)

    grad_and_loss = torch.func.grad_and_value(loss_of)
    with torch.no_grad():
        base = float(loss_at(model, params, x, y))
    delta = {name: ((2 * torch.rand(r.shape, generator=generator) - 1).to(r.device) * r)
             for name, r in radius.items()}
    best, best_delta = 0.0, {name: torch.zeros_like(r) for name, r in radius.items()}
    for step in range(steps + 1):
        if step < steps:
            grads, loss = grad_and_loss(delta)
        else:
            with torch.no_grad():
                loss = loss_of(delta)
        increase = float(loss) - base
        if increase > best:
            best, best_delta = increase, {name: d.clone() for name, d in delta.items()}
        if step < steps:
            delta = {name: torch.clamp(d + radius[name] / 5 * grads[name].sign(), -radius[name], radius[name])
                     for name, d in delta.items()}
    return base, best, best_delta


def ascend(ctx: Context, radius_of: Callable[[Params], Params], steps: int, samples: int,
           seed: int) -> tuple[float, float, Params]:
    x, y = train_subset(ctx, samples, seed)
    params = params_of(ctx.model)
    generator = torch.Generator().manual_seed(seed)
    return worst_case(ctx.model, params, x, y, radius_of(params), steps, generator)


@measure("sharpness", family="sharpness", needs=("weights", "train"), direction=1, cost="heavy",
         default=False, settings={"epsilon": 1e-3, "steps": 20, "samples": 2048, "seed": 0},
         reference="Keskar et al. 2017, On large-batch training for deep learning (ε-sharpness)",
         formula="max_{|δ_i| ≤ ε(|w_i|+1)} (L(w+δ) − L(w)) / (1 + L(w)), L the mean train cross-entropy on "
                 "a seeded subset; the max by `steps` projected signed-gradient steps of size ε(|w_i|+1)/5 "
                 "from a uniform start in the box, best point seen (δ = 0 included); all parameters "
                 "perturbed")
def sharpness(ctx: Context, epsilon: float, steps: int, samples: int, seed: int) -> float:
    base, increase, _ = ascend(ctx, lambda p: keskar_radius(p, epsilon), steps, samples, seed)
    return increase / (1 + base)


@measure("adaptive-sharpness", family="sharpness", needs=("weights", "train"), direction=1, cost="heavy",
         invariant=True, default=False, settings={"rho": 0.01, "steps": 20, "samples": 2048, "seed": 0},
         reference="Kwon et al. 2021, ASAM; Andriushchenko et al. 2023, A modern look at the relationship "
                   "between sharpness and generalization (worst case)",
         formula="max_{|δ_i| ≤ ρ|w_i|} L(w+δ) − L(w), L the mean train cross-entropy on a seeded subset; "
                 "the max by `steps` projected signed-gradient steps of size ρ|w_i|/5 from a uniform start "
                 "in the box, best point seen (δ = 0 included); all parameters perturbed")
def adaptive_sharpness(ctx: Context, rho: float, steps: int, samples: int, seed: int) -> float:
    _, increase, _ = ascend(ctx, lambda p: adaptive_radius(p, rho), steps, samples, seed)
    return increase


@measure("adaptive-sharpness-avg", family="sharpness", needs=("weights", "train"), direction=1, cost="heavy",
         invariant=True, default=False, settings={"rho": 0.1, "draws": 32, "samples": 2048, "seed": 0},
         reference="Andriushchenko et al. 2023, A modern look at the relationship between sharpness and "
                   "generalization (average case)",
         formula="mean over `draws` samples δ_i ~ N(0, (ρ|w_i|)²) of L(w+δ) − L(w), L the mean train "
                 "cross-entropy on a seeded subset")
def adaptive_sharpness_avg(ctx: Context, rho: float, draws: int, samples: int, seed: int) -> float:
    x, y = train_subset(ctx, samples, seed)
    params = params_of(ctx.model)
    with torch.no_grad():
        base = float(loss_at(ctx.model, params, x, y))
    scale = adaptive_radius(params, rho)
    generator = torch.Generator().manual_seed(seed)
    group, total, done = group_size(params, draws), 0.0, 0
    while done < draws:
        k = min(group, draws - done)
        perturbation = gaussian(scale, k, generator)
        stacked = {name: params[name].unsqueeze(0) + perturbation[name] for name in params}
        losses, _ = batched_metric(ctx.model, stacked, x, y)
        total += float(losses.double().sum())
        done += k
    return total / draws - base
