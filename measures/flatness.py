"""PAC-Bayes flatness (the largest noise a run's weights tolerate, σ by bisection) and the PAC-Bayes bounds
built on it. The runs of a group are searched together, step by step; each run's search is its own.

Every measure here perturbs all parameters (weights and biases) of a copy of the weights; the model itself
is never modified. The noise comes from a CPU torch.Generator seeded by the `seed` setting and is the same
at every σ of a search (common random numbers): it is drawn once, and where the model starts with a Linear
layer (after parameter-free modules such as Flatten), that layer's noisy pre-activations are linear in σ,
x(W + σZ)ᵀ = xWᵀ + σ·xZᵀ, so its products with the noise are computed once per search, not once per step.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from measures._registry import Context, Undefined, measure
from measures.functional import Params, batched_metric, buffers_of, params_of, subset

GROUP_BYTES = 2**28  # at most this many bytes of noise (or of first-layer products) held per run

FLATNESS = {"draws": 16, "target": 0.1, "low": 1e-6, "high": 10.0, "tol": 0.01, "iterations": 30,
            "samples": 2048, "seed": 0}
MAG_FLATNESS = {**FLATNESS, "eps": 1e-3}
BISECTION = ("σ by bisection on log σ between `low` and `high`: the largest σ found whose mean train "
             "accuracy drop (over `draws` noise samples, the same seeded noise at every step, on a seeded "
             "subset of `samples`) is ≤ `target`, known to within a factor 1 + `tol` or after `iterations` "
             "bisections (whichever first); σ = `high` if even `high` drops accuracy by ≤ `target`, null if "
             "`low` already drops it by more")


def bisection(low: float, high: float, target: float, tol: float,
              iterations: int) -> Generator[float, bool, float | Undefined]:
    """One run's search: yields each σ to try, is sent whether its accuracy drop is ≤ target, returns σ (or
    Undefined)."""
    if not (yield low):
        return Undefined(f"noise of σ = low = {low:g} already drops the train accuracy by more than {target:g}")
    if (yield high):
        return high
    for _ in range(iterations):
        if high / low < 1 + tol:
            break
        middle = math.sqrt(low * high)
        if (yield middle):
            low = middle
        else:
            high = middle
    return low


def first_linear(model: nn.Module) -> int | None:
    """The position of the model's first parametrized module if it is a Linear in a Sequential, preceded
    only by modules without parameters or buffers (Flatten, Identity); else None."""
    if not isinstance(model, nn.Sequential):
        return None
    for position, child in enumerate(model):
        if isinstance(child, nn.Linear):
            return position
        if any(True for _ in child.parameters()) or any(True for _ in child.buffers()):
            return None
    return None


@dataclass
class Noisy:
    """A run's search state: its subset, weights, clean accuracy and the search's noise, drawn once."""
    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    params: Params
    base: float
    magnitude_aware: bool
    eps: float
    draws: int
    seed: int
    noise: Params | None = None  # (draws, ...) N(0, 1) per parameter; None: redrawn at each σ (too large to keep)
    rest: nn.Module | None = None  # the model after its first Linear, when that layer's products are kept
    products: dict[str, torch.Tensor] | None = None  # the first Linear's offset and slope at σ: see precompute


def standard_noise(params: Params, draws: int, generator: torch.Generator) -> Params:
    """(draws, ...) N(0, 1) draws per parameter, drawn draw by draw and parameter by parameter."""
    out: dict[str, list[torch.Tensor]] = {name: [] for name in params}
    for _ in range(draws):
        for name, p in params.items():
            out[name].append(torch.randn(p.shape, generator=generator, dtype=torch.float32).to(p.device))
    return {name: torch.stack(values) for name, values in out.items()}


def scale_of(params: Params, sigma: float, magnitude_aware: bool, eps: float) -> Params:
    """The noise's standard deviation per parameter: σ, or σ|w| + ε when magnitude aware."""
    if magnitude_aware:
        return {name: sigma * p.abs() + eps for name, p in params.items()}
    return {name: torch.full_like(p, sigma) for name, p in params.items()}


def start(ctx: Context, magnitude_aware: bool, eps: float, draws: int, samples: int, seed: int) -> Noisy:
    x, y = ctx.require_train()
    x, y = subset(x, y, samples, seed)
    params = params_of(ctx.model)
    _, accuracy = batched_metric(ctx.model, {name: p.unsqueeze(0) for name, p in params.items()}, x, y)
    state = Noisy(ctx.model, x, y, params, float(accuracy[0]), magnitude_aware, eps, draws, seed)
    numel = sum(p.numel() for p in params.values())
    if 4 * draws * numel > GROUP_BYTES:
        return state
    state.noise = standard_noise(params, draws, torch.Generator().manual_seed(seed))
    position = first_linear(ctx.model)
    if position is not None:
        state.products = precompute(ctx.model, position, state)
        state.rest = ctx.model[position + 1:] if state.products is not None else None
    return state


def precompute(model: nn.Sequential, position: int, state: Noisy) -> dict[str, torch.Tensor] | None:
    """The first Linear's pre-activations at σ as an offset plus σ times a slope, per draw j: for noise N(0, σ²)
    A + σ·P_j with A = xWᵀ + b and P_j = xZ_jᵀ + z_j; for magnitude-aware noise (A + ε·P_j) + σ·Q_j with
    Q_j = x(|W|∘Z_j)ᵀ + |b|∘z_j. None when they would not fit in GROUP_BYTES."""
    layer: nn.Linear = model[position]
    name = list(model._modules)[position]
    weight, bias = f"{name}.weight", f"{name}.bias"
    with torch.no_grad():
        inputs = model[:position](state.x).flatten(1)
        if 4 * 2 * state.draws * len(inputs) * layer.out_features > GROUP_BYTES:
            return None
        w, z = state.params[weight], state.noise[weight]
        b = state.params.get(bias) if layer.bias is not None else None
        zb = state.noise.get(bias) if layer.bias is not None else None
        clean = inputs @ w.T + (b if b is not None else 0)
        noise = torch.einsum("ni,doi->dno", inputs, z)
        if zb is not None:
            noise += zb.unsqueeze(1)
        if not state.magnitude_aware:
            return {"offset": clean, "slope": noise}
        slope = torch.einsum("ni,doi->dno", inputs, w.abs() * z)
        if zb is not None:
            slope += (b.abs() * zb).unsqueeze(1)
        return {"offset": noise.mul_(state.eps).add_(clean), "slope": slope}


def draw_accuracies(state: Noisy, sigma: float) -> Iterator[float]:
    """The train accuracy of each noisy draw at scale σ, in draw order."""
    if state.noise is None:
        yield from redrawn_accuracies(state, sigma)
        return
    scale = scale_of(state.params, sigma, state.magnitude_aware, state.eps)
    noisy = {name: state.params[name].unsqueeze(0) + state.noise[name] * scale[name] for name in state.params}
    if state.products is None:
        _, accuracy = batched_metric(state.model, noisy, state.x, state.y)
        yield from accuracy.tolist()
        return
    offset, slope, rest = state.products["offset"], state.products["slope"], state.rest
    buffers = buffers_of(rest)
    with torch.no_grad():
        for j in range(state.draws):  # draw by draw: one draw's activations stay in the cache
            pre = torch.add(offset if offset.dim() == 2 else offset[j], slope[j], alpha=sigma)
            weights = {name: noisy[name][j] for name, _ in rest.named_parameters()}  # a slice keeps the names
            logits = functional_call(rest, (weights, buffers), (pre,))
            yield float((logits.argmax(-1) == state.y).float().mean())


def drop(state: Noisy, sigma: float) -> float:
    """The mean train accuracy drop of the run under noise of scale σ over the search's draws."""
    total = 0.0
    for accuracy in draw_accuracies(state, sigma):
        total += accuracy
    return state.base - total / state.draws


def within(state: Noisy, sigma: float, target: float) -> bool:
    """drop(state, σ) ≤ target, decided as soon as the remaining draws cannot change it: the partial sum only
    grows, and each remaining draw adds at most 1, so both bounds are computed by the same float additions as
    the whole sum and the answer is the one the whole sum gives."""
    total, left = 0.0, state.draws
    for accuracy in draw_accuracies(state, sigma):
        total, left = total + accuracy, left - 1
        if state.base - total / state.draws <= target:
            return True
        highest = total
        for _ in range(left):
            highest += 1.0
        if state.base - highest / state.draws > target:
            return False
    return state.base - total / state.draws <= target


def redrawn_accuracies(state: Noisy, sigma: float) -> Iterator[float]:
    """Each draw's accuracy with the noise redrawn from the seed in groups (a model too large to keep its
    noise): the same draws as the kept noise."""
    numel = sum(p.numel() for p in state.params.values())
    group = max(1, min(state.draws, GROUP_BYTES // max(1, 4 * numel)))
    generator = torch.Generator().manual_seed(state.seed)
    scale = scale_of(state.params, sigma, state.magnitude_aware, state.eps)
    done = 0
    while done < state.draws:
        k = min(group, state.draws - done)
        z = standard_noise(state.params, k, generator)
        noisy = {name: state.params[name].unsqueeze(0) + z[name] * scale[name] for name in state.params}
        _, accuracy = batched_metric(state.model, noisy, state.x, state.y)
        yield from accuracy.tolist()
        done += k


def search_key(magnitude_aware: bool, eps: float, draws: int, target: float, low: float, high: float, tol: float,
               iterations: int, samples: int, seed: int) -> str:
    return (f"pacbayes-sigma:{magnitude_aware}:{eps!r}:{draws}:{target!r}:{low!r}:{high!r}:{tol!r}:"
            f"{iterations}:{samples}:{seed}")


def flat_sigmas(ctxs: list[Context], magnitude_aware: bool, eps: float, draws: int, target: float, low: float,
                high: float, tol: float, iterations: int, samples: int, seed: int) -> list[float | Undefined]:
    """σ (or σ') of each context's search, the group's searches stepped together; each is searched once per
    context and settings (kept in its cache) and never depends on the others."""
    eps = eps if magnitude_aware else 0.0
    key = search_key(magnitude_aware, eps, draws, target, low, high, tol, iterations, samples, seed)
    pending = list({id(ctx): ctx for ctx in ctxs if key not in ctx.cache}.values())
    states = [start(ctx, magnitude_aware, eps, draws, samples, seed) for ctx in pending]
    searches = [bisection(low, high, target, tol, iterations) for _ in pending]
    trying = {i: next(search) for i, search in enumerate(searches)}
    while trying:
        answers = {i: within(states[i], sigma, target) for i, sigma in trying.items()}  # a step of every search
        for i, value in answers.items():
            try:
                trying[i] = searches[i].send(value)
            except StopIteration as done:
                pending[i].cache[key] = done.value
                del trying[i]
    return [ctx.cache[key] for ctx in ctxs]


def flat_sigma(ctx: Context, magnitude_aware: bool, eps: float, **settings: float) -> float:
    sigma = flat_sigmas([ctx], magnitude_aware, eps, **settings)[0]
    if isinstance(sigma, Undefined):
        raise sigma
    return sigma


def inverse_square(sigmas: list[float | Undefined]) -> list[float | Undefined]:
    return [s if isinstance(s, Undefined) else 1 / s**2 for s in sigmas]


def flatness_group(ctxs: list[Context], **settings: float) -> list[float | Undefined]:
    return inverse_square(flat_sigmas(ctxs, False, 0.0, **settings))


def mag_flatness_group(ctxs: list[Context], eps: float, **settings: float) -> list[float | Undefined]:
    return inverse_square(flat_sigmas(ctxs, True, eps, **settings))


@measure("pacbayes-flatness", family="flatness", needs=("weights", "train"), direction=1, cost="heavy",
         default=False, settings=FLATNESS, version=2, group=flatness_group,
         reference="Jiang et al. 2020, Fantastic generalization measures (μ_pac-bayes-flatness); "
                   "Dziugaite & Roy 2017",
         formula="1/σ², noise N(0, σ²) i.i.d. on every parameter; " + BISECTION)
def pacbayes_flatness(ctx: Context, **settings: float) -> float:
    return 1 / flat_sigma(ctx, False, 0.0, **settings) ** 2


@measure("pacbayes-mag-flatness", family="flatness", needs=("weights", "train"), direction=1, cost="heavy",
         default=False, settings=MAG_FLATNESS, version=2, group=mag_flatness_group,
         reference="Jiang et al. 2020, Fantastic generalization measures (μ_pac-bayes-mag-flatness)",
         formula="1/σ'², noise on w_i of standard deviation σ'|w_i| + ε; σ' as " + BISECTION)
def pacbayes_mag_flatness(ctx: Context, eps: float, **settings: float) -> float:
    return 1 / flat_sigma(ctx, True, eps, **settings) ** 2


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
         default=False, settings=FLATNESS, reference=PACBAYES_REFERENCE, version=2,
         formula="‖w − w⁰‖²/(4σ²) + log(m/σ) + 10, w all parameters, m the fitted train examples, σ as in "
                 "pacbayes-flatness")
def pacbayes_init(ctx: Context, **settings: float) -> float:
    return bound_from(ctx, True, False, dict(settings))


@measure("pacbayes-orig", family="pac-bayes", needs=("weights", "train"), direction=1, cost="heavy",
         default=False, settings=FLATNESS, reference=PACBAYES_REFERENCE, version=2,
         formula="‖w‖²/(4σ²) + log(m/σ) + 10, w all parameters, m the fitted train examples, σ as in "
                 "pacbayes-flatness")
def pacbayes_orig(ctx: Context, **settings: float) -> float:
    return bound_from(ctx, False, False, dict(settings))


@measure("pacbayes-mag-init", family="pac-bayes", needs=("weights", "init", "train"), direction=1,
         cost="heavy", default=False, settings=MAG_FLATNESS, reference=PACBAYES_REFERENCE, version=2,
         formula="¼ Σ_i log((ε² + (σ'²+1)‖w − w⁰‖²/ω) / (ε² + σ'²(w_i − w⁰_i)²)) + log(m/σ') + 10, ω the "
                 "number of parameters, m the fitted train examples, σ' as in pacbayes-mag-flatness")
def pacbayes_mag_init(ctx: Context, **settings: float) -> float:
    return bound_from(ctx, True, True, dict(settings))


@measure("pacbayes-mag-orig", family="pac-bayes", needs=("weights", "train"), direction=1, cost="heavy",
         default=False, settings=MAG_FLATNESS, reference=PACBAYES_REFERENCE, version=2,
         formula="¼ Σ_i log((ε² + (σ'²+1)‖w‖²/ω) / (ε² + σ'² w_i²)) + log(m/σ') + 10, ω the number of "
                 "parameters, m the fitted train examples, σ' as in pacbayes-mag-flatness")
def pacbayes_mag_orig(ctx: Context, **settings: float) -> float:
    return bound_from(ctx, False, True, dict(settings))
