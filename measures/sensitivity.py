"""Sensitivity of the learned function to its input."""

from __future__ import annotations

import torch

from audit.resources import check_memory
from measures._registry import Context, measure
from measures.functional import subset


def input_jacobian_norms(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """‖∂f(x_i)/∂x_i‖_F for every example: one backward pass per output class over the whole batch (examples
    do not interact in eval mode, so the gradient of Σ_i f_k(x_i) holds each example's own row k)."""
    inputs = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        outputs = model(inputs).float()
        squares = torch.zeros(len(x), dtype=torch.float64, device=x.device)
        for k in range(outputs.shape[1]):
            (row,) = torch.autograd.grad(outputs[:, k].sum(), inputs, retain_graph=k + 1 < outputs.shape[1])
            squares += row.reshape(len(x), -1).double().pow(2).sum(1)
    return squares.sqrt()


@measure("jacobian-norm", family="sensitivity", needs=("weights", "train"), direction=1, cost="pass",
         invariant=True, settings={"samples": 1000, "seed": 0, "chunk": 1000},
         reference="Novak et al. 2018, Sensitivity and generalization in neural networks",
         formula="mean over train points of ‖∂f(x)/∂x‖_F, the input–output Jacobian of the logits")
def jacobian_norm(ctx: Context, samples: int, seed: int, chunk: int) -> float:
    x, _ = subset(*ctx.require_train(), samples, seed)
    classes = ctx.logits().shape[1]
    check_memory("jacobian-norm", 4 * chunk * (classes + 4) * x[0].numel() * 4, ctx.device,
                 "lower --set jacobian-norm.chunk=")
    norms = [input_jacobian_norms(ctx.model, x[start:start + chunk]) for start in range(0, len(x), chunk)]
    return float(torch.cat(norms).mean())
