"""Plain MLPs of a group on the CPU, one run after another, through oneDNN's fp32 products.

PyTorch's CPU matmul is MKL's, and MKL takes its AVX2 code on AMD processors: on the Zen 5 EPYC of
docs/benchmarks.md a 1024³ fp32 product runs at 190-225 GFLOP/s through torch.matmul and at 460-500 through
oneDNN (the library PyTorch ships for its fused CPU kernels, reached through the `mkldnn::_linear_pointwise`
op that torch.compile uses for CPU linears). On Intel processors MKL takes its AVX-512 code, and the two
should be about equal there (not measured yet). This module makes
each run's products 2-D oneDNN linears (bias and ReLU fused) and the group trains run-major: a run's whole
epoch, then the next run's, so that its weights and momenta stay in cache between steps.

Every run computes on its own tensors only, so its arithmetic never depends on its group. The batched
trainer takes this path by a fixed rule (`applies`: the CPU, oneDNN present, and a model of at least
PER_RUN_MACS multiply-adds per example); smaller MLPs keep the stacked batched products
(audit/train/stacked_mlp.py), where one product over many runs amortizes the per-call cost. The per-epoch
evaluation's chunks are twice a minibatch, so its forward passes go run by run from a smaller size on
(`evaluates`, EVAL_PER_RUN_MACS): the quick grid's digits MLP trains stacked and is evaluated run by run.
"""

from __future__ import annotations

import functools

import torch

from audit.train.stacked_mlp import Layers

PER_RUN_MACS = 1 << 18  # multiply-adds per example from which run-by-run oneDNN products beat stacked ones
# (mlp-1x512 on 28×28 images: 406k, 1.7× faster a step; on 8×8 digits, 38k, and 16×16, 136k: 0.9×)
EVAL_PER_RUN_MACS = 1 << 15  # the same for the per-epoch evaluation, whose chunks are twice a minibatch: from
# mlp-1x512 on digits (38k, 1.33× faster; 1x256, 19k: 0.95×; 1x128: 0.73×; 784-128-10: 1.5×)


@functools.cache
def available() -> bool:
    """Whether this PyTorch has oneDNN's fused linear op on the CPU."""
    try:
        return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._linear_pointwise.default is not None
    except (AttributeError, RuntimeError):
        return False


def applies(layers: Layers, device: torch.device) -> bool:
    """The rule: run-by-run oneDNN products for a plain MLP on the CPU of at least PER_RUN_MACS multiply-adds
    per example. It reads the device and the layer shapes only, never a timing."""
    return device.type == "cpu" and _macs(layers) >= PER_RUN_MACS and available()


def evaluates(layers: Layers, device: torch.device) -> bool:
    """The rule of the per-epoch evaluation: run-by-run oneDNN forward passes from EVAL_PER_RUN_MACS on."""
    return device.type == "cpu" and _macs(layers) >= EVAL_PER_RUN_MACS and available()


def _macs(layers: Layers) -> int:
    return sum(weight.shape[-1] * weight.shape[-2] for weight, _ in layers)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, relu: bool = False) -> torch.Tensor:
    """x @ weightᵀ + bias (ReLU after it if asked), 2-D, through oneDNN; weight may be a transposed view."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "relu" if relu else "none", [], "")


def forward_one(layers: Layers, x: torch.Tensor) -> torch.Tensor:
    """Logits (batch, classes) of one run's layers (weight (out, in), bias (out,)) on x (batch, ...)."""
    out = x.flatten(1)
    for number, (weight, bias) in enumerate(layers):
        out = linear(out, weight, bias, relu=number < len(layers) - 1)
    return out


def forward(layers: Layers, x: torch.Tensor) -> torch.Tensor:
    """stacked_mlp.forward run by run: logits (runs, batch, classes) of stacked layers on x (runs, batch, ...)."""
    return torch.stack([forward_one([(weight[run], bias[run]) for weight, bias in layers], x[run])
                        for run in range(x.shape[0])])


def sgd_step(layers: Layers, momenta: Layers, x: torch.Tensor, y: torch.Tensor, lr: float, momentum: float,
             weight_decay: float) -> torch.Tensor:
    """One SGD step of one run (layers and momenta 2-D, x (batch, ...), y (batch,)) under the mean
    cross-entropy, in place, as stacked_mlp.sgd_step does for a group; returns the minibatch loss (a 0-d
    tensor). PyTorch's SGD: d = g + λw; b = μb + d; w = w − ηb."""
    with torch.no_grad():
        inputs = [x.flatten(1)]
        for weight, bias in layers[:-1]:
            inputs.append(linear(inputs[-1], weight, bias, relu=True))
        logits = linear(inputs[-1], *layers[-1])
        log_norm = torch.logsumexp(logits, dim=1, keepdim=True)
        loss = (log_norm - logits.gather(1, y.unsqueeze(1))).mean()
        delta = (logits - log_norm).exp_()  # softmax − one-hot, over the batch size: ∂ mean loss / ∂ logits
        delta.scatter_add_(1, y.unsqueeze(1), torch.full_like(delta[:, :1], -1.0)).div_(x.shape[0])
        for number in reversed(range(len(layers))):
            weight, bias = layers[number]
            weight_m, bias_m = momenta[number]
            before = inputs[number]
            if number > 0:  # the gradient reaching the layer below, before this layer's weights move
                below = torch.ops.aten.threshold_backward(linear(delta, weight.t(), None), before, 0)
            for param, buffer, gradient in ((weight, weight_m, linear(delta.t(), before.t(), None)),
                                            (bias, bias_m, delta.sum(0))):
                if momentum:
                    torch.add(gradient, buffer, alpha=momentum, out=buffer)
                else:  # SGD without momentum ignores the buffer's old content
                    buffer.copy_(gradient)
                if weight_decay:
                    buffer.add_(param, alpha=weight_decay)
                param.add_(buffer, alpha=-lr)
            if number > 0:
                delta = below
    return loss


def epoch(layers: Layers, momenta: Layers, x: torch.Tensor, y: torch.Tensor, order: torch.Tensor, batch_size: int,
          lr: float, momentum: float, weight_decay: float) -> float:
    """One run's epoch: sgd_step on the minibatches of `order` (a permutation of its examples) of its inputs x
    (examples, ...) and labels y (examples,); returns the sum of its minibatch losses, added in float32 in
    step order as the stacked trainer adds them."""
    total = torch.zeros((), device=x.device)
    for first in range(0, len(order), batch_size):
        rows = order[first:first + batch_size]
        total += sgd_step(layers, momenta, x.index_select(0, rows), y[rows], lr, momentum, weight_decay)
    return total.item()
