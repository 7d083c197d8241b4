"""The traced tangent kernel behind ntk-label-complexity: the per-layer factorised path for Linear-only models and
the per-example Jacobian path for the rest, against a Jacobian taken with respect to a flat parameter vector."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

import measures
from measures.kernel import jacobian_kernel, linear_kernel, linear_layers, tangent_kernel
from measures.layers import prepare


def independent_kernel(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Σ_c J_c J_cᵀ with J the Jacobian of every output on every point w.r.t. all parameters as one vector."""
    model = copy.deepcopy(model).double()
    named = list(model.named_parameters())
    flat = torch.cat([p.detach().reshape(-1) for _, p in named])
    sizes = [p.numel() for _, p in named]

    def outputs(theta: torch.Tensor) -> torch.Tensor:
        pieces = torch.split(theta, sizes)
        params = {name: piece.reshape(p.shape) for (name, p), piece in zip(named, pieces)}
        return functional_call(model, params, (x.double(),))

    jacobian = torch.autograd.functional.jacobian(outputs, flat)  # (n, C, P)
    return torch.einsum("icp,jcp->ij", jacobian, jacobian)


class TwiceUsed(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(5, 5)
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.inner(torch.tanh(self.inner(x)))))


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(5, 7), nn.ReLU(inplace=True), nn.Linear(7, 6), nn.Tanh(), nn.Linear(6, 3))


def test_the_factorised_kernel_equals_the_jacobian_kernel_and_an_independent_one(seed):
    model, x = mlp().eval(), torch.randn(6, 5)
    assert linear_layers(model, x) is not None
    fast, slow = tangent_kernel(model, x), jacobian_kernel(model.double(), x.double())
    expected = independent_kernel(model, x)
    assert fast.dtype == torch.float64
    torch.testing.assert_close(fast, slow, rtol=1e-9, atol=0)
    torch.testing.assert_close(fast, expected, rtol=1e-9, atol=0)
    torch.testing.assert_close(linear_kernel(model, x, chunk=4), fast, rtol=1e-12, atol=0)  # chunks of 4 and 2


@pytest.mark.parametrize("build, shape", [
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3)), (1, 4, 4)),
    (TwiceUsed, (5,)),
])
def test_other_models_take_the_jacobian_path_and_equal_the_independent_kernel(seed, build, shape):
    model = build().double().eval()
    x = torch.randn(6, *shape, dtype=torch.float64)
    assert linear_layers(model, x) is None
    torch.testing.assert_close(tangent_kernel(model, x), independent_kernel(model, x), rtol=1e-9, atol=1e-12)


def test_the_measure_equals_numpy_on_the_independent_kernel(seed):
    model = prepare(mlp(), torch.device("cpu"))
    x, y = torch.randn(12, 5), torch.randint(0, 3, (12,))
    result = measures.evaluate(measures.Context(model=model, x=x, y=y), "ntk-label-complexity", {"subset": 0})
    assert result.value is not None, result.reason
    kernel = independent_kernel(model, x).numpy()
    targets = np.eye(3)[y.numpy()]
    expected = math.sqrt(2 * np.sum(targets * np.linalg.solve(kernel, targets)) / 12)
    assert result.value == pytest.approx(expected, rel=1e-9)


def test_more_points_than_outputs_times_parameters_is_undefined(seed):
    model = prepare(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2)), torch.device("cpu"))
    x = torch.randn(40, 2)
    assert linear_layers(model, x) is not None
    ctx = measures.Context(model=model, x=x, y=torch.randint(0, 2, (40,)))
    result = measures.evaluate(ctx, "ntk-label-complexity", {"subset": 0})
    assert result.value is None and "singular" in result.reason  # 40 points, 2 outputs × 17 parameters
