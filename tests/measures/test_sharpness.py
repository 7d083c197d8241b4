"""Sharpness, flatness and PAC-Bayes measures against independent computations on tiny models."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import measures
from measures.sharpness import ascend, keskar_radius, noise


def fitted_mlp():
    """An MLP 8→16→3 fitted on 60 synthetic points, with its init."""
    torch.manual_seed(0)
    x = torch.randn(60, 8)
    y = (x @ torch.randn(8, 3)).argmax(1)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    init = copy.deepcopy(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(300):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    model.eval()
    assert (model(x).argmax(1) == y).all()
    return model, init.eval(), x, y


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # these models are tiny: a second thread only adds contention on a shared machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def mlp(one_thread):
    return fitted_mlp()


def context(model, init, x, y):
    return measures.Context(model=model, init=init, x=x, y=y)


def value(ctx, name, **overrides):
    result = measures.evaluate(ctx, name, overrides)
    assert result.value is not None, result.reason
    return result.value


# ---------------------------------------------------------------- flatness


def test_noise_standard_deviation_is_sigma_not_sigma_squared():
    w = torch.randn(200_000) * 2
    generator = torch.Generator().manual_seed(1)
    applied = noise({"w": w}, 0.05, False, 0.0, 3, generator)["w"] - w
    assert applied.shape == (3, 200_000)
    assert float(applied.std()) == pytest.approx(0.05, rel=0.02)
    applied = noise({"w": w}, 0.05, True, 1e-3, 3, generator)["w"] - w
    assert float((applied / (0.05 * w.abs() + 1e-3)).std()) == pytest.approx(1.0, rel=0.02)


def own_drop(model, x, y, scale, draws=400, seed=123):
    """Mean train accuracy drop under N(0, scale²) noise on every parameter, by an explicit loop."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    with torch.no_grad():
        base = float((model(x).argmax(1) == y).float().mean())
        generator = torch.Generator().manual_seed(seed)
        accuracies = []
        for _ in range(draws):
            noisy = {n: p + torch.randn(p.shape, generator=generator) * scale(n, p)
                     for n, p in params.items()}
            accuracies.append(float((functional_call(model, noisy, (x,)).argmax(1) == y).float().mean()))
    return base - float(np.mean(accuracies))


def test_bisection_finds_the_target_accuracy_drop(mlp):
    model, init, x, y = mlp
    sigma = value(context(model, init, x, y), "pacbayes-flatness", draws=64) ** -0.5
    at_sigma = own_drop(model, x, y, lambda n, p: sigma)
    assert abs(at_sigma - 0.1) <= 0.05
    assert own_drop(model, x, y, lambda n, p: 1.5 * sigma) > at_sigma

    sigma = value(context(model, init, x, y), "pacbayes-mag-flatness", draws=64) ** -0.5
    at_sigma = own_drop(model, x, y, lambda n, p: sigma * p.abs() + 1e-3)
    assert abs(at_sigma - 0.1) <= 0.05
    assert own_drop(model, x, y, lambda n, p: 1.5 * sigma * p.abs() + 1e-3) > at_sigma


def test_flatness_search_bounds(mlp):
    model, init, x, y = mlp
    ctx = context(model, init, x, y)
    assert value(ctx, "pacbayes-flatness", high=1e-4) == pytest.approx(1e8)
    result = measures.evaluate(ctx, "pacbayes-flatness", {"low": 20.0, "high": 30.0})
    assert result.value is None and "low" in result.reason


# ---------------------------------------------------------------- Keskar sharpness on a linear model


@pytest.fixture(scope="module")
def linear(one_thread):
    torch.manual_seed(3)
    model = nn.Linear(8, 3).eval()
    x = torch.randn(20, 8)
    y = torch.randint(0, 3, (20,))
    return model, x, y


def linear_loss(model, x, y, delta=None):
    params = {n: p.detach() + (delta[n] if delta else 0) for n, p in model.named_parameters()}
    return F.cross_entropy(functional_call(model, params, (x,)), y)


def first_order(model, x, y, epsilon):
    """(Σ_i box_i |∂L/∂w_i|, L, ‖box‖²) with box_i = ε(|w_i| + 1), by plain autograd."""
    model = copy.deepcopy(model)
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    boxes = [epsilon * (p.detach().abs() + 1) for p in model.parameters()]
    linear_term = sum(float((b * g.abs()).sum()) for b, g in zip(boxes, grads))
    return linear_term, float(loss.detach()), sum(float(b.pow(2).sum()) for b in boxes)


def test_keskar_sharpness_is_between_random_points_and_the_first_order_bound(linear):
    model, x, y = linear
    epsilon = 1e-3
    ctx = context(model, None, x, y)
    sharp = value(ctx, "sharpness", epsilon=epsilon)
    base = float(linear_loss(model, x, y))

    generator = torch.Generator().manual_seed(7)
    for _ in range(5):
        delta = {n: (2 * torch.rand(p.shape, generator=generator) - 1) * epsilon * (p.detach().abs() + 1)
                 for n, p in model.named_parameters()}
        assert sharp >= (float(linear_loss(model, x, y, delta)) - base) / (1 + base)

    base_, increase, delta = ascend(ctx, lambda p: keskar_radius(p, epsilon), 20, 2048, 0)
    assert increase / (1 + base_) == pytest.approx(sharp, rel=1e-9)
    for n, p in model.named_parameters():
        assert (delta[n].abs() <= epsilon * (p.detach().abs() + 1) * (1 + 1e-6)).all()

    linear_term, loss, box_sq = first_order(model, x, y, epsilon)
    assert loss == pytest.approx(base, rel=1e-6)
    # softmax cross-entropy has Hessian ≤ ½ in the logits; the logits are W x + b
    curvature = 0.5 * float((x.pow(2).sum(1) + 1).max())
    assert sharp <= (linear_term + 0.5 * curvature * box_sq + 1e-6) / (1 + loss)
    assert sharp > 0


def test_keskar_sharpness_matches_first_order_for_tiny_epsilon(linear):
    model, x, y = linear
    sharp = value(context(model, None, x, y), "sharpness", epsilon=1e-4)
    linear_term, loss, _ = first_order(model, x, y, 1e-4)
    assert sharp == pytest.approx(linear_term / (1 + loss), rel=0.05)


# ---------------------------------------------------------------- adaptive sharpness


def test_adaptive_sharpness_avg_equals_an_explicit_loop(mlp):
    model, init, x, y = mlp
    rho, draws, seed = 0.5, 8, 5  # a large ρ: the float32 loss difference must be well resolved
    got = value(context(model, init, x, y), "adaptive-sharpness-avg", rho=rho, draws=draws, seed=seed)
    double = copy.deepcopy(model).double()
    params = {n: p.detach() for n, p in double.named_parameters()}
    xd = x.double()
    with torch.no_grad():
        base = float(F.cross_entropy(double(xd), y))
        generator = torch.Generator().manual_seed(seed)
        increases = []
        for _ in range(draws):  # the documented order: draw by draw, parameter by parameter
            noisy = {n: p + torch.randn(p.shape, generator=generator).double() * rho * p.abs()
                     for n, p in params.items()}
            increases.append(float(F.cross_entropy(functional_call(double, noisy, (xd,)), y)) - base)
    assert got == pytest.approx(float(np.mean(increases)), rel=1e-5)


def test_adaptive_sharpness_is_invariant_to_relu_rescaling(mlp):
    model, init, x, y = mlp
    scaled = copy.deepcopy(model)
    with torch.no_grad():
        scaled[0].weight.mul_(4.0)
        scaled[0].bias.mul_(4.0)
        scaled[2].weight.div_(4.0)
    for name in ("adaptive-sharpness", "adaptive-sharpness-avg"):
        original = value(context(model, init, x, y), name)
        assert value(context(scaled, init, x, y), name) == pytest.approx(original, rel=1e-4)


# ---------------------------------------------------------------- PAC-Bayes bounds


def test_pacbayes_bounds_match_closed_forms(mlp):
    model, init, x, y = mlp
    ctx = context(model, init, x, y)
    sigma = value(ctx, "pacbayes-flatness") ** -0.5
    sigma_mag = value(ctx, "pacbayes-mag-flatness") ** -0.5
    w = np.concatenate([p.detach().double().numpy().ravel() for p in model.parameters()])
    w0 = np.concatenate([p.detach().double().numpy().ravel() for p in init.parameters()])
    m, eps = len(x), 1e-3

    def plain(d):
        return (d ** 2).sum() / (4 * sigma ** 2) + math.log(m / sigma) + 10

    def mag(d):
        numerator = eps ** 2 + (sigma_mag ** 2 + 1) * (d ** 2).sum() / d.size
        terms = np.log(numerator / (eps ** 2 + sigma_mag ** 2 * d ** 2))
        return 0.25 * terms.sum() + math.log(m / sigma_mag) + 10

    assert value(ctx, "pacbayes-init") == pytest.approx(plain(w - w0), rel=1e-6)
    assert value(ctx, "pacbayes-orig") == pytest.approx(plain(w), rel=1e-6)
    assert value(ctx, "pacbayes-mag-init") == pytest.approx(mag(w - w0), rel=1e-6)
    assert value(ctx, "pacbayes-mag-orig") == pytest.approx(mag(w), rel=1e-6)
    assert len([k for k in ctx.cache if k.startswith("pacbayes-sigma")]) == 2  # σ searched once each

    result = measures.evaluate(context(model, None, x, y), "pacbayes-init")
    assert result.value is None and "init" in result.reason


# ---------------------------------------------------------------- determinism and side effects


def test_seeded_measures_are_deterministic_and_leave_the_model_alone(mlp):
    model, init, x, y = mlp
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for name, overrides in (("sharpness", {"samples": 30}), ("adaptive-sharpness-avg", {})):
        first = value(context(model, init, x, y), name, **overrides)
        assert value(context(model, init, x, y), name, **overrides) == first
        assert value(context(model, init, x, y), name, seed=1, **overrides) != first
    flat = value(context(model, init, x, y), "pacbayes-flatness", seed=2)
    assert value(context(model, init, x, y), "pacbayes-flatness", seed=2) == flat
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n])


def test_registered_metadata():
    for name, family in (("sharpness", "sharpness"), ("adaptive-sharpness", "sharpness"),
                         ("adaptive-sharpness-avg", "sharpness"), ("pacbayes-flatness", "flatness"),
                         ("pacbayes-mag-flatness", "flatness"), ("pacbayes-init", "pac-bayes"),
                         ("pacbayes-orig", "pac-bayes"), ("pacbayes-mag-init", "pac-bayes"),
                         ("pacbayes-mag-orig", "pac-bayes")):
        m = measures.get(name)
        assert m.family == family and not m.default and m.direction == 1 and "seed" in m.settings
    assert name not in measures.names(default_only=True)
