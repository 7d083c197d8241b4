"""Information-geometric measures: the Fisher–Rao norm."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from measures._registry import Context, measure
from measures.functional import subset


def per_example_directional_derivatives(ctx: Context, x: torch.Tensor, y: torch.Tensor,
                                        chunk: int = 4096) -> torch.Tensor:
    """⟨w, ∇_w ℓ(f_w(x_i), y_i)⟩ for every example i: the Jacobian of the per-example losses applied to w,
    by the double-backward trick (J w = ∂/∂v ⟨Jᵀv, w⟩), two reverse passes instead of forward-mode AD."""
    parameters = list(ctx.model.parameters())
    out = []
    for start in range(0, len(x), chunk):
        with torch.enable_grad():
            losses = F.cross_entropy(ctx.model(x[start:start + chunk]).float(), y[start:start + chunk],
                                     reduction="none")
            v = torch.zeros_like(losses, requires_grad=True)
            # Jᵀv as the gradient of the scalar ⟨ℓ, v⟩: the same graph as grad_outputs=v, without torch's
            # import of sympy (1 s) that a tensor grad_outputs triggers
            grads = torch.autograd.grad((losses * v).sum(), parameters, create_graph=True)
            inner = sum((g * p.detach()).sum() for g, p in zip(grads, parameters))
            (directional,) = torch.autograd.grad(inner, v)
        out.append(directional.detach())
    return torch.cat(out)


@measure("fisher-rao", family="information", needs=("weights", "train"), direction=1, cost="pass", invariant=True,
         settings={"samples": 0, "seed": 0},
         reference="Liang, Poggio, Rakhlin & Stokes 2019, Fisher–Rao metric, geometry and complexity",
         formula="mean over the fitted train set of ⟨w, ∇_w ℓ(f_w(x), y)⟩², w all parameters, y the fitted labels")
def fisher_rao(ctx: Context, samples: int, seed: int) -> float:
    x, y = subset(*ctx.require_train(), samples, seed)
    return float(per_example_directional_derivatives(ctx, x, y).double().pow(2).mean())
