"""Counts, norms, spectral and path norms of the weights (linear and conv layers, biases excluded)."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from measures import Context, Undefined, measure
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
    return sum(math.log(float(torch.linalg.matrix_norm(as_matrix(w).double(), ord=2)))
               for w in weights(ctx.model))


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
