"""Measures read off the training run itself."""

from __future__ import annotations

import math

import torch

from measures._registry import Context, Undefined, measure


def run_attr(ctx: Context, key: str) -> float:
    if ctx.record is None:
        raise Undefined("needs the run's history: score it through a store")
    value = ctx.record.attrs.get(key)
    if value is None:
        raise Undefined(f"the run has no {key.replace('_', ' ')} (it never fitted)")
    return float(value)


@measure("steps-to-fit", family="optimization", needs=("history",), direction=1, cost="instant",
         reference="Zhang et al. 2017, Figure 1b (time to overfit)",
         formula="SGD steps until the whole fitted train set reached the fit target accuracy (eval mode)")
def steps_to_fit(ctx: Context) -> float:
    return run_attr(ctx, "steps_to_fit")


@measure("first-epoch-loss", family="optimization", needs=("history",), direction=1, cost="instant",
         reference="Jiang et al. 2020 (sum of training losses over the first epoch); Ru et al. 2021",
         formula="sum of the minibatch training losses over the first epoch, recorded during training")
def first_epoch_loss(ctx: Context) -> float:
    return run_attr(ctx, "first_epoch_loss_sum")


@measure("grad-noise", family="optimization", needs=("weights", "train", "procedure"), direction=1, cost="pass",
         log=True, settings={"batch_size": 0, "batches": 16, "seed": 0},
         reference="Jiang et al. 2020 (gradient noise at the end of training); Jastrzębski et al. 2018",
         formula="log mean_B ‖g_B − g‖² at the final weights: g the full-batch train gradient, g_B minibatch "
                 "gradients at the run's batch size (batch_size 0), `batches` seeded draws")
def grad_noise(ctx: Context, batch_size: int, batches: int, seed: int) -> float:
    x, y = ctx.require_train()
    size = batch_size or (ctx.spec.batch_size if ctx.spec is not None else 128)
    parameters = [p for p in ctx.model.parameters()]

    def gradient(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            loss = torch.nn.functional.cross_entropy(ctx.model(xb).float(), yb)
            grads = torch.autograd.grad(loss, parameters)
        return torch.cat([g.reshape(-1) for g in grads]).double()

    full = gradient(x, y)
    generator = torch.Generator().manual_seed(seed)
    total = 0.0
    for _ in range(batches):
        index = torch.randperm(len(x), generator=generator)[:size].to(x.device)
        total += float((gradient(x[index], y[index]) - full).pow(2).sum())
    if total <= 0:
        raise Undefined("every minibatch gradient equals the full gradient")
    return math.log(total / batches)
