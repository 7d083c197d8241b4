"""Loss landscapes: the train loss along the line from the initial to the final weights, and on a plane of two
filter-normalized random directions around the final weights (Li et al. 2018, "Visualizing the Loss Landscape of
Neural Nets", NeurIPS).

Every point is a state (parameters and buffers) evaluated with torch.func.functional_call in eval mode, without
copying the model; the examples go through in batches. The caller draws the train subset (`subset`) and passes
its examples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

State = Mapping[str, Any]  # a state_dict: tensors or arrays by name
Params = dict[str, torch.Tensor]

POINTS = 31  # with STRETCH 0.25 the spacing is 0.05, so 0 and 1 fall on the linspace itself
STRETCH = 0.25
RESOLUTION = 21  # odd, so that the final weights (0, 0) are a grid point
SPAN = 1.0
BATCH = 4096
REFERENCE = "Li et al. 2018, Visualizing the Loss Landscape of Neural Nets (NeurIPS)"


def subset(x: torch.Tensor, y: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """Indices of a seeded subset of at most `size` examples (all of them, in order, when size is 0 or at least n).

    The same draw as measures' `samples` subsets (a seeded randperm, first `size`), so x[subset(...)] is the
    subset a measure with the same size and seed looks at."""
    n = len(x)
    if len(y) != n:
        raise ValueError(f"x has {n} examples and y {len(y)}")
    if size <= 0 or size >= n:
        return torch.arange(n, device=x.device)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:size].to(x.device)


def line_alphas(points: int = POINTS, stretch: float = STRETCH) -> np.ndarray:
    """linspace(-stretch, 1 + stretch, points) with 0 and 1 in it exactly (added when the spacing misses them,
    so there are `points` to `points + 2` values)."""
    if points < 2 or stretch < 0:
        raise ValueError(f"a line needs at least 2 points and a stretch >= 0 (got {points}, {stretch})")
    alpha = np.linspace(-stretch, 1.0 + stretch, points)
    tol = 1e-9 * (1.0 + 2 * stretch)
    alpha[np.abs(alpha) < tol] = 0.0
    alpha[np.abs(alpha - 1.0) < tol] = 1.0
    return np.union1d(alpha, [0.0, 1.0])


def plane_axis(resolution: int = RESOLUTION, span: float = SPAN) -> np.ndarray:
    """linspace(-span, span, resolution), its middle value exactly 0 when resolution is odd."""
    if resolution < 1 or span <= 0:
        raise ValueError(f"a plane needs a resolution >= 1 and a span > 0 (got {resolution}, {span})")
    axis = np.linspace(-span, span, resolution)
    axis[np.abs(axis) < 1e-9 * span] = 0.0
    return axis


def line_passes(examples: int, points: int = POINTS, stretch: float = STRETCH) -> int:
    """Example forward passes `line` needs: its number of points × examples."""
    return len(line_alphas(points, stretch)) * examples


def plane_passes(examples: int, resolution: int = RESOLUTION) -> int:
    """Example forward passes `plane` needs: resolution² × examples."""
    return resolution * resolution * examples


def line(model: nn.Module, init_state: State, final_state: State, x: torch.Tensor, y: torch.Tensor,
         points: int = POINTS, stretch: float = STRETCH, batch: int = BATCH, group: int | None = None
         ) -> dict[str, Any]:
    """Mean cross-entropy and accuracy on (x, y) along θ(α) = (1 − α) θ0 + α θ1, α in `line_alphas`.

    θ holds every floating parameter and floating buffer (batch norm running statistics), so that α = 0 is the
    stored initial model and α = 1 the final one exactly; integer buffers (num_batches_tracked) are the final
    ones. Buffers are not extrapolated: for α < 0 or α > 1 they are those of the nearest end. Evaluated in eval
    mode. `group` points go through one vmapped call (default 8 on a GPU, 1 elsewhere); `batch` examples at a
    time. Li et al. 2018, §3 (1D linear interpolation, Goodfellow et al. 2015).

    Returns {"alpha", "loss", "accuracy": arrays of the points, "attrs": the settings}."""
    device = x.device
    start, _ = split_state(model, init_state, device)
    end, fixed = split_state(model, final_state, device)
    alpha = line_alphas(points, stretch)
    buffers = {name for name, _ in model.named_buffers()}

    def states(index: np.ndarray) -> Params:
        out = {}
        for name, t0 in start.items():
            # extrapolated running statistics are no estimate of anything, and a running variance would go
            # negative (a NaN loss): beyond the ends, buffers stay at the nearest end's values
            a = np.clip(alpha[index], 0.0, 1.0) if name in buffers else alpha[index]
            a = torch.as_tensor(a, dtype=torch.float64, device=device)
            shape = (-1,) + (1,) * t0.dim()
            w0, w1 = (1 - a).to(t0.dtype).view(shape), a.to(t0.dtype).view(shape)
            out[name] = w0 * t0 + w1 * end[name]
        return out

    loss, accuracy = sweep(model, states, len(alpha), fixed, x, y, batch, group)
    attrs = {"kind": "line", "points": points, "stretch": float(stretch), "examples": len(x),
             "interpolated": "floating parameters and buffers (buffers clipped to 0 <= alpha <= 1)",
             "reference": REFERENCE}
    return {"alpha": alpha, "loss": loss, "accuracy": accuracy, "attrs": attrs}


def directions(model: nn.Module, final_state: State, seed: int, device: torch.device | str = "cpu"
               ) -> tuple[Params, Params]:
    """Two filter-normalized Gaussian directions in parameter space, by parameter name (Li et al. 2018, §4).

    Both are drawn from one torch.Generator seeded with `seed` (first direction, then second; parameters in
    named_parameters order; float32 draws). For a parameter with dim > 1, each filter d[i] (slice along dim 0)
    is rescaled to the norm of the weight's filter: d[i] · ‖θ[i]‖ / (‖d[i]‖ + 1e-10). Parameters with dim <= 1
    (biases, batch norm weight and bias) get a zero direction: Li et al.'s `ignore='biasbn'`."""
    weights = {name: torch.as_tensor(final_state[name]).to(device) for name, _ in model.named_parameters()}
    generator = torch.Generator().manual_seed(seed)
    return tuple(filter_normalized(weights, generator) for _ in range(2))


def filter_normalized(weights: Params, generator: torch.Generator) -> Params:
    out = {}
    for name, w in weights.items():
        if w.dim() <= 1:
            out[name] = torch.zeros_like(w)
            continue
        d = torch.randn(w.shape, generator=generator, dtype=torch.float32).to(w.device)
        d = d.to(torch.promote_types(w.dtype, torch.float32))
        w_norm = w.to(d.dtype).flatten(1).norm(dim=1)
        d_norm = d.flatten(1).norm(dim=1)
        scale = (w_norm / (d_norm + 1e-10)).view((-1,) + (1,) * (w.dim() - 1))
        out[name] = (d * scale).to(w.dtype)
    return out


def plane(model: nn.Module, final_state: State, x: torch.Tensor, y: torch.Tensor, resolution: int = RESOLUTION,
          span: float = SPAN, seed: int = 0, batch: int = BATCH, group: int | None = None) -> dict[str, Any]:
    """Mean cross-entropy and accuracy on (x, y) at θ* + a δ + b η for (a, b) on a resolution × resolution grid
    of [-span, span]², δ and η the `directions` drawn with `seed` around the final weights θ*.

    Buffers stay at their final values; evaluated in eval mode. loss[i, j] is at (a[i], b[j]); with an odd
    resolution the centre is θ* exactly. Li et al. 2018, §4 (filter normalization, biases and batch norm
    parameters ignored).

    Returns {"a", "b": the axes, "loss", "accuracy": (resolution, resolution) arrays, "attrs": the settings}."""
    device = x.device
    floating, fixed = split_state(model, final_state, device)
    delta, eta = directions(model, final_state, seed, device)
    moving = [name for name, d in delta.items() if d.dim() > 1]
    # the parameters with a zero direction stay at θ* at every point: evaluate them as fixed tensors
    fixed = {**fixed, **{name: t for name, t in floating.items() if name not in moving}}
    axis = plane_axis(resolution, span)
    grid_a, grid_b = (g.reshape(-1) for g in np.meshgrid(axis, axis, indexing="ij"))

    def states(index: np.ndarray) -> Params:
        out = {}
        for name in moving:
            t = floating[name]
            shape = (-1,) + (1,) * t.dim()
            a = torch.as_tensor(grid_a[index], device=device).to(t.dtype).view(shape)
            b = torch.as_tensor(grid_b[index], device=device).to(t.dtype).view(shape)
            out[name] = t + a * delta[name] + b * eta[name]
        return out

    loss, accuracy = sweep(model, states, len(grid_a), fixed, x, y, batch, group)
    shape = (resolution, resolution)
    attrs = {"kind": "plane", "resolution": resolution, "span": float(span), "seed": seed, "examples": len(x),
             "directions": "gaussian, filter-normalized, drawn in order from torch.Generator(seed)",
             "ignore": "biasbn", "reference": REFERENCE}
    return {"a": axis, "b": axis.copy(), "loss": loss.reshape(shape), "accuracy": accuracy.reshape(shape),
            "attrs": attrs}


def split_state(model: nn.Module, state: State, device: torch.device | str) -> tuple[Params, Params]:
    """A model's state_dict as (floating tensors, the other ones) on `device`; the names must be the model's."""
    expected = set(model.state_dict())
    missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or extra:
        raise ValueError(f"the state does not fit the model: missing {missing[:5]}, unexpected {extra[:5]}")
    tensors = {name: torch.as_tensor(state[name]).to(device) for name in model.state_dict()}
    floating = {name: t for name, t in tensors.items() if t.is_floating_point()}
    return floating, {name: t for name, t in tensors.items() if name not in floating}


@contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """The model in eval mode for the duration, its mode restored after."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def sweep(model: nn.Module, states: Callable[[np.ndarray], Params], count: int, fixed: Params, x: torch.Tensor,
          y: torch.Tensor, batch: int, group: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Loss and accuracy of `count` states, built `group` at a time by states(indices) as stacked tensors."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1 (got {batch})")
    group = max(1, group if group is not None else (8 if x.device.type == "cuda" else 1))
    losses, accuracies = [], []
    with evaluating(model), torch.no_grad():
        for start in range(0, count, group):
            loss, accuracy = metrics(model, states(np.arange(start, min(start + group, count))), fixed, x, y, batch)
            losses.append(loss)
            accuracies.append(accuracy)
    return np.concatenate(losses), np.concatenate(accuracies)


def metrics(model: nn.Module, stacked: Params, fixed: Params, x: torch.Tensor, y: torch.Tensor,
            batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean cross-entropy and accuracy of k states (stacked tensors with a leading axis k, plus shared fixed ones).

    One state is a plain functional_call; several are vmapped into one call."""
    k = len(next(iter(stacked.values()))) if stacked else 1
    loss = torch.zeros(k, dtype=torch.float64, device=x.device)
    correct = torch.zeros(k, dtype=torch.float64, device=x.device)

    def one(state: Params, xb: torch.Tensor) -> torch.Tensor:
        return functional_call(model, (state, fixed), (xb,))

    for start in range(0, len(x), batch):
        xb, target = x[start:start + batch], y[start:start + batch]
        if k == 1:
            logits = one({name: t[0] for name, t in stacked.items()}, xb)[None]
        else:
            logits = vmap(one, in_dims=(0, None))(stacked, xb)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        loss += F.cross_entropy(logits.permute(0, 2, 1), target.expand(k, -1), reduction="none").sum(1).double()
        correct += (logits.argmax(-1) == target).sum(1).double()
    return (loss / len(x)).cpu().numpy(), (correct / len(x)).cpu().numpy()
