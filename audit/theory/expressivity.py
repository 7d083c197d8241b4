"""Finite-sample expressivity (Zhang et al. §4, Theorem 1): a two-layer ReLU network with 2n + d weights that
represents any targets on n distinct points in d dimensions, built explicitly and checked.

c(x) = Σ_j w_j · max(⟨a, x⟩ − b_j, 0). With z_i = ⟨a, x_i⟩ sorted and b_1 < z_1 < b_2 < z_2 < … < b_n < z_n,
the matrix A_ij = max(z_i − b_j, 0) is lower triangular with a positive diagonal, so A w = y has one solution.

Class labels are fitted as one real output equal to the label index (c(x_i) = y_i ∈ {0, …, C−1}); a point is
classified by the nearest label index. This keeps the theorem's count of exactly 2n + d weights for any
labelling (one-vs-rest heads would need d + n + C·n).

Where the biases sit between the points matters numerically though not mathematically. At midpoints
(b_j = (z_{j−1} + z_j)/2) the interpolant overshoots between points by factors of the ratio of neighbouring
gaps, which compound, so the weights grow large and cancellation costs accuracy: on 1,000 Gaussian points in
50 dimensions (seed 0) midpoints gave ‖w‖ = 4.6e7 and a largest error of 3.8e-6, a tenth of the way 2.6e6 and
8.6e-9 (measured). Putting each bias a tenth of the way from the previous point to the next
(b_j = z_{j−1} + 0.1·(z_j − z_{j−1})) makes c nearly the piecewise-linear interpolant of the points, and the
error stays below 1e-6; `position=0.5` gives the midpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.linalg import lapack, solve_triangular
from torch import nn

from audit.data.fitted import build_run_data
from audit.data.sources import load_base
from audit.errors import UsageError, WorkError
from audit.resources import check_memory
from audit.spec.names import parse_variant
from audit.spec.run import RunSpec, derive_seed

BIAS_POSITION = 0.1  # b_j = z_{j−1} + position · (z_j − z_{j−1})
TRIES = 8  # directions drawn at most when the projections nearly tie
NEAR_TIE = 0.1  # a smallest gap below NEAR_TIE / n² of the spread is a near-tie (typical: ~0.6 / n² for Gaussians)
GAUSSIAN_CLASSES = 10  # labels of random Gaussian points are drawn from this many classes
SVD_LIMIT = 2000  # above this many points the condition number is LAPACK's 1-norm estimate, not an SVD
TARGETS = ("labels", "real")
GROWTH_KEYS = ("n", "max_error", "condition_number", "relative_gap")


class TwoLayerReLU(nn.Module):
    """c(x) = Σ_j w_j relu(⟨a, x⟩ − b_j) in float64: a (d), b (n), w (n); exactly 2n + d parameters."""
    def __init__(self, a: np.ndarray, b: np.ndarray, w: np.ndarray) -> None:
        super().__init__()
        self.project = nn.Linear(len(a), 1, bias=False, dtype=torch.float64)
        self.biases = nn.Parameter(torch.as_tensor(b, dtype=torch.float64).clone())
        self.output = nn.Linear(len(b), 1, bias=False, dtype=torch.float64)
        with torch.no_grad():
            self.project.weight.copy_(torch.as_tensor(a, dtype=torch.float64).reshape(1, -1))
            self.output.weight.copy_(torch.as_tensor(w, dtype=torch.float64).reshape(1, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.project(x.reshape(len(x), -1)) - self.biases)
        return self.output(hidden).squeeze(-1)


@dataclass
class Construction:
    model: TwoLayerReLU
    x: np.ndarray  # the distinct points, (n, d)
    y: np.ndarray  # their targets
    system: np.ndarray  # A, rows and columns in the order of the sorted projections
    relative_gap: float  # smallest gap between sorted projections / their spread
    tries: int  # directions drawn
    merged: int  # duplicate points merged into one


def merge_duplicates(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """One point per distinct input. Identical inputs must have identical targets: no function maps one input
    to two values, so a conflict is a UsageError naming how many inputs have one."""
    unique, first, inverse = np.unique(x, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    if len(unique) == len(x):
        return x, y, 0
    low = np.full(len(unique), np.inf)
    high = np.full(len(unique), -np.inf)
    np.minimum.at(low, inverse, y)
    np.maximum.at(high, inverse, y)
    conflicts = int((low != high).sum())
    if conflicts:
        raise UsageError(f"{conflicts} input{'s' if conflicts > 1 else ''} appear{'' if conflicts > 1 else 's'} "
                         "more than once with different targets: no function can represent that; drop or "
                         "relabel the duplicates")
    keep = np.sort(first)
    return x[keep], y[keep], len(x) - len(keep)


def projection_gap(z: np.ndarray) -> float:
    """Smallest gap between sorted projections relative to their spread (1 for a single point)."""
    if len(z) < 2:
        return 1.0
    ordered = np.sort(z)
    spread = ordered[-1] - ordered[0]
    return float(np.diff(ordered).min() / spread) if spread > 0 else 0.0


def directions(d: int, seed: int, count: int) -> list[np.ndarray]:
    """The unit Gaussian directions tried, in order: the first is what a construction with this seed uses
    unless its projections nearly tie."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        a = rng.standard_normal(d)
        out.append(a / np.linalg.norm(a))
    return out


def project(x: np.ndarray, a: np.ndarray) -> np.ndarray:
    # The model's own projection, so the construction sees exactly the z the network computes.
    with torch.no_grad():
        return (torch.from_numpy(x) @ torch.from_numpy(a)).numpy()


def choose_direction(x: np.ndarray, seed: int, tries: int = TRIES) -> tuple[np.ndarray, np.ndarray, float, int]:
    """A direction with distinct projections: the seeded first one unless its smallest gap is a near-tie,
    then up to `tries` directions, keeping the one with the largest smallest gap."""
    threshold = NEAR_TIE / max(len(x), 2) ** 2
    best = None
    for used, a in enumerate(directions(x.shape[1], seed, tries), start=1):
        z = project(x, a)
        gap = projection_gap(z)
        if best is None or gap > best[2]:
            best = (a, z, gap)
        if gap >= threshold:
            break
    assert best is not None
    if not best[2] > 0:
        raise WorkError(f"no direction of {tries} tried separates the projections of the {len(x)} points; the "
                        "points are distinct but lie too close together for float64")
    return best[0], best[1], best[2], used


def biases(z_sorted: np.ndarray, position: float = BIAS_POSITION) -> np.ndarray:
    """b_1 = z_1 − mean gap, b_j = z_{j−1} + position · (z_j − z_{j−1}): b_1 < z_1 < b_2 < … < b_n < z_n."""
    b = np.empty(len(z_sorted))
    gaps = np.diff(z_sorted)
    b[0] = z_sorted[0] - (float(gaps.mean()) if len(gaps) else 1.0)
    b[1:] = z_sorted[:-1] + position * gaps
    return b


def triangular_system(z_sorted: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A_ij = max(z_i − b_j, 0): lower triangular with a positive diagonal."""
    return np.maximum(z_sorted[:, None] - b[None, :], 0.0)


def construct(x: np.ndarray, y: np.ndarray, seed: int = 0, tries: int = TRIES,
              position: float = BIAS_POSITION) -> Construction:
    """The network of Theorem 1 for targets y on points x (n, d), duplicates merged, in float64."""
    x = np.ascontiguousarray(x.reshape(len(x), -1), dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if len(x) != len(y) or len(x) == 0:
        raise UsageError(f"need one target per point and at least one point, got {len(x)} points, {len(y)} targets")
    x, y, merged = merge_duplicates(x, y)
    a, z, gap, used = choose_direction(x, seed, tries)
    order = np.argsort(z, kind="stable")
    b = biases(z[order], position)
    system = triangular_system(z[order], b)
    w = solve_triangular(system, y[order], lower=True)
    return Construction(TwoLayerReLU(a, b, w), x, y, system, gap, used, merged)


def deepen(model: TwoLayerReLU, depth: int) -> nn.Sequential:
    """The corollary's depth-k network (k linear layers, k ≥ 3) computing exactly c(x) of `model`, with width
    ⌈n/(k−2)⌉ + 3 and O(n + d) nonzero weights. Layer 1 computes t = relu(⟨a, x⟩ − b_1) (t = z − b_1 on the
    points, 0 where every unit of c is 0); each of the k − 2 middle layers carries t on, computes its block of
    c's units relu(t − (b_j − b_1)), and carries the sum of the previous blocks' terms w_j·h_j as
    relu(+acc), relu(−acc); the last layer adds the final block to acc. Dense torch layers, mostly zeros."""
    if depth < 3:
        raise UsageError(f"--depth must be at least 2 (2 is Theorem 1's network), got {depth}")
    a = model.project.weight.detach()[0]
    b = model.biases.detach()
    w = model.output.weight.detach()[0]
    n = len(b)
    if depth - 2 > n:
        raise UsageError(f"--depth {depth} leaves empty layers: at most n + 2 = {n + 2} for {n} points")
    blocks = [torch.as_tensor(block) for block in np.array_split(np.arange(n), depth - 2)]

    def carried(previous: torch.Tensor, size: int) -> torch.Tensor:
        """Coefficients giving acc + Σ_{j ∈ previous} w_j h_j from a middle layer's units (t, h_block, acc±)."""
        coefficients = torch.zeros(size, dtype=torch.float64)
        coefficients[1:1 + len(previous)] = w[previous]
        coefficients[1 + len(previous)], coefficients[2 + len(previous)] = 1.0, -1.0
        return coefficients

    first = nn.Linear(len(a), 1, dtype=torch.float64)
    layers: list[nn.Module] = [nn.Flatten(), first, nn.ReLU()]
    with torch.no_grad():
        first.weight.copy_(a.reshape(1, -1))
        first.bias.fill_(-float(b[0]))
        size = 1
        for index, block in enumerate(blocks):
            layer = nn.Linear(size, len(block) + 3, dtype=torch.float64)
            layer.weight.zero_()
            layer.bias.zero_()
            layer.weight[0, 0] = 1.0  # t, carried on (unit 0 of every layer)
            layer.weight[1:1 + len(block), 0] = 1.0
            layer.bias[1:1 + len(block)] = -(b[block] - b[0])
            if index > 0:
                coefficients = carried(blocks[index - 1], size)
                layer.weight[len(block) + 1] = coefficients
                layer.weight[len(block) + 2] = -coefficients
            layers += [layer, nn.ReLU()]
            size = len(block) + 3
        last = nn.Linear(size, 1, bias=False, dtype=torch.float64)
        last.weight.copy_(carried(blocks[-1], size).reshape(1, -1))
    return nn.Sequential(*layers, last, nn.Flatten(0))


def deep_summary(built: Construction, depth: int, fitted_two_layer: np.ndarray) -> dict[str, Any]:
    """Size and error of the depth-k network, and its largest difference from the two-layer one."""
    deep = deepen(built.model, depth)
    fitted = outputs(deep, built.x)
    linears = [m for m in deep if isinstance(m, nn.Linear)]
    return {"depth": depth, "width": max(m.out_features for m in linears[:-1]),
            "nonzero_weights": int(sum(int((p != 0).sum()) for p in deep.parameters())),
            "dense_parameters": int(sum(p.numel() for p in deep.parameters())),
            "max_error": float(np.abs(fitted - built.y).max()),
            "max_difference_from_two_layer": float(np.abs(fitted - fitted_two_layer).max())}


def outputs(model: nn.Module, x: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """c(x) for every row of x, a chunk at a time (the hidden layer is chunk × n)."""
    with torch.no_grad():
        tensor = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
        return torch.cat([model(tensor[i:i + chunk]) for i in range(0, len(tensor), chunk)]).numpy()


def condition_number(system: np.ndarray) -> tuple[float, str]:
    """cond(A): the 2-norm by SVD (numpy.linalg.cond) up to SVD_LIMIT points, else LAPACK dtrcon's 1-norm
    estimate (O(n²) for a triangular matrix)."""
    if len(system) <= SVD_LIMIT:
        return float(np.linalg.cond(system)), "2-norm"
    rcond, info = lapack.dtrcon(system, norm="1", uplo="L")
    return (1.0 / rcond if info == 0 and rcond > 0 else math.inf), "1-norm estimate"


def summarize(built: Construction) -> tuple[dict[str, Any], np.ndarray]:
    """The construction's size, error, conditioning and norms, and its outputs on its points."""
    fitted = outputs(built.model, built.x)
    cond, method = condition_number(built.system)
    model = built.model
    return {"n": len(built.x), "weights": sum(p.numel() for p in model.parameters()),
            "max_error": float(np.abs(fitted - built.y).max()), "condition_number": cond, "condition_norm": method,
            "relative_gap": built.relative_gap, "directions_tried": built.tries,
            "norm_a": float(model.project.weight.detach().norm()), "norm_b": float(model.biases.detach().norm()),
            "norm_w": float(model.output.weight.detach().norm())}, fitted


def growth_sizes(n: int) -> list[int]:
    """100, 200, 400, … below n, then n itself."""
    sizes, size = [], 100
    while size < n:
        sizes.append(size)
        size *= 2
    return sizes + [n]


def memory_check(n: int) -> None:
    """Refuse (TooLarge, exit 1) before building when A, its SVD's working copies and one chunk of hidden
    activations would not fit in 80% of the available memory."""
    check_memory("", 8 * (3 * n * n + 2048 * n), torch.device("cpu"),
                 "use fewer points (the triangular system alone is n² × 8 bytes)",
                 what=f"the expressivity construction on {n:,} points")


def points_and_targets(n: int, d: int, dataset: str | None, train_size: int | None, variant: str, targets: str,
                       seed: int, data_dir: Path | None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Random Gaussian points (n, d), or a dataset's flattened raw train inputs; targets are the variant's
    labels (as label indices) or standard Gaussian reals."""
    if targets not in TARGETS:
        raise UsageError(f"--targets must be labels or real, got '{targets}'")
    about: dict[str, Any] = {"dataset": dataset, "targets": targets}
    if dataset is None:
        if n < 1 or d < 1:
            raise UsageError(f"--n and --d must be positive, got n={n}, d={d}")
        if targets == "labels" and variant != "random-labels":
            raise UsageError(f"variant '{variant}' needs --dataset: random Gaussian points have only random labels "
                             "(use --variant random-labels or --targets real)")
        x = np.random.default_rng(derive_seed(seed, "expressivity-points")).standard_normal((n, d))
        labels = np.random.default_rng(derive_seed(seed, "labels")).integers(0, GAUSSIAN_CLASSES, n)
        about.update(variant="random-labels" if targets == "labels" else None, classes=GAUSSIAN_CLASSES,
                     inputs="standard Gaussian points")
    else:

        available = len(load_base(dataset, data_dir).y_train)
        if train_size is not None and not 0 < train_size <= available:
            raise UsageError(f"--train-size must lie in 1..{available} (the training images of {dataset}), "
                             f"got {train_size}")

        name, corrupt = parse_variant(variant)
        spec = RunSpec(dataset=dataset, train_size=train_size, variant=name, corrupt=corrupt, seed=seed,
                       preprocess="none")
        data = build_run_data(spec, data_dir)
        x = data.x_train.reshape(len(data.x_train), -1).double().numpy()
        labels = data.y_train.numpy()
        about.update(variant=spec.variant_label if targets == "labels" else None, classes=data.num_classes,
                     inputs=f"{dataset} train images, raw pixels, flattened")
    if targets == "real":
        y = np.random.default_rng(derive_seed(seed, "expressivity-targets")).standard_normal(len(x))
        about["classes"] = None
    else:
        y = labels.astype(np.float64)
    return x, y, about


def expressivity(n: int = 1000, d: int = 50, dataset: str | None = None, train_size: int | None = None,
                 variant: str = "random-labels", targets: str = "labels", seed: int = 0,
                 data_dir: Path | None = None, depth: int = 2) -> dict[str, Any]:
    """Build Theorem 1's network for the points and targets, check it, and report (a JSON-ready dict),
    with the error and condition number over n = 100, 200, 400, … up to the number of points; with depth > 2
    also the corollary's depth-k network built from it."""
    if depth < 2:
        raise UsageError(f"--depth must be at least 2 (2 is Theorem 1's network), got {depth}")
    x, y, about = points_and_targets(n, d, dataset, train_size, variant, targets, seed, data_dir)
    memory_check(len(x))
    direction_seed = derive_seed(seed, "expressivity-direction")
    built = construct(x, y, direction_seed)
    summary, fitted = summarize(built)
    report: dict[str, Any] = {**about, "points": len(x), "merged_duplicates": built.merged, "d": built.x.shape[1],
                              **summary, "weights_formula": "2n + d", "bias_position": BIAS_POSITION}
    if targets == "labels":
        nearest = np.clip(np.rint(fitted), 0, about["classes"] - 1)
        report["accuracy"] = float((nearest == built.y).mean())
    growth = []
    for size in growth_sizes(len(built.x)):
        row = summary if size == len(built.x) else summarize(construct(built.x[:size], built.y[:size],
                                                                       direction_seed))[0]
        growth.append({key: row[key] for key in GROWTH_KEYS})
    report["growth"] = growth
    if depth > 2:
        report["deep"] = deep_summary(built, depth, fitted)
    return report
