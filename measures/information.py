"""Information-geometric measures: the Fisher–Rao norm."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call, jvp

from measures import Context, measure
from measures.functional import buffers_of, params_of, subset


def per_example_directional_derivatives(ctx: Context, x: torch.Tensor, y: torch.Tensor,
                                        chunk: int = 1024) -> torch.Tensor:
    """⟨w, ∇_w ℓ(f_w(x_i), y_i)⟩ for every example: one forward-mode pass along the direction w itself."""
    params, buffers = params_of(ctx.model), buffers_of(ctx.model)
    out = []
    for start in range(0, len(x), chunk):
        xb, yb = x[start:start + chunk], y[start:start + chunk]

        def losses(p: dict[str, torch.Tensor]) -> torch.Tensor:
            return F.cross_entropy(functional_call(ctx.model, (p, buffers), (xb,)).float(), yb, reduction="none")

        out.append(jvp(losses, (params,), (params,))[1].detach())
    return torch.cat(out)


@measure("fisher-rao", family="information", needs=("weights", "train"), direction=1, cost="pass", invariant=True,
         settings={"samples": 0, "seed": 0},
         reference="Liang, Poggio, Rakhlin & Stokes 2019, Fisher–Rao metric, geometry and complexity",
         formula="mean over the fitted train set of ⟨w, ∇_w ℓ(f_w(x), y)⟩², w all parameters, y the fitted labels")
def fisher_rao(ctx: Context, samples: int, seed: int) -> float:
    x, y = subset(*ctx.require_train(), samples, seed)
    return float(per_example_directional_derivatives(ctx, x, y).double().pow(2).mean())
