"""Kernel measures: the RKHS norm of a kernel run's interpolant, and the label complexity of a trained network
under its empirical neural tangent kernel."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jacrev, vmap

from audit.resources import check_memory
from measures._registry import Context, Undefined, keep_detail, measure

CHUNK_BYTES = 2 ** 27  # one chunk of Jacobian rows in float64 (two are held at a time), or of a layer graph
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


def tangent_kernel(model: nn.Module, x: torch.Tensor, keep_bytes: int = JACOBIAN_BYTES,
                   chunk: int | None = None) -> torch.Tensor:
    """H_ij = Σ_c ⟨∂f_c(x_i)/∂θ, ∂f_c(x_j)/∂θ⟩ over all parameters θ, in float64: the empirical tangent
    kernel traced over the C outputs. By layer factors (linear_kernel) when every parameter is in an nn.Linear
    called once per forward, else from per-example Jacobians (jacobian_kernel)."""
    if linear_layers(model, x) is not None:
        return linear_kernel(model, x, chunk)
    return jacobian_kernel(model, x, keep_bytes, chunk)


def tangent_kernel_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """About the memory tangent_kernel(model, x) allocates, for the path it takes on x."""
    n = len(x)
    count = sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        classes = int(model(x[:1]).shape[1])
    layers = linear_layers(model, x)
    if layers is not None:
        width = sum(layer.in_features + layer.out_features for layer in layers)
        kept = n * sum(layer.in_features + classes * layer.out_features for layer in layers)
        return 8 * (count + kept + 3 * n * n + 4 * classes * min(linear_rows(width, classes), n) * width)
    rows = max(1, CHUNK_BYTES // (8 * classes * count))
    return min(n * classes * count * 4, JACOBIAN_BYTES) + 8 * (3 * min(rows, n) * classes * count + n * n)


def linear_layers(model: nn.Module, x: torch.Tensor) -> list[nn.Linear] | None:
    """The model's Linear layers when every parameter is the weight or bias of one and, on a forward of x[:2],
    each is called exactly once on a (batch, features) input and the output is (batch, C); else None."""
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    owned = {id(p) for layer in layers for p in layer.parameters(recurse=False)}
    if not layers or any(id(p) not in owned for p in model.parameters()):
        return None
    probe = x[:2]
    calls = {id(layer): 0 for layer in layers}
    shapes_ok = True

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal shapes_ok
        calls[id(module)] += 1
        shapes_ok &= len(inputs) == 1 and inputs[0].dim() == 2 and len(inputs[0]) == len(probe)

    handles = [layer.register_forward_hook(count) for layer in layers]
    try:
        with torch.no_grad():
            out = model(probe)
    finally:
        for handle in handles:
            handle.remove()
    ok = shapes_ok and all(c == 1 for c in calls.values()) and out.dim() == 2 and len(out) == len(probe)
    return layers if ok else None


def linear_rows(width: int, classes: int) -> int:
    """Points per forward/backward of linear_kernel: its graph (the points repeated once per output, ≈ 4 float64
    per layer input and output) stays within CHUNK_BYTES."""
    return max(1, CHUNK_BYTES // (8 * 4 * classes * width))


def linear_kernel(model: nn.Module, x: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """tangent_kernel for a model of nn.Linear layers each called once (linear_layers): with a_i a layer's input
    and δ_ci = ∂f_c(x_i)/∂z its output's gradient, ⟨∂f_c(x_i)/∂(W, b), ∂f_c(x_j)/∂(W, b)⟩ = (δ_ci·δ_cj)(a_i·a_j + 1),
    so H = Σ_layers (A Aᵀ + bias) ⊙ Σ_c D_c D_cᵀ, in a float64 copy of the model."""
    model = copy.deepcopy(model).double()
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    inputs, deltas = layer_factors(model, layers, x.double(), chunk)
    n = len(x)
    kernel = inputs[0].new_zeros((n, n))
    for layer, a, d in zip(layers, inputs, deltas):
        d = d.reshape(n, -1)  # (n, C·out): Σ_c D_c D_cᵀ in one product
        gram = a @ a.T
        if layer.bias is not None:
            gram += 1.0
        kernel += gram * (d @ d.T)
    return kernel


def layer_factors(model: nn.Module, layers: list[nn.Linear], x: torch.Tensor,
                  chunk: int | None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per layer, its inputs A (n, in) and output gradients D (n, C, out), D[i, c] = ∂f_c(x_i)/∂z, by forward
    hooks and one backward pass per chunk: the chunk repeated C times, copy c seeded with output c."""
    for p in model.parameters():
        p.requires_grad_(True)  # every layer output then carries a gradient
    n = len(x)
    with torch.no_grad():
        classes = int(model(x[:1]).shape[1])
    inputs = [x.new_empty((n, layer.in_features)) for layer in layers]
    deltas = [x.new_empty((n, classes, layer.out_features)) for layer in layers]
    seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id(layer) → (input, output) of this chunk

    def record(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        seen[id(module)] = (args[0].detach().clone(), output)
        return output.clone()  # an in-place op downstream (ReLU(inplace=True)) must not change the recorded z

    handles = [layer.register_forward_hook(record) for layer in layers]
    size = chunk or linear_rows(sum(layer.in_features + layer.out_features for layer in layers), classes)
    try:
        with torch.enable_grad():
            for start in range(0, n, size):
                xb = x[start:start + size]
                b = len(xb)
                out = model(xb.repeat(classes, *[1] * (xb.dim() - 1)))  # rows (c, i)
                seed = torch.eye(classes, dtype=x.dtype, device=x.device).repeat_interleave(b, 0)
                zs = [seen[id(layer)][1] for layer in layers]
                # a scalar, not grad_outputs: for those torch imports sympy on first use (~2 s)
                grads = torch.autograd.grad((out * seed).sum(), zs, allow_unused=True, materialize_grads=True)
                for k, (layer, g) in enumerate(zip(layers, grads)):
                    inputs[k][start:start + b] = seen[id(layer)][0][:b]
                    deltas[k][start:start + b] = g.reshape(classes, b, -1).transpose(0, 1)
    finally:
        for handle in handles:
            handle.remove()
    return inputs, deltas


def jacobian_kernel(model: nn.Module, x: torch.Tensor, keep_bytes: int = JACOBIAN_BYTES,
                    chunk: int | None = None) -> torch.Tensor:
    """tangent_kernel for any model: per-example Jacobians by torch.func (vmap of jacrev), a chunk of points at
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
         default=False, settings={"subset": 256, "seed": 0}, version=2,
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
    with torch.no_grad():
        classes = int(ctx.model(xs[:1]).shape[1])
    check_memory("ntk-label-complexity", tangent_kernel_bytes(ctx.model, xs) + 8 * n * n, ctx.device,
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
