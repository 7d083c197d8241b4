"""WeightWatcher spectral measures against numpy SVDs, known power laws and an explicit scipy KS loop."""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

import measures
from measures.spectra import eigenvalues, fit_power_law, layer_spectra

WW = ("ww-alpha", "ww-alpha-weighted", "ww-log-spectral-norm", "ww-stable-rank", "ww-log-norm")


def values(model, overrides=None):
    ctx = measures.Context(model=model.eval())
    return {name: measures.evaluate(ctx, name, (overrides or {}).get(name)) for name in WW}


def net(*sizes, seed=0):
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def test_norms_match_numpy_svd(seed):
    model = nn.Sequential(nn.Conv2d(3, 12, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12 * 4 * 4, 30), nn.ReLU(),
                          nn.Linear(30, 10)).eval()
    matrices = [m.weight.detach().double().numpy().reshape(m.weight.shape[0], -1)
                for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    singular = [np.linalg.svd(w, compute_uv=False) for w in matrices]
    for m, s in zip([model[0], model[3], model[5]], singular):
        assert eigenvalues(m.weight) == pytest.approx(s ** 2, rel=1e-10)
    layers = layer_spectra(model, 8)
    assert [layer["shape"] for layer in layers] == [(12, 3, 3, 3), (30, 192), (10, 30)]
    for layer, w, s in zip(layers, matrices, singular):
        assert layer["spectral_norm"] == pytest.approx(s[0] ** 2, rel=1e-10)
        assert layer["stable_rank"] == pytest.approx((w ** 2).sum() / s[0] ** 2, rel=1e-10)
        assert layer["log_norm"] == pytest.approx(math.log10((w ** 2).sum()), rel=1e-10)
    got = values(model)
    assert got["ww-log-spectral-norm"].value == pytest.approx(np.mean([math.log10(s[0] ** 2) for s in singular]))
    assert got["ww-stable-rank"].value == pytest.approx(np.mean([(s ** 2).sum() / s[0] ** 2 for s in singular]))
    assert got["ww-log-norm"].value == pytest.approx(np.mean([math.log10((s ** 2).sum()) for s in singular]))
    alphas = [layer["alpha"] for layer in layers]
    assert got["ww-alpha"].value == pytest.approx(np.mean(alphas))
    assert got["ww-alpha-weighted"].value == pytest.approx(
        np.mean([a * math.log10(s[0] ** 2) for a, s in zip(alphas, singular)]))


@pytest.mark.parametrize("alpha", [2.5, 3.5])
@pytest.mark.parametrize("seed", [0, 1])
def test_alpha_of_a_known_pareto(alpha, seed):
    # numpy's pareto(a) is Lomax; + 1 is the Pareto with xmin 1 and density ∝ x^-(a + 1)
    sample = np.random.default_rng(seed).pareto(alpha - 1, 2000) + 1
    fitted, xmin, _ = fit_power_law(sample)
    assert fitted == pytest.approx(alpha, abs=0.15)
    assert xmin >= 1


def explicit_fit(evals):
    """Every candidate xmin with a tail of 8 or more: closed-form α, KS distance from scipy.stats.kstest."""
    x = np.sort(evals[evals > 1e-5])
    small = len(x) < 20
    best = None
    for xmin in np.unique(x):
        tail = x[x >= xmin]
        if len(tail) < 8:
            continue
        alpha = 1 + (len(tail) - (1 if small else 0)) / np.log(tail / xmin).sum()
        ks = stats.kstest(tail, lambda t, a=alpha, m=xmin: 1 - (t / m) ** (1 - a)).statistic
        if best is None or ks < best[2]:
            best = (alpha, xmin, ks)
    return best


@pytest.mark.parametrize("case", ["pareto", "small", "layer", "ties"])
def test_xmin_selection_matches_an_explicit_ks_loop(case):
    rng = np.random.default_rng(7)
    if case == "pareto":  # a power-law tail above a lognormal bulk
        evals = np.concatenate([rng.lognormal(0, 0.3, 200), rng.pareto(2.0, 100) + 2])
    elif case == "small":  # fewer than 20 eigenvalues: the (n − 1) estimator
        evals = rng.pareto(1.5, 15) + 1
    elif case == "layer":
        evals = np.linalg.svd(rng.standard_normal((60, 90)), compute_uv=False) ** 2
        evals = np.concatenate([evals, [1e-7, 1e-9]])  # left out: at or below 1e-5
    else:
        evals = np.round(rng.pareto(2.0, 120) + 1, 1)
    alpha, xmin, ks = explicit_fit(evals)
    got = fit_power_law(evals)
    assert got[1] == xmin
    assert got[0] == pytest.approx(alpha, rel=1e-10)
    assert got[2] == pytest.approx(ks, rel=1e-8)


def test_small_layers_are_skipped_and_none_left_is_undefined():
    model = net(20, 30, 4)  # the second layer has 4 eigenvalues, fewer than min_evals = 8
    layers = layer_spectra(model, 8)
    assert layers[0]["alpha"] is not None and layers[1]["alpha"] is None and layers[1]["xmin"] is None
    got = values(model)
    assert got["ww-alpha"].value == pytest.approx(layers[0]["alpha"])
    assert got["ww-alpha-weighted"].value == pytest.approx(
        layers[0]["alpha"] * math.log10(layers[0]["spectral_norm"]))
    # the norm measures average over every layer
    assert got["ww-log-norm"].value == pytest.approx(np.mean([layer["log_norm"] for layer in layers]))

    none_fit = values(net(20, 4, 3))
    for name in ("ww-alpha", "ww-alpha-weighted"):
        assert none_fit[name].value is None and "no layer" in none_fit[name].reason
    assert none_fit["ww-log-norm"].value is not None

    raised = values(model, {"ww-alpha": {"min_evals": 21}})  # 20 eigenvalues in the first layer
    assert raised["ww-alpha"].value is None
    with pytest.raises(measures.Undefined):
        measures.get("ww-alpha").fn(measures.Context(model=model), min_evals=21)


def test_invariance_flags_hold_under_relu_rescaling():
    model = net(20, 30, 25, 10, seed=3).double()
    before = values(model)
    with torch.no_grad():
        model[2].weight.mul_(3.7)
        model[2].bias.mul_(3.7)
        model[4].weight.div_(3.7)
    after = values(model)
    for name in WW:
        if measures.get(name).invariant:
            assert after[name].value == pytest.approx(before[name].value, rel=1e-9), name
    assert after["ww-alpha"].value == pytest.approx(before["ww-alpha"].value, rel=1e-9)
    assert after["ww-alpha-weighted"].value != pytest.approx(before["ww-alpha-weighted"].value, rel=1e-6)
