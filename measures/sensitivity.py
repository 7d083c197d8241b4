"""Sensitivity of the learned function to its input."""

from __future__ import annotations

import torch
from torch.func import jacrev, vmap

from measures import Context, check_memory, measure
from measures.functional import subset


@measure("jacobian-norm", family="sensitivity", needs=("weights", "train"), direction=1, cost="pass",
         invariant=True, settings={"samples": 1000, "seed": 0, "chunk": 256},
         reference="Novak et al. 2018, Sensitivity and generalization in neural networks",
         formula="mean over train points of ‖∂f(x)/∂x‖_F, the input–output Jacobian of the logits")
def jacobian_norm(ctx: Context, samples: int, seed: int, chunk: int) -> float:
    x, _ = subset(*ctx.require_train(), samples, seed)
    classes = ctx.logits().shape[1]
    check_memory("jacobian-norm", 4 * chunk * classes * x[0].numel() * 3, ctx.device,
                 "lower --set jacobian-norm.chunk=")

    def single(example: torch.Tensor) -> torch.Tensor:
        return ctx.model(example.unsqueeze(0)).squeeze(0)

    norms = []
    for start in range(0, len(x), chunk):
        jac = vmap(jacrev(single))(x[start:start + chunk])
        norms.append(jac.detach().reshape(jac.shape[0], -1).double().norm(dim=1))
    return float(torch.cat(norms).mean())
