"""Sharpness (worst and average case), PAC-Bayes flatness and the PAC-Bayes bounds built on it.

Every measure here perturbs all parameters (weights and biases) of a copy of the weights; the model
itself is never modified. Random numbers come from a CPU torch.Generator seeded by the `seed` setting.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from measures._registry import Context, Undefined, measure
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


# ---------------------------------------------------------------- PAC-Bayes flatness: bisection on σ

FLATNESS = {"draws": 16, "target": 0.1, "low": 1e-6, "high": 10.0, "tol": 0.01, "iterations": 30,
            "samples": 2048, "seed": 0}
MAG_FLATNESS = {**FLATNESS, "eps": 1e-3}
BISECTION = ("σ by bisection on log σ between `low` and `high`: the largest σ found whose mean train "
             "accuracy drop (over `draws` noise samples, the same seeded noise at every step, on a seeded "
             "subset of `samples`) is ≤ `target`, known to within a factor 1 + `tol` or after `iterations` "
             "bisections (whichever first); σ = `high` if even `high` drops accuracy by ≤ `target`, null if "
             "`low` already drops it by more")


def accuracy_drop(ctx: Context, params: Params, x: torch.Tensor, y: torch.Tensor, base: float, sigma: float,
                  magnitude_aware: bool, eps: float, draws: int, seed: int) -> float:
    generator = torch.Generator().manual_seed(seed)  # common random numbers across σ
    group, correct, done = group_size(params, draws), 0.0, 0
    while done < draws:
        k = min(group, draws - done)
        noisy = noise(params, sigma, magnitude_aware, eps, k, generator)
        _, accuracy = batched_metric(ctx.model, noisy, x, y)
        correct += float(accuracy.double().sum())
        done += k
    return base - correct / draws


def search_sigma(ctx: Context, magnitude_aware: bool, eps: float, draws: int, target: float, low: float,
                 high: float, tol: float, iterations: int, samples: int, seed: int) -> float:
    x, y = train_subset(ctx, samples, seed)
    params = params_of(ctx.model)
    _, accuracy = batched_metric(ctx.model, {name: p.unsqueeze(0) for name, p in params.items()}, x, y)
    base = float(accuracy[0])

    def drop(sigma: float) -> float:
        return accuracy_drop(ctx, params, x, y, base, sigma, magnitude_aware, eps, draws, seed)

    if drop(low) > target:
        raise Undefined(f"noise of σ = low = {low:g} already drops the train accuracy by more than "
                        f"{target:g}")
    if drop(high) <= target:
        return high
    for _ in range(iterations):
        if high / low < 1 + tol:
            break
        middle = math.sqrt(low * high)
        if drop(middle) <= target:
            low = middle
        else:
            high = middle
    return low


def flat_sigma(ctx: Context, magnitude_aware: bool, eps: float, draws: int, target: float, low: float,
               high: float, tol: float, iterations: int, samples: int, seed: int) -> float:
    """σ (or σ') of the flatness search, searched once per context and settings."""
    if not magnitude_aware:
        eps = 0.0
    key = (f"pacbayes-sigma:{magnitude_aware}:{eps!r}:{draws}:{target!r}:{low!r}:{high!r}:{tol!r}:"
           f"{iterations}:{samples}:{seed}")
    return ctx.cached(key, lambda: search_sigma(ctx, magnitude_aware, eps, draws, target, low, high, tol,
                                                iterations, samples, seed))


@measure("pacbayes-flatness", family="flatness", needs=("weights", "train"), direction=1, cost="heavy",
         default=False, settings=FLATNESS,
         reference="Jiang et al. 2020, Fantastic generalization measures (μ_pac-bayes-flatness); "
                   "Dziugaite & Roy 2017",
         formula="1/σ², noise N(0, σ²) i.i.d. on every parameter; " + BISECTION)
def pacbayes_flatness(ctx: Context, draws: int, target: float, low: float, high: float, tol: float,
                      iterations: int, samples: int, seed: int) -> float:
    sigma = flat_sigma(ctx, False, 0.0, draws, target, low, high, tol, iterations, samples, seed)
    return 1 / sigma**2


@measure("pacbayes-mag-flatness", family="flatness", needs=("weights", "train"), direction=1, cost="heavy",
         default=False, settings=MAG_FLATNESS,
         reference="Jiang et al. 2020, Fantastic generalization measures (μ_pac-bayes-mag-flatness)",
         formula="1/σ'², noise on w_i of standard deviation σ'|w_i| + ε; σ' as " + BISECTION)
def pacbayes_mag_flatness(ctx: Context, draws: int, target: float, low: float, high: float, tol: float,
                          iterations: int, samples: int, seed: int, eps: float) -> float:
    sigma = flat_sigma(ctx, True, eps, draws, target, low, high, tol, iterations, samples, seed)
    return 1 / sigma**2


# ---------------------------------------------------------------- PAC-Bayes bounds


def flat_vector(params: Params) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).double() for p in params.values()])


def difference(ctx: Context, from_init: bool) -> torch.Tensor:
    """w − w⁰ (or w) over all parameters, in float64."""
    params = params_of(ctx.model)
    if not from_init:
        return flat_vector(params)
    if ctx.init is None:
        raise Undefined("needs the initial weights; pass init=")
    init = params_of(ctx.init)
    if list(init) != list(params) or any(init[n].shape != params[n].shape for n in params):
        raise Undefined("the initial model's parameters do not match the final model's")
    return flat_vector(params) - flat_vector({name: p.to(params[name].device) for name, p in init.items()})


def pacbayes_bound(d: torch.Tensor, sigma: float, m: int) -> float:
    return float(d.pow(2).sum()) / (4 * sigma**2) + math.log(m / sigma) + 10


def pacbayes_mag_bound(d: torch.Tensor, sigma: float, eps: float, m: int) -> float:
    omega = d.numel()
    numerator = eps**2 + (sigma**2 + 1) * d.pow(2).sum() / omega
    terms = torch.log(numerator / (eps**2 + sigma**2 * d.pow(2)))
    return 0.25 * float(terms.sum()) + math.log(m / sigma) + 10


def bound_from(ctx: Context, from_init: bool, magnitude_aware: bool, settings: dict) -> float:
    x, _ = ctx.require_train()
    eps = settings.pop("eps", 0.0)
    sigma = flat_sigma(ctx, magnitude_aware, eps, **settings)
    d = difference(ctx, from_init)
    if magnitude_aware:
        return pacbayes_mag_bound(d, sigma, eps, len(x))
    return pacbayes_bound(d, sigma, len(x))


PACBAYES_REFERENCE = ("Jiang et al. 2020, Fantastic generalization measures; McAllester 1999; "
                      "Neyshabur et al. 2017")


@measure("pacbayes-init", family="pac-bayes", needs=("weights", "init", "train"), direction=1, cost="heavy",
         default=False, settings=FLATNESS, reference=PACBAYES_REFERENCE,
         formula="‖w − w⁰‖²/(4σ²) + log(m/σ) + 10, w all parameters, m the fitted train examples, σ as in "
                 "pacbayes-flatness")
def pacbayes_init(ctx: Context, **settings: float) -> float:
    return bound_from(ctx, True, False, dict(settings))


@measure("pacbayes-orig", family="pac-bayes", needs=("weights", "train"), direction=1, cost="heavy",
         default=False, settings=FLATNESS, reference=PACBAYES_REFERENCE,
         formula="‖w‖²/(4σ²) + log(m/σ) + 10, w all parameters, m the fitted train examples, σ as in "
                 "pacbayes-flatness")
def pacbayes_orig(ctx: Context, **settings: float) -> float:
    return bound_from(ctx, False, False, dict(settings))


@measure("pacbayes-mag-init", family="pac-bayes", needs=("weights", "init", "train"), direction=1,
         cost="heavy", default=False, settings=MAG_FLATNESS, reference=PACBAYES_REFERENCE,
         formula="¼ Σ_i log((ε² + (σ'²+1)‖w − w⁰‖²/ω) / (ε² + σ'²(w_i − w⁰_i)²)) + log(m/σ') + 10, ω the "
                 "number of parameters, m the fitted train examples, σ' as in pacbayes-mag-flatness")
def pacbayes_mag_init(ctx: Context, **settings: float) -> float:
    return bound_from(ctx, True, True, dict(settings))


@measure("pacbayes-mag-orig", family="pac-bayes", needs=("weights", "train"), direction=1, cost="heavy",
         default=False, settings=MAG_FLATNESS, reference=PACBAYES_REFERENCE,
         formula="¼ Σ_i log((ε² + (σ'²+1)‖w‖²/ω) / (ε² + σ'² w_i²)) + log(m/σ') + 10, ω the number of "
                 "parameters, m the fitted train examples, σ' as in pacbayes-mag-flatness")
def pacbayes_mag_orig(ctx: Context, **settings: float) -> float:
    return bound_from(ctx, False, True, dict(settings))
