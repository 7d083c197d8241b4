"""Curvature of the train loss at the final weights: top eigenvalue and trace of the Hessian.

The Hessian is of the mean cross-entropy on a seeded subset of the fitted train set with respect to all
parameters (weights and biases), used only through Hessian-vector products: one backward pass each through a
gradient graph built once (measures/hvp.py; torch.func forward-over-reverse where an op has no double backward).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from audit.resources import check_memory
from measures._registry import Context, Undefined, keep_detail, measure
from measures.functional import Params, params_of, subset
from measures.hvp import STEPS, HessianProducts, NoConvergence, basis_bytes, lanczos_top
from measures.taylor import TaylorQuadratic, supported

TOP = {"samples": 2048, "seed": 0, "tol": 1e-3, "maxiter": 100}
TRACE = {"samples": 2048, "seed": 0, "probes": 64, "chunk": 8}
REFERENCE_TOP = "Keskar et al. 2017 (sharp minima); Yao et al. 2020, PyHessian; Jiang et al. 2020"
REFERENCE_TRACE = "Hutchinson 1990; Yao et al. 2020, PyHessian (Hessian trace)"


def activations_per_example(model: nn.Module, x: torch.Tensor) -> int:
    """Elements of every leaf module's output (and the input) for one example."""
    sizes = [x[:1].numel()]

    def hook(_module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            sizes.append(output.numel())

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for handle in handles:
            handle.remove()
    return sum(sizes)


def hvp_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """A rough bound on the device memory of one HVP over x.

    loss_at sums its chunks before the gradient, so the activations of all of x are held at once; forward-over-
    reverse keeps primal and tangent of each saved activation and of its gradient (≈ 4×, 6 for slack). The
    parameters, their gradient, tangents and products are held a few times over (10 × 8 bytes each).
    """
    element = next(model.parameters()).element_size()
    n_params = sum(p.numel() for p in model.parameters())
    return n_params * 8 * 10 + 6 * activations_per_example(model, x) * len(x) * element


def hessian_setup(ctx: Context, name: str, samples: int, seed: int, copies: int = 1, extra: int = 0,
                  hint: str = "") -> tuple[Params, torch.Tensor, torch.Tensor]:
    """The parameters and the seeded subset, after checking memory for `copies` HVPs at once and `extra` bytes."""
    x, y = ctx.require_train()
    x, y = subset(x, y, samples, seed)
    check_memory(name, hvp_bytes(ctx.model, x) * copies + extra, ctx.device,
                 f"lower --set {name}.samples= (now {len(x)} train examples){hint}")
    params = params_of(ctx.model)
    return params, x, y


def stacked(vectors: torch.Tensor, like: Params) -> Params:
    """Rows of a (k, n) matrix as k stacked parameter dicts: each entry has a leading axis k."""
    out, start = {}, 0
    for name, p in like.items():
        out[name] = vectors[:, start:start + p.numel()].reshape(len(vectors), *p.shape)
        start += p.numel()
    return out


@measure("hessian-top", family="curvature", needs=("weights", "train"), direction=1, cost="heavy", default=False,
         settings=TOP, reference=REFERENCE_TOP, version=2,
         formula="largest (algebraic) eigenvalue of ∇²_θ L(θ), L the mean train cross-entropy on `samples` seeded "
                 "train examples, θ all weights and biases; Lanczos with full reorthogonalization on Hessian-vector "
                 "products (one retained gradient graph), stopped after the first product at which the top Ritz "
                 "pair's residual is at most `tol` times the Ritz value, restarted from the top Ritz vector every "
                 f"{STEPS} products, at most `maxiter` restarts, v0 seeded")
def hessian_top(ctx: Context, samples: int, seed: int, tol: float, maxiter: int) -> float:
    like = next(ctx.model.parameters())
    n = sum(p.numel() for p in ctx.model.parameters())
    if n < 2:
        raise Undefined("Lanczos needs at least 2 parameters")
    dtype = torch.float32 if ctx.device.type == "mps" else torch.float64
    hessian = HessianProducts(ctx.model, *hessian_setup(ctx, "hessian-top", samples, seed, extra=basis_bytes(n, dtype)))
    v0 = torch.from_numpy(np.random.default_rng(seed).standard_normal(n)).to(device=like.device, dtype=dtype)
    try:
        value, products = lanczos_top(hessian.one, v0, tol, maxiter, noise=8 * torch.finfo(like.dtype).eps)
    except NoConvergence as why:
        raise Undefined(str(why)) from None
    keep_detail(ctx, "hessian-top", products=products)
    return value


@measure("hessian-trace", family="curvature", needs=("weights", "train"), direction=1, cost="heavy",
         default=False, settings=TRACE, reference=REFERENCE_TRACE, version=2,
         formula="tr ∇²_θ L(θ) ≈ (1/probes) Σ_k z_kᵀ ∇²L z_k, Hutchinson's estimator with a fixed number of "
                 "seeded Rademacher probes z_k (zᵀHz by second-order forward propagation for an MLP of Linear and "
                 "ReLU layers, else by HVPs on one retained gradient graph, on a GPU `chunk` probes per batched "
                 "backward); L the mean train cross-entropy on `samples` seeded train examples, θ all weights and "
                 "biases")
def hessian_trace(ctx: Context, samples: int, seed: int, probes: int, chunk: int) -> float:
    if probes < 1 or chunk < 1:
        raise Undefined("needs at least one probe and a chunk of at least one")
    chunk = min(chunk, probes)
    params, x, y = hessian_setup(ctx, "hessian-trace", samples, seed, copies=chunk,
                                 hint=f" or --set hessian-trace.chunk= (now {chunk})")
    # an MLP's zᵀHz by second-order forward propagation: 4 weight products per layer and probe instead of 6
    hessian = (TaylorQuadratic if supported(ctx.model) else HessianProducts)(ctx.model, params, x, y)
    like = next(iter(params.values()))
    n = sum(p.numel() for p in params.values())
    generator = torch.Generator().manual_seed(seed)
    values = []
    for start in range(0, probes, chunk):
        # one draw per probe, so the probes do not depend on the chunk size (drawn as floats: the same values)
        z = torch.empty(min(chunk, probes - start), n, dtype=like.dtype)
        for row in z:
            torch.randint(0, 2, (n,), generator=generator, dtype=like.dtype, out=row)
        z = z.mul_(2).sub_(1).to(like.device)
        values.append(hessian.quadratic(z).detach().cpu())
    values = torch.cat(values).numpy()
    # The estimate stops at a fixed number of probes; its standard error is kept for whoever reports it.
    stderr = float(values.std(ddof=1) / math.sqrt(probes)) if probes > 1 else math.nan
    ctx.cache["hessian-trace-stderr"] = stderr
    keep_detail(ctx, "hessian-trace", stderr=stderr, probe_values=values)
    return float(values.mean())
