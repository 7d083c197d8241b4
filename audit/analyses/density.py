"""The Hessian eigenvalue density of the train loss by stochastic Lanczos quadrature (Ghorbani, Krishnan and Xiao
2019, "An Investigation into Neural Net Optimization via Hessian Eigenvalue Density"; Yao et al. 2020, PyHessian).

H is the Hessian of the mean cross-entropy on (x, y) with respect to every trainable parameter, at the model's
weights, in eval mode, used only through Hessian-vector products (torch.func, forward-over-reverse). For each
seeded Rademacher probe v, m Lanczos steps from v/‖v‖ give a tridiagonal T whose eigenvalues (Ritz nodes θ_j)
and squared first eigenvector components (weights w_j, summing to 1) are a Gauss quadrature of the spectral
measure of H seen from v: vᵀ f(H) v / vᵀv ≈ Σ_j w_j f(θ_j), exact for polynomials of degree up to 2m − 1.
The density is the average of these measures over probes, each node broadened into a Gaussian.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.integrate import trapezoid
from scipy.linalg import eigh_tridiagonal
from torch import nn
from torch.func import functional_call

from audit.analyses.landscape import evaluating
from audit.resources import check_memory
from measures.curvature import hvp_bytes, stacked

Params = dict[str, torch.Tensor]

PROBES = 8
STEPS = 64
SEED = 0
SIGMA = 0.01  # the Gaussian's standard deviation as a fraction of the range of the Ritz nodes
GRID = 1000
BATCH = 4096
CHUNK = 8  # probes whose Lanczos recurrences run together through one vmapped Hessian-vector product
REFERENCE = ("Ghorbani, Krishnan and Xiao 2019 (Hessian eigenvalue density, stochastic Lanczos quadrature); "
             "Yao et al. 2020, PyHessian")


def lanczos_steps(steps: int, parameters: int) -> int:
    """The Lanczos steps actually taken: a Krylov space of H has at most as many dimensions as H has rows."""
    return max(1, min(steps, parameters))


def hessian_vector_products(probes: int, steps: int, parameters: int) -> int:
    """Hessian-vector products `hessian_density` needs, each over every example: probes × min(steps, P)."""
    return probes * lanczos_steps(steps, parameters)


def trainable(model: nn.Module) -> Params:
    """Detached copies of the parameters that require grad, by name."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def hvp_function(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor,
                 batch: int = BATCH) -> Callable[[Params], Params]:
    """v ↦ H v, H the Hessian at `params` of the mean cross-entropy on (x, y).

    Summed over batches of `batch` examples (each batch's loss is its sum over n), so the memory is that of one
    batch; buffers and frozen parameters are the model's."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1 (got {batch})")
    buffers = {name: b.detach() for name, b in model.named_buffers()}
    n = len(x)

    def batch_loss(p: Params, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, (p, buffers), (xb,))
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        return F.cross_entropy(logits, yb, reduction="sum") / n

    def hvp(v: Params) -> Params:
        total: Params = {}
        for start in range(0, n, batch):
            xb, yb = x[start:start + batch], y[start:start + batch]
            product = torch.func.jvp(lambda p: torch.func.grad(batch_loss)(p, xb, yb), (params,), (v,))[1]
            total = product if not total else {name: total[name] + product[name] for name in total}
        return total

    return hvp


def rademacher(count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """`count` Rademacher vectors (±1), one draw of `size` each from the generator, as measures' hessian-trace
    draws them (so the same seed gives the same probes)."""
    return torch.stack([torch.randint(0, 2, (size,), generator=generator) * 2 - 1 for _ in range(count)])


def lanczos(matvec: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor, steps: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lanczos with full reorthogonalization, run for k start vectors together.

    `matvec` maps a (k, n) block of vectors to (k, n) products. Returns the diagonals (k, steps) and
    off-diagonals (k, steps) of the tridiagonal matrices (float64; off-diagonal j couples steps j and j + 1) and
    each recurrence's length: a recurrence that breaks down (β_j ≤ √ε ‖T‖: its Krylov space is invariant to
    rounding, which in the HVPs measured a few hundred ε) stops there, and its entries past its length are zero."""
    k, n = start.shape
    basis = start.new_zeros((k, steps, n))
    v = start / start.norm(dim=1, keepdim=True)
    alphas = np.zeros((k, steps))
    betas = np.zeros((k, steps))
    lengths = np.full(k, steps)
    active = np.ones(k, dtype=bool)
    scale = np.zeros(k)
    tol = math.sqrt(torch.finfo(start.dtype).eps)
    for j in range(steps):
        basis[:, j] = v
        w = matvec(v)
        if not torch.isfinite(w).all():
            raise ValueError("a Hessian-vector product is not finite (a diverged model?)")
        alpha = (w * v).sum(dim=1)
        # twice is enough (Kahan–Parlett): classical Gram–Schmidt against every basis vector so far, repeated
        for _ in range(2):
            w = w - torch.einsum("kjn,kj->kn", basis[:, :j + 1], torch.einsum("kjn,kn->kj", basis[:, :j + 1], w))
        beta = w.norm(dim=1)
        alphas[:, j] = np.where(active, alpha.double().cpu().numpy(), 0.0)
        betas[:, j] = np.where(active, beta.double().cpu().numpy(), 0.0)
        scale = np.maximum(scale, np.abs(alphas[:, j]) + betas[:, j])
        if j == steps - 1:
            break
        broke = active & (betas[:, j] <= tol * scale)
        lengths[broke] = j + 1
        betas[broke, j] = 0.0
        active &= ~broke
        keep = torch.as_tensor(active, device=w.device)[:, None]
        v = torch.where(keep, w / beta.clamp_min(torch.finfo(w.dtype).tiny)[:, None], torch.zeros_like(w))
    betas[:, -1] = 0.0
    return alphas, betas, lengths


def quadrature(alphas: np.ndarray, betas: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ritz nodes and weights (squared first eigenvector components) of each recurrence's tridiagonal matrix,
    (k, steps) each; past a recurrence's length the nodes and weights are 0."""
    nodes, weights = np.zeros_like(alphas), np.zeros_like(alphas)
    for i, m in enumerate(lengths):
        values, vectors = eigh_tridiagonal(alphas[i, :m], betas[i, :m - 1])
        nodes[i, :m], weights[i, :m] = values, vectors[0] ** 2
    return nodes, weights


def broaden(nodes: np.ndarray, weights: np.ndarray, grid: np.ndarray, width: float) -> np.ndarray:
    """The mean over probes (rows) of Σ_j w_j N(λ; θ_j, width²) on the grid: a density when each row's weights
    sum to 1. Public so that several runs can be drawn on one grid with one width."""
    nodes, weights = np.atleast_2d(nodes), np.atleast_2d(weights)
    z = (np.asarray(grid)[:, None] - nodes.reshape(-1)[None, :]) / width
    kernel = np.exp(-0.5 * z ** 2) / (width * math.sqrt(2 * math.pi))
    return kernel @ weights.reshape(-1) / len(nodes)


def density_grid(nodes: np.ndarray, weights: np.ndarray, sigma: float = SIGMA, points: int = GRID
                 ) -> tuple[np.ndarray, float]:
    """A grid over the nodes of positive weight, 6 widths beyond both ends, and the width: sigma × their range
    (sigma × max(|λ|, 1) when they all coincide)."""
    support = nodes[weights > 0]
    low, high = float(support.min()), float(support.max())
    spread = high - low if high > low else max(abs(low), abs(high), 1.0)
    width = sigma * spread
    return np.linspace(low - 6 * width, high + 6 * width, points), width


def hessian_density(model: nn.Module, x: torch.Tensor, y: torch.Tensor, probes: int = PROBES, steps: int = STEPS,
                    seed: int = SEED, batch: int = BATCH, sigma: float = SIGMA, grid: int = GRID,
                    chunk: int = CHUNK) -> dict[str, Any]:
    """The Hessian eigenvalue density of the mean cross-entropy on (x, y) by stochastic Lanczos quadrature.

    `probes` Rademacher vectors from torch.Generator(seed), min(steps, P) Lanczos steps each (P the number of
    trainable parameters), `chunk` probes at a time; nodes broadened by Gaussians of width sigma × the nodes'
    range and normalized to integrate to 1 by the trapezoid rule on `grid` points. The trace estimate is
    P × the mean over probes of Σ_j w_j θ_j (= Hutchinson's zᵀHz with the same probes). Ghorbani et al. 2019;
    Yao et al. 2020.

    Returns {"nodes", "weights": (probes, m) arrays, "lengths": (probes,) Lanczos steps taken (fewer than m
    after a breakdown; later nodes and weights are 0), "grid", "density": arrays, "trace_estimate",
    "trace_stderr" (NaN for one probe): floats, "attrs": the settings}."""
    if probes < 1 or steps < 1 or chunk < 1 or sigma <= 0 or grid < 2:
        raise ValueError("needs probes, steps and chunk >= 1, sigma > 0 and grid >= 2 "
                         f"(got {probes}, {steps}, {chunk}, {sigma}, {grid})")
    with evaluating(model):
        params = trainable(model)
        like = next(iter(params.values()))
        n = sum(p.numel() for p in params.values())
        m = lanczos_steps(steps, n)
        chunk = min(chunk, probes)
        needed = hvp_bytes(model, x[:batch]) * chunk + chunk * m * n * like.element_size()
        check_memory("hessian-density", needed, x.device, f"lower the batch (now {batch}), the chunk of probes "
                     f"(now {chunk}) or the steps (now {m})", what="the Hessian density")
        batched_hvp = torch.func.vmap(hvp_function(model, params, x, y, batch))

        def matvec(vectors: torch.Tensor) -> torch.Tensor:
            products = batched_hvp(stacked(vectors, params))
            return torch.cat([products[name].reshape(len(vectors), -1) for name in params], dim=1).detach()

        generator = torch.Generator().manual_seed(seed)
        parts = []
        for start in range(0, probes, chunk):
            z = rademacher(min(chunk, probes - start), n, generator).to(device=like.device, dtype=like.dtype)
            parts.append(lanczos(matvec, z, m))
    alphas, betas, lengths = (np.concatenate(part) for part in zip(*parts))
    nodes, weights = quadrature(alphas, betas, lengths)
    values, width = density_grid(nodes, weights, sigma, grid)
    density = broaden(nodes, weights, values, width)
    density = density / trapezoid(density, values)
    moments = n * (weights * nodes).sum(axis=1)
    stderr = float(moments.std(ddof=1) / math.sqrt(probes)) if probes > 1 else math.nan
    attrs = {"probes": probes, "steps": steps, "lanczos_steps": m, "seed": seed, "sigma": float(sigma),
             "width": float(width), "grid": grid, "parameters": n, "examples": len(x),
             "probe": "rademacher", "loss": "mean cross-entropy, eval mode", "reference": REFERENCE}
    return {"nodes": nodes, "weights": weights, "lengths": lengths, "grid": values, "density": density,
            "trace_estimate": float(moments.mean()), "trace_stderr": stderr, "attrs": attrs}


def hutchinson_trace(model: nn.Module, x: torch.Tensor, y: torch.Tensor, probes: int = PROBES, seed: int = SEED,
                     batch: int = BATCH, chunk: int = CHUNK) -> tuple[float, float]:
    """Hutchinson's estimate of tr H, (1/probes) Σ zᵀHz over Rademacher probes from torch.Generator(seed) (the
    probes `hessian_density` draws with that seed), and its standard error (NaN for one probe). Hutchinson 1990."""
    with evaluating(model):
        params = trainable(model)
        like = next(iter(params.values()))
        n = sum(p.numel() for p in params.values())
        batched_hvp = torch.func.vmap(hvp_function(model, params, x, y, batch))
        generator = torch.Generator().manual_seed(seed)
        values = []
        for start in range(0, probes, chunk):
            z = rademacher(min(chunk, probes - start), n, generator).to(device=like.device, dtype=like.dtype)
            products = batched_hvp(stacked(z, params))
            hz = torch.cat([products[name].reshape(len(z), -1) for name in params], dim=1)
            values.append((z * hz.detach()).sum(dim=1).double().cpu().numpy())
    values = np.concatenate(values)
    stderr = float(values.std(ddof=1) / math.sqrt(probes)) if probes > 1 else math.nan
    return float(values.mean()), stderr
