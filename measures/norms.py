"""Counts, norms, spectral and path norms of the weights (linear and conv layers, biases excluded)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, svds
from torch import nn

from measures._registry import Context, Undefined, measure
from measures.layers import as_matrix, weight_layers, weights


@measure("params", family="count", needs=("weights",), direction=1, cost="instant", invariant=True,
         reference="parameter count, the classic capacity measure (Zhang et al. 2017)",
         formula="number of trainable parameters of the model as trained")
def params(ctx: Context) -> float:
    model = ctx.raw_model or ctx.model
    return float(sum(p.numel() for p in model.parameters() if p.requires_grad))


@measure("l2", family="norm", needs=("weights",), direction=1, cost="instant",
         reference="Neyshabur et al. 2017, Exploring generalization in deep learning",
         formula="sqrt(Σ_i ‖W_i‖_F²)")
def l2(ctx: Context) -> float:
    return math.sqrt(sum(float(w.double().pow(2).sum()) for w in weights(ctx.model)))


def init_weights(ctx: Context) -> list[torch.Tensor]:
    if ctx.init is None:
        raise Undefined("needs the initial weights; pass init=")
    return weights(ctx.init)


@measure("l2-init", family="norm", needs=("weights", "init"), direction=1, cost="instant",
         reference="Nagarajan & Kolter 2019; Jiang et al. 2020 (distance from initialization)",
         formula="sqrt(Σ_i ‖W_i − W_i⁰‖_F²)")
def l2_init(ctx: Context) -> float:
    pairs = zip(weights(ctx.model), init_weights(ctx))
    return math.sqrt(sum(float((w.double() - w0.double()).pow(2).sum()) for w, w0 in pairs))


def log_frobenius(ctx: Context) -> float:
    return sum(math.log(float(w.double().norm())) for w in weights(ctx.model))


def log_spectral(ctx: Context) -> float:
    return sum(math.log(s) for s in spectral_norms(ctx))


@measure("frobenius", family="norm", needs=("weights",), direction=1, cost="instant", log=True, invariant=True,
         reference="Neyshabur et al. 2015, Norm-based capacity control",
         formula="Σ_i log ‖W_i‖_F (the log of the product of Frobenius norms)")
def frobenius(ctx: Context) -> float:
    return log_frobenius(ctx)


@measure("spectral", family="spectral", needs=("weights",), direction=1, cost="instant", log=True, invariant=True,
         reference="Bartlett et al. 2017; conv kernels reshaped to (out, in·k·k)",
         formula="Σ_i log ‖W_i‖_2, conv W_i reshaped to (out, in·k·k)")
def spectral(ctx: Context) -> float:
    return log_spectral(ctx)


UNSUPPORTED_FOR_PATHS = (nn.LocalResponseNorm, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)


def path_norm(ctx: Context, power: int) -> float:
    """(Σ over input-output paths of Π |w|^power)^(1/power), by one forward pass with |W|^power, no biases."""
    for name, module in ctx.model.named_modules():
        if isinstance(module, UNSUPPORTED_FOR_PATHS):
            raise Undefined(f"path norms are not defined through {type(module).__name__} ({name})")
    if ctx.x is None:
        raise Undefined("needs the input shape; pass train=(x, y)")
    model = copy.deepcopy(ctx.model).double()
    with torch.no_grad():
        for _, layer in weight_layers(model):
            layer.weight.copy_(layer.weight.abs().pow(power))
            if layer.bias is not None:
                layer.bias.zero_()
        ones = torch.ones((1, *ctx.x.shape[1:]), dtype=torch.float64, device=ctx.x.device)
        total = float(model(ones).sum())
    return total ** (1.0 / power)


@measure("path-l2", family="path", needs=("weights", "train"), direction=1, cost="instant", invariant=True,
         reference="Neyshabur et al. 2015, Path-SGD; Jiang et al. 2020",
         formula="sqrt(Σ_paths Π_i w_i²): one forward pass of an all-ones input with squared weights, no biases")
def path_l2(ctx: Context) -> float:
    return path_norm(ctx, 2)


def depth(ctx: Context) -> int:
    return len(weights(ctx.model))


@measure("frobenius-sum", family="norm", needs=("weights",), direction=1, cost="instant", log=True, invariant=True,
         reference="Jiang et al. 2020, sum-of-fro (depth-normalized Frobenius product)",
         formula="log(d · (Π_i ‖W_i‖_F²)^(1/d)) = log d + (2/d) Σ_i log ‖W_i‖_F, d layers")
def frobenius_sum(ctx: Context) -> float:
    d = depth(ctx)
    return math.log(d) + 2.0 / d * log_frobenius(ctx)


@measure("param-norm", family="norm", needs=("weights",), direction=1, cost="instant",
         reference="Jiang et al. 2020, parameter norm",
         formula="‖w‖² over all parameters, biases included, batch norm folded")
def param_norm(ctx: Context) -> float:
    return sum(float(p.detach().double().pow(2).sum()) for p in ctx.model.parameters())


SVD_LIMIT = 512  # matrices with both sides above this get power iteration instead of a full SVD
POWER_TOL = 1e-7  # power iteration stops when σ changes by less than this, relatively, in one step
POWER_MAX_ITERATIONS = 2000


def top_singular_value(matrix: torch.Tensor, tol: float = POWER_TOL, max_iterations: int = POWER_MAX_ITERATIONS,
                       seed: int = 0) -> float:
    """‖A‖_2: exact (SVD) for small matrices, else power iteration on AᵀA from a seeded start, stopped when
    σ changes by less than `tol` relatively (it approaches σ_max from below)."""
    a = matrix.detach()
    if min(a.shape) <= SVD_LIMIT:
        return float(torch.linalg.matrix_norm(a.double(), ord=2))
    generator = torch.Generator().manual_seed(seed)
    v = torch.randn(a.shape[1], generator=generator, dtype=a.dtype).to(a.device)
    v /= v.norm()
    sigma = 0.0
    for _ in range(max_iterations):
        u = a @ v
        previous, sigma = sigma, float(u.double().norm())
        v = a.T @ u
        v /= v.norm()
        if abs(sigma - previous) <= tol * sigma:
            break
    return sigma


def spectral_norms(ctx: Context) -> list[float]:
    return ctx.cached("spectral-norms", lambda: [top_singular_value(as_matrix(w)) for w in weights(ctx.model)])


@measure("spectral-sum", family="spectral", needs=("weights",), direction=1, cost="instant", log=True,
         invariant=True, reference="Jiang et al. 2020, sum-of-spec (depth-normalized spectral product)",
         formula="log d + (2/d) Σ_i log ‖W_i‖_2, conv W_i reshaped")
def spectral_sum(ctx: Context) -> float:
    d = depth(ctx)
    return math.log(d) + 2.0 / d * sum(math.log(s) for s in spectral_norms(ctx))


@measure("spectral-init", family="spectral", needs=("weights", "init"), direction=1, cost="instant", log=True,
         reference="Jiang et al. 2020, dist-spec-init",
         formula="Σ_i log ‖W_i − W_i⁰‖_2, conv W_i reshaped")
def spectral_init(ctx: Context) -> float:
    norms = [float(torch.linalg.matrix_norm(as_matrix(w.double() - w0.double()), ord=2))
             for w, w0 in zip(weights(ctx.model), init_weights(ctx))]
    if min(norms) == 0.0:
        raise Undefined(f"layer {norms.index(0.0)}'s weights equal their initialization (log 0)")
    return sum(math.log(n) for n in norms)


@measure("stable-rank", family="spectral", needs=("weights",), direction=1, cost="instant", invariant=True,
         reference="Jiang et al. 2020, fro/spec; Sanyal et al. 2020 (stable rank)",
         formula="Σ_i ‖W_i‖_F² / ‖W_i‖_2², conv W_i reshaped")
def stable_rank(ctx: Context) -> float:
    return sum(float(w.double().pow(2).sum()) / s ** 2 for w, s in zip(weights(ctx.model), spectral_norms(ctx)))


def bartlett_log(ctx: Context) -> float:
    """log of Π‖W_i‖_2 · (Σ_i ‖W_iᵀ − W_i⁰ᵀ‖_{2,1}^{2/3} / ‖W_i‖_2^{2/3})^{3/2}."""
    total = 0.0
    for w, w0, s in zip(weights(ctx.model), init_weights(ctx), spectral_norms(ctx)):
        # ‖Aᵀ‖_{2,1}: the sum of the ℓ2 norms of the columns of Aᵀ, i.e. of the rows of A (out × in)
        two_one = float(as_matrix(w.double() - w0.double()).norm(dim=1).sum())
        total += (two_one / s) ** (2.0 / 3.0)
    if total == 0:
        raise Undefined("the weights equal their initialization")
    return sum(math.log(s) for s in spectral_norms(ctx)) + 1.5 * math.log(total)


@measure("bartlett", family="spectral", needs=("weights", "init"), direction=1, cost="instant", log=True,
         reference="Bartlett, Foster & Telgarsky 2017, spectral complexity R_A (ρ_i = 1)",
         formula="log[Π_i ‖W_i‖_2 · (Σ_i ‖W_iᵀ − W_i⁰ᵀ‖_{2,1}^{2/3} / ‖W_i‖_2^{2/3})^{3/2}], conv W_i reshaped")
def bartlett(ctx: Context) -> float:
    return bartlett_log(ctx)


@measure("path-l1", family="path", needs=("weights", "train"), direction=1, cost="instant", invariant=True,
         reference="Neyshabur et al. 2015, Norm-based capacity control (ℓ1 path norm)",
         formula="Σ_paths Π_i |w_i|: one forward pass of an all-ones input with |W|, no biases")
def path_l1(ctx: Context) -> float:
    return path_norm(ctx, 1)


def layer_input_shapes(ctx: Context) -> dict[str, tuple[int, ...]]:
    """The input shape of every linear and conv layer, from one forward pass of one train example."""
    def make() -> dict[str, tuple[int, ...]]:
        x, _ = ctx.require_train()
        shapes: dict[str, tuple[int, ...]] = {}

        def recorder(name: str) -> Callable[..., None]:
            def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
                shapes.setdefault(name, tuple(inputs[0].shape[1:]))
            return hook

        hooks = [module.register_forward_hook(recorder(name)) for name, module in weight_layers(ctx.model)]
        try:
            with torch.no_grad():
                ctx.model(x[:1])
        finally:
            for hook in hooks:
                hook.remove()
        return shapes
    return ctx.cached("layer-input-shapes", make)


def conv_operator_norm(layer: nn.Module, input_shape: tuple[int, ...], tol: float, seed: int) -> float:
    """‖A‖_2 of the linear map x ↦ conv(x) (no bias) at this input shape, stride, padding and dilation:
    Lanczos (scipy svds) with the conv as matvec and its exact adjoint (a vector-Jacobian product) as rmatvec."""
    weight = layer.weight.detach().double()

    def forward(v: torch.Tensor) -> torch.Tensor:
        return layer._conv_forward(v, weight, None)  # the layer's own padding mode, stride, dilation, groups

    probe = torch.zeros((1, *input_shape), dtype=torch.float64, device=weight.device)
    out_shape = forward(probe).shape
    _, pullback = torch.func.vjp(forward, probe)  # linear map: its adjoint does not depend on the point

    def matvec(v: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64).reshape(probe.shape)).to(weight.device)
        return forward(t).reshape(-1).cpu().numpy()

    def rmatvec(u: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(u, dtype=np.float64).reshape(out_shape)).to(weight.device)
        return pullback(t)[0].reshape(-1).cpu().numpy()

    n_in, n_out = probe.numel(), math.prod(out_shape)
    if min(n_in, n_out) <= 3:  # ARPACK needs k < min(shape); such maps are tiny, so go dense
        dense = np.stack([matvec(e) for e in np.eye(n_in)], axis=1)
        return float(np.linalg.norm(dense, 2))
    operator = LinearOperator((n_out, n_in), matvec=matvec, rmatvec=rmatvec, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(min(n_in, n_out))
    return float(svds(operator, k=1, tol=tol, v0=v0, return_singular_vectors=False).max())


@measure("spectral-operator", family="spectral", needs=("weights", "train"), direction=1, cost="pass", log=True,
         invariant=True, settings={"tol": 1e-6, "seed": 0},
         reference="Sedghi et al. 2019 (conv singular values); Bartlett et al. 2017",
         formula="Σ_i log ‖A_i‖_2, conv layers by their true operator norm at the layer's input size, stride "
                 "and padding (Lanczos on the conv and its adjoint), linear layers exactly")
def spectral_operator(ctx: Context, tol: float, seed: int) -> float:
    shapes = layer_input_shapes(ctx)
    total = 0.0
    for name, layer in weight_layers(ctx.model):
        if isinstance(layer, nn.Linear):
            total += math.log(float(torch.linalg.matrix_norm(layer.weight.detach().double(), ord=2)))
        else:
            total += math.log(conv_operator_norm(layer, shapes[name], tol, seed))
    return total
