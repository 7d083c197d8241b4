"""zᵀ∇²L z for an MLP by second-order forward (Taylor) propagation, without a Hessian-vector product.

For a stack of Linear, ReLU and shape-only layers, L(θ + tz) = L₀ + t L₁ + t² L₂ + … is propagated forward in
coefficients (h₀, h₁, h₂) per layer, and zᵀ∇²L z = 2 L₂. A linear layer (W + tZ)(h₀ + t h₁ + t² h₂) + b + t z_b
costs four products with the weight per probe once h₀ is cached (W h₁, Z h₀, W h₂, Z h₁), where a Hessian-vector
product by double backward costs six; ReLU is the mask of h₀ > 0 (autograd's convention; its second derivative is
zero almost everywhere); the mean cross-entropy's coefficient is (1/N) Σ (p − y)·z₂ + ½ z₁ᵀ(diag p − ppᵀ) z₁.
Exact arithmetic gives the same number as zᵀ(Hz); only rounding differs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from measures.functional import Params

SHAPE_ONLY = (nn.Flatten, nn.Identity, nn.Dropout)  # Dropout: models are measured in eval mode


def supported(model: nn.Module) -> bool:
    """An nn.Sequential of Linear, ReLU, Flatten, Identity and (eval-mode) Dropout layers, nothing else."""
    return (isinstance(model, nn.Sequential) and not model.training and len(model) > 0
            and all(isinstance(m, (nn.Linear, nn.ReLU, *SHAPE_ONLY)) and not list(m.children()) for m in model)
            and not list(model.buffers()))


class TaylorQuadratic:
    """quadratic(V) = the k numbers v_iᵀ ∇²L v_i (float64) of the mean cross-entropy on (x, y) at params."""

    def __init__(self, model: nn.Sequential, params: Params, x: torch.Tensor, y: torch.Tensor) -> None:
        self.layers: list[tuple[str, nn.Module, torch.Tensor]] = []  # (module name, module, its input h₀)
        self.names = list(params)
        self.sizes = [p.numel() for p in params.values()]
        self.params = params
        h = x
        with torch.no_grad():
            for name, module in model.named_children():
                self.layers.append((name, module, h))
                if isinstance(module, nn.Linear):
                    w = params[f"{name}.weight"]
                    b = params.get(f"{name}.bias")
                    h = F.linear(h, w, b)
                else:
                    h = module(h)
            self.p = torch.softmax(h.float(), dim=1)
            self.residual = self.p - F.one_hot(y, self.p.shape[1]).to(self.p.dtype)

    def one(self, v: torch.Tensor) -> torch.Tensor:
        z = dict(zip(self.names, torch.split(v, self.sizes)))
        h1 = h2 = None  # the input does not move with θ
        with torch.no_grad():
            for name, module, h0 in self.layers:
                if isinstance(module, nn.Linear):
                    w = self.params[f"{name}.weight"]
                    zw = z[f"{name}.weight"].view_as(w)
                    zb = z.get(f"{name}.bias")
                    new1 = F.linear(h0, zw, zb)
                    if h1 is not None:
                        new1 = new1 + h1 @ w.T
                    h2 = None if h1 is None else (h1 @ zw.T if h2 is None else h2 @ w.T + h1 @ zw.T)
                    h1 = new1
                elif isinstance(module, nn.ReLU):  # h₀ is the ReLU's input
                    positive = h0 > 0
                    h1 = h1 * positive if h1 is not None else None
                    h2 = h2 * positive if h2 is not None else None
                else:
                    h1 = module(h1) if h1 is not None else None
                    h2 = module(h2) if h2 is not None else None
            z1 = h1.double()
            p = self.p.double()
            second = (p * z1 * z1).sum() - ((p * z1).sum(dim=1) ** 2).sum()
            first = 0.0 if h2 is None else 2 * (self.residual.double() * h2.double()).sum()
        return (first + second) / len(p)

    def quadratic(self, vs: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.as_tensor(self.one(v), dtype=torch.float64) for v in vs])
