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
