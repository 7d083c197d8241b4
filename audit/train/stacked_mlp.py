"""Stacked plain MLPs: the forward and backward passes of many runs' MLPs as batched matrix products, with
PyTorch's SGD update fused into the backward pass.

A plain MLP is Flatten, then Linear and ReLU layers, ending in a Linear, every Linear with a bias (the
`mlp-DxW` models without dropout). Each run's layers are stacked along a leading run axis: weights
(runs, out, in), biases (runs, out). The SGD step writes each weight gradient straight into the momentum
buffer (m ← μm + aᵀδ in one `baddbmm_`), so no gradient tensors are allocated and the weights are streamed
three times per step instead of eight; on this project's CPUs that is 2-3× the throughput of vmapped
`functional_call` with autograd (docs/benchmarks.md). The result is PyTorch's SGD (d = g + λw; b = μb + d;
w = w − ηb) up to float rounding; tests/test_batched.py checks the gradients against autograd.
"""

from __future__ import annotations

import torch
from torch import nn

STEP_PART_BYTES = 1 << 21  # activations of one part of a CPU step: about the L2 caches of two cores (2 MiB)

Layers = list[tuple[torch.Tensor, torch.Tensor]]  # (weight (runs, out, in), bias (runs, out)) per Linear
PerRun = float | torch.Tensor  # a hyperparameter shared by every run (float) or one per run (tensor (runs,))


def linear_names(model: nn.Module) -> list[str] | None:
    """The module names of the Linear layers, in forward order, if the model is a plain MLP; else None."""
    if not isinstance(model, nn.Sequential):
        return None
    children = list(model.named_children())
    if not children or not isinstance(children[0][1], nn.Flatten):
        return None
    names = []
    for position, (name, module) in enumerate(children[1:], start=1):
        expect_linear = position % 2 == 1
        if expect_linear and isinstance(module, nn.Linear) and module.bias is not None:
            names.append(name)
        elif not expect_linear and type(module) is nn.ReLU:
            continue
        else:
            return None
    return names if len(children) % 2 == 0 else None  # ends in a Linear


def forward(layers: Layers, x: torch.Tensor) -> torch.Tensor:
    """Logits (runs, batch, classes) of every run on its own inputs x (runs, batch, ...)."""
    out = x.flatten(2)
    for number, (weight, bias) in enumerate(layers):
        out = torch.baddbmm(bias.unsqueeze(1), out, weight.mT)
        if number < len(layers) - 1:
            out = out.relu_()
    return out


def _scaled(value: PerRun, like: torch.Tensor) -> PerRun:
    """A per-run tensor shaped to broadcast over `like`'s run axis; a float as is."""
    return value.view((-1,) + (1,) * (like.dim() - 1)) if isinstance(value, torch.Tensor) else value


def sgd_step(layers: Layers, momenta: Layers, x: torch.Tensor, y: torch.Tensor, lr: PerRun, momentum: PerRun,
             weight_decay: PerRun) -> torch.Tensor:
    """One SGD step of every run on its minibatch (x (runs, batch, ...), y (runs, batch)) under the mean
    cross-entropy, in place; returns each run's minibatch loss (runs,)."""
    with torch.no_grad():
        inputs = [x.flatten(2)]
        for weight, bias in layers[:-1]:
            inputs.append(torch.baddbmm(bias.unsqueeze(1), inputs[-1], weight.mT).relu_())
        weight, bias = layers[-1]
        logits = torch.baddbmm(bias.unsqueeze(1), inputs[-1], weight.mT)
        log_norm = torch.logsumexp(logits, dim=2, keepdim=True)
        losses = (log_norm - logits.gather(2, y.unsqueeze(2))).mean((1, 2))
        delta = (logits - log_norm).exp_()  # softmax − one-hot, over the batch size: ∂ mean loss / ∂ logits
        delta.scatter_add_(2, y.unsqueeze(2), torch.full_like(delta[..., :1], -1.0)).div_(x.shape[1])
        for number in reversed(range(len(layers))):
            weight, bias = layers[number]
            weight_m, bias_m = momenta[number]
            before = inputs[number]
            if number > 0:  # the gradient reaching the layer below, before this layer's weights move
                below = torch.ops.aten.threshold_backward(torch.bmm(delta, weight), before, 0)
            _momentum(weight_m, weight, delta.mT, before, momentum, weight_decay)
            _momentum(bias_m, bias, delta.sum(1), None, momentum, weight_decay)
            for param, buffer in ((weight, weight_m), (bias, bias_m)):
                if isinstance(lr, torch.Tensor):
                    param.addcmul_(_scaled(lr, param), buffer, value=-1.0)
                else:
                    param.add_(buffer, alpha=-lr)
            if number > 0:
                delta = below
    return losses


def paired(items: list) -> list:
    """A lone run is computed as a pair of copies: a batched product of one matrix takes another code path
    (threaded inside the product) and rounds differently, and a run must not depend on its group."""
    return items if len(items) > 1 else items * 2


def runs_per_part(layers: Layers, batch: int, budget: int | None = None) -> int:
    """How many runs' activations (batch × the widest layer, fp32) fit in budget (default STEP_PART_BYTES),
    rounded down to a multiple of the thread count: a CPU batched product shares its matrices out among the
    threads, and an odd part on two threads left one idle for its last matrix (Fashion-MNIST steps in parts of
    5 runs: 0.66 of the matmul rate; of 4 or 6: 0.76-0.79). At least 2 and at least the thread count."""
    widest = max(max(weight.shape[-2], weight.shape[-1]) for weight, _ in layers)
    threads = max(1, torch.get_num_threads())
    fits = (budget or STEP_PART_BYTES) // (batch * widest * 4)
    return max(2, threads, fits // threads * threads)


def parts(runs: int, part: int) -> list[tuple[int, int]]:
    """Consecutive (first, last + 1) of `part` runs each, a last run never alone (it joins the part before it:
    a batched product of one matrix takes another code path and rounds differently)."""
    cuts = list(range(0, runs, part))
    if len(cuts) > 1 and runs - cuts[-1] < 2:
        cuts.pop()
    return list(zip(cuts, cuts[1:] + [runs]))


def sgd_step_in_parts(layers: Layers, momenta: Layers, x: torch.Tensor, y: torch.Tensor, lr: PerRun,
                      momentum: PerRun, weight_decay: PerRun, part: int) -> torch.Tensor:
    """sgd_step on consecutive parts of `part` runs (a last run never alone: it joins the part before it, as a
    product of one matrix rounds otherwise), so that each part's activations stay in cache: on small inputs a
    step is bound by the passes over its activations, and this is 1.5× faster there (docs/benchmarks.md).
    Bitwise sgd_step on all the runs at once: every run's products, passes and reductions are its own."""
    pieces = parts(x.shape[0], part)
    if len(pieces) == 1:
        return sgd_step(layers, momenta, x, y, lr, momentum, weight_decay)

    def pick(value: PerRun, a: int, b: int) -> PerRun:
        return value[a:b] if isinstance(value, torch.Tensor) else value

    losses = [sgd_step([(w[a:b], c[a:b]) for w, c in layers], [(w[a:b], c[a:b]) for w, c in momenta], x[a:b],
                       y[a:b], pick(lr, a, b), pick(momentum, a, b), pick(weight_decay, a, b))
              for a, b in pieces]
    return torch.cat(losses)


def _momentum(buffer: torch.Tensor, param: torch.Tensor, left: torch.Tensor, right: torch.Tensor | None,
              momentum: PerRun, weight_decay: PerRun) -> None:
    """buffer ← μ·buffer + g + λ·param, with g = left @ right (a weight) or g = left (a bias)."""
    if isinstance(momentum, torch.Tensor):
        buffer.mul_(_scaled(momentum, buffer))
        beta = 1.0
    else:
        beta = momentum  # beta 0 ignores the buffer's old content, as SGD without momentum does
    if right is not None:
        buffer.baddbmm_(left, right, beta=beta)
    elif beta == 0:
        buffer.copy_(left)
    else:
        buffer.mul_(beta).add_(left)
    if isinstance(weight_decay, torch.Tensor):
        buffer.addcmul_(_scaled(weight_decay, param), param)
    elif weight_decay:
        buffer.add_(param, alpha=weight_decay)
