"""Minimum-norm kernel interpolation (Zhang et al. §5): kernels, bandwidths, random features, Cholesky solves."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from audit.errors import UsageError, unknown_name
from audit.registry import Registry

KERNELS = Registry("kernel")
for _kind, _formula in (("gaussian", "exp(−‖x−x'‖²/(2σ²))"), ("laplace", "exp(−‖x−x'‖/σ)"), ("linear", "x·x'"),
                        ("polynomial", "(x·x'/d + 1)^degree")):
    KERNELS.add(_kind, _formula, formula=_formula)

DISTANCE_KERNELS = ("gaussian", "laplace")

FEATURES = ("raw", "random-conv")  # raw pixels, flattened; a random conv layer with ReLU and pooling

BANDWIDTH_POINTS = 2000  # the median heuristic looks at a seeded subset of at most this many train points

BLOCK_BYTES = 2 ** 28  # size of one chunk of kernel rows (train build and test prediction)

INTERPOLATES = 1e-6  # largest |K α − y| of an interpolating fit (one-hot targets)

JITTERS = (0.0, *(10.0 ** k for k in range(-10, -3)))  # jitters tried, relative to the mean diagonal
RANDOM_FILTERS, RANDOM_FILTER_SIZE, RANDOM_POOL = 64, 5, 6  # random conv layer: 64 filters 5×5, pooled to ≤ 6×6


def rows_per_block(columns: int) -> int:
    return max(1, BLOCK_BYTES // (8 * max(columns, 1)))


def kernel_bytes(n: int, m: int, features: int) -> int:
    """Peak memory of a fit: the n×n kernel (factored in place), one block of kernel rows, the features of the
    train and test points, targets, coefficients and predictions (10 columns each, generously)."""
    block = min(max(n, m), rows_per_block(n)) * n
    return 8 * (n * n + block + (n + m) * features + 4 * (n + m) * 10)


def squared_distances(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """‖a_i − b_j‖² by ‖a‖² + ‖b‖² − 2 a·b, clamped at 0 (written into `out` when given)."""
    out = torch.mm(a, b.T, out=out) if out is not None else a @ b.T
    out.mul_(-2).add_(a.pow(2).sum(1, keepdim=True)).add_(b.pow(2).sum(1))
    return out.clamp_(min=0)


def kernel_block(kind: str, a: torch.Tensor, b: torch.Tensor, bandwidth: float | None = None, degree: int = 2,
                 out: torch.Tensor | None = None, diagonal: int | None = None) -> torch.Tensor:
    """k(a_i, b_j) for every pair. `diagonal`: offset where a_i = b_i (a chunk of the train rows), made exact."""
    if kind in DISTANCE_KERNELS:
        if bandwidth is None or not bandwidth > 0:
            raise UsageError(f"the {kind} kernel needs a positive bandwidth, got {bandwidth}")
        block = squared_distances(a, b, out)
        if diagonal is not None:
            block.diagonal(offset=diagonal).zero_()
        if kind == "gaussian":
            return block.div_(-2.0 * bandwidth ** 2).exp_()
        return block.sqrt_().div_(-bandwidth).exp_()
    block = torch.mm(a, b.T, out=out) if out is not None else a @ b.T
    if kind == "linear":
        return block
    if kind == "polynomial":
        return block.div_(a.shape[1]).add_(1.0).pow_(degree)
    raise unknown_name("kernel", kind, KERNELS.names())


def median_bandwidth(x: torch.Tensor, seed: int, limit: int = BANDWIDTH_POINTS) -> float:
    """The median pairwise distance between distinct points of a seeded subset of at most `limit` rows."""
    n = len(x)
    index = np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False)) if n > limit else np.arange(n)
    points = x[torch.from_numpy(index)].double()
    distances = squared_distances(points, points).sqrt_()
    upper = torch.triu_indices(len(points), len(points), offset=1)
    median = float(np.median(distances[upper[0], upper[1]].cpu().numpy()))
    if not median > 0:
        raise UsageError("the median pairwise distance of the train points is 0 (most points coincide); "
                         "give --bandwidth")
    return median


def random_features(x: torch.Tensor, seed: int) -> torch.Tensor:
    """A seeded random conv layer (64 filters 5×5, stride 1, no padding, weights N(0, 1/fan-in)), ReLU, and
    average pooling to at most 6×6 positions: 2,304 features for 28×28 images, 1,024 for 8×8 digits."""
    if x.dim() != 4 or min(x.shape[2:]) < RANDOM_FILTER_SIZE:
        raise UsageError(f"random-conv features need images of at least {RANDOM_FILTER_SIZE}×{RANDOM_FILTER_SIZE}, got "
                         f"inputs of shape {tuple(x.shape[1:])}")
    channels = x.shape[1]
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn((RANDOM_FILTERS, channels, RANDOM_FILTER_SIZE, RANDOM_FILTER_SIZE),
                         generator=generator) / (channels * RANDOM_FILTER_SIZE ** 2) ** 0.5
    side = min(x.shape[2] - RANDOM_FILTER_SIZE + 1, x.shape[3] - RANDOM_FILTER_SIZE + 1, RANDOM_POOL)
    per_image = RANDOM_FILTERS * (x.shape[2] - RANDOM_FILTER_SIZE + 1) * (x.shape[3] - RANDOM_FILTER_SIZE + 1)
    chunk = rows_per_block(per_image)
    # float32 convolution (float64 has no fast CPU path, 10× slower); the kernel is then built in float64
    blocks = [F.adaptive_avg_pool2d(F.relu(F.conv2d(x[i:i + chunk].float(), weight.to(x.device))), side)
              for i in range(0, len(x), chunk)]
    return torch.cat(blocks).reshape(len(x), -1).double()


def cholesky_with_jitter(build: Callable[[], torch.Tensor], shift: float = 0.0) -> tuple[torch.Tensor, float]:
    """The lower Cholesky factor L of build() + (shift + jitter)·I, factored in place, and the jitter used.

    `build` returns a fresh symmetric float64 matrix each call (it is overwritten). A factorization that fails,
    or that succeeds only by rounding (a pivot L_ii² below n·ε of the mean diagonal: duplicate points, a
    rank-deficient kernel, whose solution would be noise of size 1/ε), is retried with a jitter of 1e-10 × the
    mean of the diagonal, growing ×10 up to 1e-4 × it; the matrix is rebuilt for every try."""
    jitter = 0.0
    for relative in JITTERS:
        matrix = build()
        mean = float(matrix.diagonal().mean())
        jitter = relative * mean
        matrix.diagonal().add_(shift + jitter)
        # The transposed view is column-major: LAPACK factors it where it lies, without a copy (symmetric input).
        view = matrix.mT
        info = torch.empty((), dtype=torch.int32, device=matrix.device)
        torch.linalg.cholesky_ex(view, out=(view, info))
        if int(info) == 0:
            smallest = float(view.diagonal().min()) ** 2
            if smallest >= len(view) * torch.finfo(torch.float64).eps * (mean + shift + jitter):
                return view, jitter
        del matrix, view
    raise UsageError(f"the kernel matrix is not positive definite even with a jitter of {jitter:.3g} "
                     f"({JITTERS[-1]:g} × its mean diagonal); add a ridge (--ridge) or choose another kernel")


def cholesky_solve(factor: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """α with L Lᵀ α = targets, by two triangular solves (torch.cholesky_solve would copy L)."""
    inner = torch.linalg.solve_triangular(factor, targets, upper=False)
    return torch.linalg.solve_triangular(factor.mT, inner, upper=True)


@dataclass
class KernelFit:
    alpha: torch.Tensor  # (n, C) coefficients
    train_outputs: torch.Tensor  # K α on the train points
    norms: torch.Tensor  # α_cᵀ K α_c per output column
    jitter: float


def fit(x: torch.Tensor, targets: torch.Tensor, kind: str, bandwidth: float | None = None, degree: int = 2,
        ridge: float = 0.0) -> KernelFit:
    """Solve (K + ridge·I) α = targets, K = k(x, x), by an in-place float64 Cholesky (with jitter if needed)."""
    x = x.double()
    n = len(x)
    chunk = rows_per_block(n)

    def build() -> torch.Tensor:
        matrix = torch.empty((n, n), dtype=torch.float64, device=x.device)
        for start in range(0, n, chunk):
            kernel_block(kind, x[start:start + chunk], x, bandwidth, degree, out=matrix[start:start + chunk],
                         diagonal=start)
        return matrix

    factor, jitter = cholesky_with_jitter(build, ridge)
    targets = targets.double()
    alpha = cholesky_solve(factor, targets)
    shift = ridge + jitter
    # K = L Lᵀ − shift·I, so K α and αᵀ K α come from the factor without the overwritten K.
    half = factor.mT @ alpha
    outputs = factor @ half - shift * alpha
    norms = half.pow(2).sum(0) - shift * alpha.pow(2).sum(0)
    return KernelFit(alpha, outputs, norms, jitter)


def predict(x_new: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor, kind: str, bandwidth: float | None = None,
            degree: int = 2) -> torch.Tensor:
    """k(x_new, x) α, the kernel block computed a chunk of rows at a time."""
    x_new, x = x_new.double(), x.double()
    chunk = rows_per_block(len(x))
    return torch.cat([kernel_block(kind, x_new[i:i + chunk], x, bandwidth, degree) @ alpha
                      for i in range(0, len(x_new), chunk)])
