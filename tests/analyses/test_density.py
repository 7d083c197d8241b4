"""Stochastic Lanczos quadrature against the exact Hessian of tiny models (torch.autograd.functional.hessian,
numpy.linalg.eigvalsh), in float64."""

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.integrate import trapezoid
from torch import nn
from torch.func import functional_call

import measures
from audit.analyses.density import broaden, hessian_density, hessian_vector_products, hutchinson_trace


def tiny_mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """180 parameters, 40 examples of 4 classes."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4)).double()
    return model, torch.randn(40, 6, dtype=torch.float64), torch.randint(0, 4, (40,))


def small_mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """67 parameters, 30 examples of 3 classes: small enough for Lanczos to run through the whole space."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    return model, torch.randn(30, 4, dtype=torch.float64), torch.randint(0, 3, (30,))


def softmax_regression() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """18 parameters, 2 examples: the Hessian has rank at most 2 × (3 − 1), so Lanczos breaks down early."""
    torch.manual_seed(1)
    model = nn.Linear(5, 3).double()
    return model, torch.randn(2, 5, dtype=torch.float64), torch.tensor([0, 2])


@functools.cache
def exact(make) -> tuple[nn.Module, torch.Tensor, torch.Tensor, np.ndarray]:
    """The model, its data and the Hessian of its mean cross-entropy over the flattened parameters, in
    named_parameters order."""
    model, x, y = make()
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for _, p in model.named_parameters()])

    def loss(vector: torch.Tensor) -> torch.Tensor:
        parts = torch.split(vector, [int(np.prod(s)) for s in shapes])
        params = {name: part.reshape(shape) for name, part, shape in zip(names, parts, shapes)}
        return F.cross_entropy(functional_call(model, params, (x,)), y)

    hessian = torch.autograd.functional.hessian(loss, theta, vectorize=True).numpy()
    return model, x, y, (hessian + hessian.T) / 2


def probes(count: int, n: int, seed: int) -> np.ndarray:
    """The Rademacher probes of a seed, drawn as documented (one randint of n per probe, in order)."""
    generator = torch.Generator().manual_seed(seed)
    return np.stack([(torch.randint(0, 2, (n,), generator=generator) * 2 - 1).double().numpy()
                     for _ in range(count)])


def test_density_integrates_to_one_and_covers_its_mass():
    model, x, y, hessian = exact(tiny_mlp)
    result = hessian_density(model, x, y, probes=4, steps=10, seed=0)
    grid, density = result["grid"], result["density"]
    assert trapezoid(density, grid) == pytest.approx(1.0, abs=1e-12)
    assert np.all(density >= 0) and np.all(np.diff(grid) > 0)
    # before the normalization the broadened measure already has all its mass on the grid
    raw = broaden(result["nodes"], result["weights"], grid, result["attrs"]["width"])
    assert trapezoid(raw, grid) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(result["weights"].sum(axis=1), 1.0, atol=1e-12)
    eigenvalues = np.linalg.eigvalsh(hessian)
    # Ritz values lie inside the spectrum (Cauchy interlacing)
    assert result["nodes"].min() >= eigenvalues[0] - 1e-9 and result["nodes"].max() <= eigenvalues[-1] + 1e-9
    assert result["nodes"].shape == result["weights"].shape == (4, 10)
    assert result["attrs"]["parameters"] == len(hessian) == 180


def test_first_moment_is_the_trace_within_its_error():
    model, x, y, hessian = exact(tiny_mlp)
    trace, n = float(np.trace(hessian)), len(hessian)
    result = hessian_density(model, x, y, probes=32, steps=12, seed=3)
    estimate, stderr = result["trace_estimate"], result["trace_stderr"]
    assert stderr > 0 and abs(estimate - trace) <= 4 * stderr
    np.testing.assert_allclose(estimate, n * np.mean((result["weights"] * result["nodes"]).sum(axis=1)))
    # the density's mean, ∫ λ ρ(λ) dλ, is the trace over P: the same probes' Hutchinson estimate to rounding ...
    mean = trapezoid(result["grid"] * result["density"], result["grid"])
    same, _ = hutchinson_trace(model, x, y, probes=32, seed=3)
    assert mean == pytest.approx(same / n, rel=1e-6)
    # ... and another seed's within both errors
    other, other_stderr = hutchinson_trace(model, x, y, probes=32, seed=11)
    assert abs(mean - other / n) <= 4 * np.hypot(stderr, other_stderr) / n
    assert abs(other - trace) <= 4 * other_stderr


def test_the_trace_is_measures_hessian_trace_with_the_same_probes():
    model, x, y, _ = exact(tiny_mlp)
    settings = {"hessian-trace": {"samples": 0, "seed": 5, "probes": 6}}
    value = measures.compute(model, ["hessian-trace"], train=(x, y), settings=settings)["hessian-trace"].value
    result = hessian_density(model, x, y, probes=6, steps=3, seed=5)
    assert result["trace_estimate"] == pytest.approx(value, rel=1e-4)  # measures' loss is in float32


@pytest.mark.parametrize("make", [pytest.param(small_mlp, id="mlp"), pytest.param(softmax_regression, id="rank-4")])
@pytest.mark.parametrize("steps", [3, 1000])
def test_quadrature_matches_the_exact_hessian(make, steps):
    model, x, y, hessian = exact(make)
    n = len(hessian)
    result = hessian_density(model, x, y, probes=2, steps=steps, seed=7)
    assert result["nodes"].shape == (2, min(steps, n)) and result["attrs"]["lanczos_steps"] == min(steps, n)
    eigenvalues = np.linalg.eigvalsh(hessian)
    scale = np.abs(eigenvalues).max()
    for v, nodes, weights, length in zip(probes(2, n, 7), result["nodes"], result["weights"], result["lengths"]):
        assert np.isfinite(nodes).all() and weights.sum() == pytest.approx(1.0)
        # Gauss quadrature with m nodes is exact for moments up to 2m − 1: Σ w θ^k = vᵀ H^k v / vᵀv
        for k in range(4):
            expected = v @ np.linalg.matrix_power(hessian, k) @ v / (v @ v)
            assert (weights * nodes ** k).sum() == pytest.approx(expected, rel=1e-8, abs=1e-12), k
        if steps >= n:
            # a full Krylov space: every node that carries weight is an eigenvalue of H
            for node in nodes[weights > 1e-10]:
                assert np.abs(eigenvalues - node).min() <= 1e-7 * scale
        if make is softmax_regression:
            # rank 4 and the null space: at most 5 distinct eigenvalues, the recurrence stops there
            assert length == 3 if steps == 3 else 2 <= length <= 5
            assert np.all(weights[length:] == 0) and np.all(nodes[length:] == 0)


def test_density_is_seeded_and_independent_of_the_chunk():
    model, x, y, _ = exact(tiny_mlp)
    a = hessian_density(model, x, y, probes=3, steps=5, seed=2)
    b = hessian_density(model, x, y, probes=3, steps=5, seed=2, chunk=2)
    c = hessian_density(model, x, y, probes=3, steps=5, seed=9)
    np.testing.assert_allclose(b["nodes"], a["nodes"], rtol=1e-10)
    np.testing.assert_array_equal(hessian_density(model, x, y, probes=3, steps=5, seed=2)["nodes"], a["nodes"])
    assert not np.allclose(a["nodes"], c["nodes"])
    assert a["attrs"]["seed"] == 2 and a["attrs"]["probes"] == 3


def test_batches_give_the_same_hessian():
    model, x, y, _ = exact(tiny_mlp)
    whole = hessian_density(model, x, y, probes=2, steps=6, seed=1)
    batched = hessian_density(model, x, y, probes=2, steps=6, seed=1, batch=7)
    np.testing.assert_allclose(batched["nodes"], whole["nodes"], rtol=1e-9, atol=1e-12)


def test_batch_norm_model_in_eval_mode_and_its_mode_restored():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3)).double()
    x, y = torch.randn(10, 1, 6, 6, dtype=torch.float64), torch.randint(0, 3, (10,))
    model.train()
    model(x)  # move the running statistics away from their start
    statistics = model[1].running_mean.clone()
    result = hessian_density(model, x, y, probes=2, steps=4, seed=0)
    assert model.training and torch.equal(model[1].running_mean, statistics)
    assert np.isfinite(result["nodes"]).all()
    n = sum(p.numel() for p in model.parameters())
    assert result["attrs"]["parameters"] == n


def test_cost_is_probes_times_the_steps_taken():
    assert hessian_vector_products(8, 64, 10_000) == 512
    assert hessian_vector_products(8, 500, 180) == 8 * 180
