"""Hessian measures against the dense Hessian of a tiny MLP (torch.autograd.functional.hessian, numpy eigvalsh)."""

import numpy as np
import pytest
import torch
from torch import nn

import measures
from audit import resources
from measures.functional import flat, loss_at, params_of, unflat


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # tensors this small only pay for thread synchronisation, which on a shared machine costs ~30× per HVP
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3)).eval()  # 57 parameters
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(40, 5, generator=generator)
    y = torch.randint(0, 3, (40,), generator=generator)
    params = params_of(model)
    dense = torch.autograd.functional.hessian(lambda v: loss_at(model, unflat(v, params), x, y), flat(params))
    return model, x, y, dense.double().numpy()


def context(tiny):
    model, x, y, _ = tiny
    return measures.Context(model=model, x=x, y=y)


def test_hessian_top_is_the_largest_eigenvalue(tiny):
    hessian = tiny[3]
    assert hessian.shape == (57, 57)
    result = measures.evaluate(context(tiny), "hessian-top")
    assert result.value == pytest.approx(np.linalg.eigvalsh(hessian).max(), rel=1e-4)


def test_hessian_trace_is_within_three_standard_errors(tiny):
    exact = np.trace(tiny[3])
    ctx = context(tiny)
    estimate = measures.evaluate(ctx, "hessian-trace", {"probes": 2000, "chunk": 250}).value
    stderr = ctx.cache["hessian-trace-stderr"]
    assert 0 < stderr and abs(estimate - exact) <= 3 * stderr
    assert estimate == pytest.approx(exact, rel=0.05)


def test_hessian_trace_is_deterministic_for_a_seed(tiny):
    def run(seed, chunk=4):
        return measures.evaluate(context(tiny), "hessian-trace", {"probes": 6, "seed": seed, "chunk": chunk}).value

    assert run(3) == run(3)
    assert run(3) != run(4)
    assert run(3, chunk=1) == pytest.approx(run(3), rel=1e-6)  # the probes do not depend on the chunk


def test_too_little_memory_is_refused(tiny, monkeypatch):
    monkeypatch.setattr(resources, "available_bytes", lambda device: 1)
    for name in ("hessian-top", "hessian-trace"):
        with pytest.raises(resources.TooLarge, match="samples"):
            measures.evaluate(context(tiny), name)


class Quadratic(nn.Module):
    """Logits (q, 0) with q = Σ_i x_i w_i²: the Hessian in w is ≈ −diag(E[x]) plus a small positive rank-one part,
    so with E[x] = (5, 1, −0.5, −1, …) its most negative eigenvalue has by far the largest magnitude."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x):
        q = (x * self.w**2).sum(dim=1)
        return torch.stack([q, torch.zeros_like(q)], dim=1)


def dense_hessian(model, x, y):
    params = params_of(model)
    return torch.autograd.functional.hessian(lambda v: loss_at(model, unflat(v, params), x, y),
                                             flat(params)).double().numpy()


@pytest.mark.parametrize("tol", [1e-3, 1e-6])
def test_hessian_top_is_the_largest_algebraic_eigenvalue_of_a_negative_dominant_hessian(tol):
    generator = torch.Generator().manual_seed(2)
    mean = torch.tensor([5.0, 1.0, -0.5, -1.0, 2.0, -2.0, 0.3, 3.0])
    x = mean + 0.1 * torch.randn(64, 8, generator=generator)
    y = torch.zeros(64, dtype=torch.long)
    model = Quadratic(0.1 * torch.randn(8, generator=generator)).eval()
    eigenvalues = np.linalg.eigvalsh(dense_hessian(model, x, y))
    assert abs(eigenvalues.min()) > 2 * abs(eigenvalues.max()) > 0  # the magnitude's winner is negative
    result = measures.evaluate(measures.Context(model=model, x=x, y=y), "hessian-top", {"tol": tol})
    assert result.value == pytest.approx(eigenvalues.max(), rel=max(tol, 1e-5))


def test_hessian_top_meets_a_tight_tolerance_in_few_products(tiny):
    ctx = context(tiny)
    result = measures.evaluate(ctx, "hessian-top", {"tol": 1e-6})
    assert result.value == pytest.approx(np.linalg.eigvalsh(tiny[3]).max(), rel=1e-5)
    assert result.detail["products"] <= 57  # never more than the dimension (the Krylov space is exhausted)


def test_mlp_and_generic_trace_paths_agree(tiny):
    from measures.functional import params_of
    from measures.hvp import HessianProducts
    from measures.taylor import TaylorQuadratic, supported

    model, x, y, hessian = tiny
    assert supported(model) and not supported(Quadratic(torch.ones(3)))
    params = params_of(model)
    z = (torch.randint(0, 2, (5, 57), generator=torch.Generator().manual_seed(0)) * 2 - 1).float()
    exact = np.einsum("ki,ij,kj->k", z.double().numpy(), hessian, z.double().numpy())
    np.testing.assert_allclose(TaylorQuadratic(model, params, x, y).quadratic(z).numpy(), exact, rtol=1e-5)
    np.testing.assert_allclose(HessianProducts(model, params, x, y).quadratic(z).numpy(), exact, rtol=1e-5)


def test_hessian_trace_of_a_non_mlp_is_within_three_standard_errors():
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(64, 8, generator=generator).abs() - 0.3
    y = torch.randint(0, 2, (64,), generator=generator)
    model = Quadratic(0.5 * torch.randn(8, generator=generator)).eval()
    exact = np.trace(dense_hessian(model, x, y))
    ctx = measures.Context(model=model, x=x, y=y)
    estimate = measures.evaluate(ctx, "hessian-trace", {"probes": 400, "chunk": 50}).value
    assert abs(estimate - exact) <= 3 * ctx.cache["hessian-trace-stderr"] + 1e-9
