"""The catalogue's measures, each against an independent computation (numpy/scipy, explicit loops)."""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import measures
from measures.layers import fold_batchnorm, prepare


def tiny_mlp(seed=0, widths=(6, 7, 5, 3)):
    torch.manual_seed(seed)
    layers = [nn.Flatten()]
    for a, b in zip(widths, widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def tiny_conv(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 3 * 3, 3))


def data(shape, n=40, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n, *shape), generator=g), torch.randint(0, classes, (n,), generator=g)


def context(model, x, y, init=None, **extra):
    device = torch.device("cpu")
    return measures.Context(model=prepare(model, device), init=prepare(init, device) if init is not None else None,
                            x=x, y=y, raw_model=model, **extra)


def value(ctx, name, **settings):
    result = measures.evaluate(ctx, name, settings)
    assert result.value is not None, result.reason
    return result.value


def np_weights(model):
    return [m.weight.detach().double().numpy().reshape(m.weight.shape[0], -1) for m in model.modules()
            if isinstance(m, (nn.Linear, nn.Conv2d))]


def test_norm_family_matches_numpy():
    model, init = tiny_conv(0), tiny_conv(1)
    x, y = data((2, 6, 6))
    ctx = context(model, x, y, init)
    ws, w0s = np_weights(model), np_weights(init)
    d = len(ws)
    spec = [np.linalg.svd(w, compute_uv=False)[0] for w in ws]
    fro = [np.linalg.norm(w) for w in ws]
    assert value(ctx, "frobenius-sum") == pytest.approx(math.log(d) + 2 / d * sum(map(math.log, fro)), rel=1e-9)
    assert value(ctx, "spectral-sum") == pytest.approx(math.log(d) + 2 / d * sum(map(math.log, spec)), rel=1e-9)
    assert value(ctx, "stable-rank") == pytest.approx(sum(f ** 2 / s ** 2 for f, s in zip(fro, spec)), rel=1e-9)
    assert value(ctx, "spectral-init") == pytest.approx(
        sum(math.log(np.linalg.svd(w - w0, compute_uv=False)[0]) for w, w0 in zip(ws, w0s)), rel=1e-9)
    assert value(ctx, "param-norm") == pytest.approx(
        sum((p.detach().double().numpy() ** 2).sum() for p in model.parameters()), rel=1e-9)
    complexity = np.prod(spec) * sum((np.linalg.norm(w - w0, axis=1).sum() / s) ** (2 / 3)
                                     for w, w0, s in zip(ws, w0s, spec)) ** 1.5
    assert value(ctx, "bartlett") == pytest.approx(math.log(complexity), rel=1e-9)


def dense_operator(conv, shape):
    n = int(np.prod(shape))
    with torch.no_grad():
        columns = [conv._conv_forward(e.reshape(1, *shape).double(), conv.weight.double(), None).reshape(-1)
                   for e in torch.eye(n, dtype=torch.float64)]
    return torch.stack(columns, 1).numpy()


def test_spectral_operator_is_the_true_conv_operator_norm():
    model = tiny_conv(0)
    x, y = data((2, 6, 6))
    first = dense_operator(model[0], (2, 6, 6))  # stride 2, padding 1: 6×6 → 3×3
    second = dense_operator(model[2], (3, 3, 3))
    expected = (math.log(np.linalg.svd(first, compute_uv=False)[0]) + math.log(np.linalg.svd(second, compute_uv=False)[0])
                + math.log(np.linalg.svd(np_weights(model)[2], compute_uv=False)[0]))
    ctx = context(model, x, y)
    assert value(ctx, "spectral-operator") == pytest.approx(expected, rel=1e-6)
    assert value(ctx, "spectral-operator") != pytest.approx(value(ctx, "spectral"), rel=1e-3)  # not the reshaped one


def test_path_l1_equals_explicit_enumeration():
    model = tiny_mlp()
    w = np_weights(model)
    total = sum(abs(w[0][j, i] * w[1][k, j] * w[2][o, k])
                for i, j, k, o in itertools.product(range(6), range(7), range(5), range(3)))
    x, y = data((6,))
    assert value(context(model, x, y), "path-l1") == pytest.approx(total, rel=1e-10)


def test_path_norms_are_undefined_through_lrn():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.LocalResponseNorm(2), nn.Flatten(), nn.Linear(8, 2))
    result = measures.evaluate(context(model, *data((1, 4, 4), classes=2)), "path-l2")
    assert result.value is None and "LocalResponseNorm" in result.reason


def test_margin_normalized_forms_match_numpy():
    model, init = tiny_mlp(0), tiny_mlp(1)
    x, y = data((6,), n=200)
    with torch.no_grad():
        logits = model(x).double().numpy()
    ys = y.numpy()
    margins = np.array([row[t] - max(row[j] for j in range(3) if j != t) for row, t in zip(logits, ys)])
    gamma = np.percentile(margins, 90)  # a high percentile so that γ > 0 on this untrained model
    ws, w0s = np_weights(model), np_weights(init)
    d, spec, fro = len(ws), [np.linalg.svd(w, compute_uv=False)[0] for w in ws], [np.linalg.norm(w) for w in ws]
    l2_init = math.sqrt(sum(((w - w0) ** 2).sum() for w, w0 in zip(ws, w0s)))
    bart = np.prod(spec) * sum((np.linalg.norm(w - w0, axis=1).sum() / s) ** (2 / 3)
                               for w, w0, s in zip(ws, w0s, spec)) ** 1.5
    ctx = context(model, x, y, init)
    q = {"percentile": 90.0}
    assert value(ctx, "inverse-margin", **q) == pytest.approx(1 / gamma ** 2, rel=1e-5)
    assert value(ctx, "bartlett-margin", **q) == pytest.approx(math.log(bart) - math.log(gamma), rel=1e-5)
    assert value(ctx, "l2-init-margin", **q) == pytest.approx(2 * math.log(l2_init) - 2 * math.log(gamma), rel=1e-5)
    assert value(ctx, "frobenius-sum-margin", **q) == pytest.approx(
        math.log(d) + (2 * sum(map(math.log, fro)) - 2 * math.log(gamma)) / d, rel=1e-5)
    assert value(ctx, "spectral-sum-margin", **q) == pytest.approx(
        math.log(d) + (2 * sum(map(math.log, spec)) - 2 * math.log(gamma)) / d, rel=1e-5)


def test_fisher_rao_equals_an_explicit_per_example_sum():
    model = tiny_mlp()
    x, y = data((6,), n=25)
    total = 0.0
    for xi, yi in zip(x, y):
        model.zero_grad()
        F.cross_entropy(model(xi[None]), yi[None]).backward()
        total += sum((p.detach().double() * p.grad.double()).sum() for p in model.parameters()) ** 2
    assert value(context(model, x, y), "fisher-rao") == pytest.approx(float(total) / 25, rel=1e-5)


def test_jacobian_norm_equals_a_per_example_jacobian_loop():
    model = tiny_mlp()
    x, y = data((6,), n=12)
    norms = [torch.autograd.functional.jacobian(lambda v: model(v[None])[0], xi).double().norm() for xi in x]
    assert value(context(model, x, y), "jacobian-norm", chunk=5) == pytest.approx(float(torch.stack(norms).mean()),
                                                                                 rel=1e-5)


def test_grad_noise_equals_an_explicit_loop_over_the_same_batches():
    model = tiny_mlp()
    x, y = data((6,), n=50)

    def grad(xb, yb):
        model.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        return torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double()

    full = grad(x, y)
    generator = torch.Generator().manual_seed(3)
    deviations = []
    for _ in range(5):
        index = torch.randperm(50, generator=generator)[:8]
        deviations.append(float((grad(x[index], y[index]) - full).pow(2).sum()))
    got = value(context(model, x, y), "grad-noise", batch_size=8, batches=5, seed=3)
    assert got == pytest.approx(math.log(np.mean(deviations)), rel=1e-5)


def test_batchnorm_folding_leaves_outputs_unchanged(seed):
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Conv2d(4, 3, 3), nn.BatchNorm2d(3, affine=False), nn.ReLU(), nn.Flatten(),
                          nn.Linear(3 * 4 * 4, 5), nn.BatchNorm1d(5))
    x = torch.randn(16, 2, 6, 6)
    model.train()
    for _ in range(3):
        model(x * 2 + 1)  # move the running statistics away from their defaults
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d) and m.affine:
                m.weight.uniform_(0.5, 2)
                m.bias.uniform_(-1, 1)
    model.eval()
    folded = fold_batchnorm(__import__("copy").deepcopy(model))
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    with torch.no_grad():
        assert torch.allclose(model(x), folded(x), atol=1e-5)
