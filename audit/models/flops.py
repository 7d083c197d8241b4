"""Floating-point work of a model and of the machine: the denominators of the speed benchmarks.

Forward FLOPs = 2 × the multiply-adds of the linear and conv layers (other layers are not counted);
training FLOPs = 3 × forward FLOPs (the backward pass costs about twice the forward).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn


def forward_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """2 × multiply-adds of one example's forward pass through the linear and conv layers."""
    macs = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(module, nn.Linear):
            macs += module.in_features * module.out_features
        else:  # convolution: every output element is a dot product over in/groups × kernel
            kernel = module.weight.shape[1] * int(torch.tensor(module.weight.shape[2:]).prod())
            macs += output[0].numel() * kernel

    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    hooks = [m.register_forward_hook(hook) for m in layers]
    was_training = model.training
    try:
        model.eval()
        device = next(model.parameters()).device
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), device=device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return 2 * macs


def training_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    return 3 * forward_flops(model, input_shape)


def matmul_rate(size: int = 1024, device: str = "cpu", dtype: torch.dtype = torch.float32,
                repeats: int = 10, product: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = torch.matmul
                ) -> float:
    """FLOP/s of a size³ matrix product at the current thread count (best of `repeats`), through torch.matmul
    or another `product` of two square matrices (bench/train.py passes oneDNN's)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 2):
        if device != "cpu":
            torch.cuda.synchronize()
        start = time.perf_counter()
        product(a, b)
        if device != "cpu":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best
