"""Kernel measures: the RKHS norm of a kernel run's interpolant, and the label complexity of a trained network
under its empirical neural tangent kernel."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.func import functional_call, jacrev, vmap

from audit.resources import check_memory
from measures._registry import Context, Undefined, keep_detail, measure

CHUNK_BYTES = 2 ** 27  # one chunk of Jacobian rows in float64 (two are held at a time)
JACOBIAN_BYTES = 2 ** 30  # all Jacobian rows (float32) are kept when they fit in this, else recomputed per pair


@measure("rkhs-norm", family="kernel", needs=("weights", "train"), direction=1, cost="heavy", default=False,
         reference="Zhang et al. 2017, §5 (minimum-norm kernel interpolation)",
         formula="sqrt(Σ_c α_cᵀ K α_c) with K α = Y on one-hot train labels Y (the norm of the vector-valued "
                 "interpolant, columns c = classes); computed when a kernel run (model kernel-...) is fitted")
def rkhs_norm(ctx: Context) -> float:
    raise Undefined("defined for kernel runs (model kernel-...), where it is stored when the run is fitted "
                    "(`audit run` on a kernel experiment, or `audit kernel --out STORE`)")


def subset_index(n: int, size: int, seed: int) -> torch.Tensor:
    """Sorted indices of a seeded random subset of `size` of n points (all of them when size ≥ n or 0)."""
    if size <= 0 or size >= n:
        return torch.arange(n)
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=generator)[:size].sort().values


def tangent_kernel(model: torch.nn.Module, x: torch.Tensor, keep_bytes: int = JACOBIAN_BYTES,
                   chunk: int | None = None) -> torch.Tensor:
    """H_ij = Σ_c ⟨∂f_c(x_i)/∂θ, ∂f_c(x_j)/∂θ⟩ over all parameters θ, in float64: the empirical tangent
    kernel traced over the C outputs. Per-example Jacobians by torch.func (vmap of jacrev), a chunk of points at
    a time; they are kept (float32) when all of them fit in keep_bytes, else recomputed for each pair of chunks."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    count = sum(p.numel() for p in params.values())

    def single(p: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
        return functional_call(model, (p, buffers), (xi.unsqueeze(0),)).squeeze(0)  # (C,)

    per_example = vmap(jacrev(single), in_dims=(None, 0))

    def jacobian(xb: torch.Tensor) -> torch.Tensor:
        blocks = per_example(params, xb)  # name → (b, C, *shape)
        return torch.cat([blocks[k].reshape(len(xb), -1) for k in params], 1)  # (b, C·P), ordered (tensor, c, ·)

    n = len(x)
    with torch.no_grad():
        classes = int(model(x[:1]).shape[1])
    size = chunk or max(1, CHUNK_BYTES // (8 * classes * count))
    starts = list(range(0, n, size))
    kept: dict[int, torch.Tensor] = {}
    keep = n * classes * count * 4 <= keep_bytes

    def rows_of(start: int) -> torch.Tensor:
        if start in kept:
            return kept[start]
        block = jacobian(x[start:start + size])
        if keep:
            kept[start] = block
        return block

    kernel = torch.empty((n, n), dtype=torch.float64, device=x.device)
    for i, a in enumerate(starts):
        rows = rows_of(a).double()
        for b in starts[i:]:
            cols = rows if b == a else rows_of(b).double()
            block = rows @ cols.T
            kernel[a:a + size, b:b + size] = block
            kernel[b:b + size, a:a + size] = block.T
    return kernel


@measure("ntk-label-complexity", family="kernel", needs=("weights", "train"), direction=1, cost="heavy",
         default=False, settings={"subset": 256, "seed": 0},
         reference="Arora, Du, Hu, Li & Wang 2019, Fine-grained analysis of optimization and generalization "
                   "(sqrt(2 yᵀH⁻¹y / n)); Zhang et al. 2017 §5",
         formula="sqrt(2 Σ_c y_cᵀ H⁻¹ y_c / n) on a seeded subset of n fitted train points, y_c the one-hot "
                 "column of class c, H_ij = Σ_c ⟨∂f_c(x_i)/∂θ, ∂f_c(x_j)/∂θ⟩ the trained network's tangent "
                 "kernel traced over its outputs (all parameters, float64); null when H is singular")
def ntk_label_complexity(ctx: Context, subset: int, seed: int) -> float:
    x, y = ctx.require_train()
    index = subset_index(len(x), subset, seed).to(x.device)
    xs, ys = x[index], y[index]
    n = len(xs)
    count = sum(p.numel() for p in ctx.model.parameters())
    with torch.no_grad():
        classes = int(ctx.model(xs[:1]).shape[1])
    chunk = max(1, CHUNK_BYTES // (8 * classes * count))
    kept = min(n * classes * count * 4, JACOBIAN_BYTES)
    check_memory("ntk-label-complexity", kept + 8 * (3 * min(chunk, n) * classes * count + 2 * n * n), ctx.device,
                 "lower ntk-label-complexity.subset (--set ntk-label-complexity.subset=128)")
    kernel = tangent_kernel(ctx.model, xs)
    factor, info = torch.linalg.cholesky_ex(kernel)
    if int(info) != 0:
        raise Undefined(f"the tangent kernel on the {n} points is singular (duplicate points, or more points "
                        f"than outputs × parameters); lower the subset")
    targets = F.one_hot(ys, classes).double()
    solved = torch.cholesky_solve(targets, factor)
    quadratic = float((targets * solved).sum())
    keep_detail(ctx, "ntk-label-complexity", points=n, trace=float(kernel.diagonal().sum()))
    return math.sqrt(2.0 * quadratic / n)
