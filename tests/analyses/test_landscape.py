"""Loss landscapes against independent computations: models loaded with load_state_dict, plain F.cross_entropy."""

import copy
import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from audit.analyses.landscape import (
    directions,
    line,
    line_alphas,
    line_passes,
    plane,
    plane_axis,
    plane_passes,
    subset,
)
from measures.functional import subset as measures_subset


def mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    return model, torch.randn(64, 8), torch.randint(0, 3, (64,))


def conv() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                          nn.Flatten(), nn.Linear(16, 3))
    return model, torch.randn(48, 1, 6, 6), torch.randint(0, 3, (48,))


@functools.cache
def trained(make) -> tuple[nn.Module, dict, dict, torch.Tensor, torch.Tensor]:
    """A model, its state before and after a few SGD steps in train mode (batch norm statistics move); made
    once per kind and shared (the functions under test never change their arguments, which a test checks)."""
    model, x, y = make()
    init = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    for _ in range(15):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    final = copy.deepcopy(model.state_dict())
    return model, init, final, x, y


def reference(model: nn.Module, state: dict, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Loss and accuracy of the state loaded into a copy of the model, eval mode, all examples at once."""
    clone = copy.deepcopy(model)
    clone.load_state_dict(state)
    clone.eval()
    with torch.no_grad():
        logits = clone(x)
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


MODELS = [pytest.param(mlp, id="mlp"), pytest.param(conv, id="conv-bn")]


@pytest.mark.parametrize("make", MODELS)
def test_line_ends_are_the_stored_init_and_final_models(make):
    model, init, final, x, y = trained(make)
    before = [copy.deepcopy(state) for state in (model.state_dict(), init, final)]
    model.train()
    result = line(model, init, final, x, y, points=7, stretch=0.5, batch=10)
    plane(model, final, x, y, resolution=3, batch=10)
    alpha = result["alpha"]
    assert alpha[0] == -0.5 and alpha[-1] == 1.5 and np.all(np.diff(alpha) > 0)
    for a, state in ((0.0, init), (1.0, final)):
        i = int(np.flatnonzero(alpha == a)[0])
        loss, accuracy = reference(model, state, x, y)
        assert result["loss"][i] == pytest.approx(loss, rel=1e-5)
        assert result["accuracy"][i] == pytest.approx(accuracy)
    assert result["loss"].shape == result["accuracy"].shape == alpha.shape
    assert result["attrs"]["points"] == 7 and result["attrs"]["examples"] == len(x)
    # pure: the model's weights and mode, and the states given, are as they were
    assert model.training
    for was, now in zip(before, (model.state_dict(), init, final)):
        assert all(torch.equal(was[name], t) for name, t in now.items())


@pytest.mark.parametrize("make", MODELS)
def test_line_midpoint_is_the_average_of_the_state_dicts(make):
    model, init, final, x, y = trained(make)
    if make is conv:  # the test only means something if the running statistics moved
        assert not torch.allclose(init["1.running_mean"], final["1.running_mean"])
    result = line(model, init, final, x, y, points=5, stretch=0.5)
    assert list(result["alpha"]) == [-0.5, 0.0, 0.5, 1.0, 1.5]
    average = {name: (init[name] + final[name]) / 2 if init[name].is_floating_point() else final[name]
               for name in init}
    loss, accuracy = reference(model, average, x, y)
    assert result["loss"][2] == pytest.approx(loss, rel=1e-5)
    assert result["accuracy"][2] == pytest.approx(accuracy)
    # beyond the ends, parameters at θ0 + α(θ1 − θ0), α = 1.5, and the buffers at the final model's
    parameters = {name for name, _ in model.named_parameters()}
    beyond = {name: init[name] + 1.5 * (final[name] - init[name]) if name in parameters else final[name]
              for name in init}
    assert result["loss"][4] == pytest.approx(reference(model, beyond, x, y)[0], rel=1e-4)


@pytest.mark.parametrize("make", MODELS)
def test_vmapped_groups_give_the_same_numbers(make):
    model, init, final, x, y = trained(make)
    one = line(model, init, final, x, y, points=5, stretch=0.25, group=1)
    grouped = line(model, init, final, x, y, points=5, stretch=0.25, group=3)
    np.testing.assert_allclose(grouped["loss"], one["loss"], rtol=1e-5)
    np.testing.assert_array_equal(grouped["accuracy"], one["accuracy"])
    one = plane(model, final, x, y, resolution=3, seed=0, group=1)
    grouped = plane(model, final, x, y, resolution=3, seed=0, group=4)
    np.testing.assert_allclose(grouped["loss"], one["loss"], rtol=1e-5)


def test_alpha_grid_holds_both_ends_exactly():
    assert len(line_alphas()) == 31  # the default spacing already falls on 0 and 1
    for points, stretch in ((31, 0.25), (7, 0.5), (10, 0.3), (2, 0.0), (50, 0.1)):
        alpha = line_alphas(points, stretch)
        assert 0.0 in alpha and 1.0 in alpha
        assert alpha[0] == pytest.approx(-stretch) and alpha[-1] == pytest.approx(1 + stretch)
        assert points <= len(alpha) <= points + 2 and np.all(np.diff(alpha) > 0)
        assert line_passes(100, points, stretch) == 100 * len(alpha)
    assert plane_axis(5, 2.0)[2] == 0.0 and plane_passes(100, 5) == 2500
    with pytest.raises(ValueError):
        line_alphas(1, 0.25)


@pytest.mark.parametrize("make", MODELS)
def test_plane_directions_are_filter_normalized_and_ignore_biases_and_batch_norm(make):
    model, _, final, _, _ = trained(make)
    first, second = directions(model, final, seed=3)
    assert set(first) == set(second) == {name for name, _ in model.named_parameters()}
    for name, p in model.named_parameters():
        for d in (first[name], second[name]):
            assert d.shape == p.shape
            if p.dim() <= 1:
                assert torch.count_nonzero(d) == 0, name
                continue
            for i in range(len(p)):
                assert torch.allclose(d[i].norm(), final[name][i].norm(), rtol=1e-5), (name, i)
    moving = [name for name, p in model.named_parameters() if p.dim() > 1]
    assert not any(torch.allclose(first[name], second[name]) for name in moving)


@pytest.mark.parametrize("make", MODELS)
def test_plane_is_seeded(make):
    model, _, final, x, y = trained(make)
    a = plane(model, final, x, y, resolution=3, seed=5)
    b = plane(model, final, x, y, resolution=3, seed=5)
    c = plane(model, final, x, y, resolution=3, seed=6)
    np.testing.assert_array_equal(a["loss"], b["loss"])
    assert not np.allclose(a["loss"], c["loss"])
    same, other = directions(model, final, 5), directions(model, final, 6)
    for name, d in directions(model, final, 5)[0].items():
        assert torch.equal(d, same[0][name])
        if d.dim() > 1:
            assert not torch.allclose(d, other[0][name])
    assert a["attrs"]["seed"] == 5


@pytest.mark.parametrize("make", MODELS)
def test_plane_centre_is_the_final_model_and_points_are_where_the_axes_say(make):
    model, _, final, x, y = trained(make)
    result = plane(model, final, x, y, resolution=5, span=0.5, seed=2, batch=7)
    a, b = result["a"], result["b"]
    assert result["loss"].shape == result["accuracy"].shape == (5, 5)
    assert a[2] == b[2] == 0.0 and a[0] == -0.5 and a[-1] == 0.5
    loss, accuracy = reference(model, final, x, y)
    assert result["loss"][2, 2] == pytest.approx(loss, rel=1e-5)
    assert result["accuracy"][2, 2] == pytest.approx(accuracy)
    first, second = directions(model, final, seed=2)
    moved = {name: t + a[0] * first[name] + b[3] * second[name] if name in first else t
             for name, t in final.items()}
    assert result["loss"][0, 3] == pytest.approx(reference(model, moved, x, y)[0], rel=1e-5)
    assert result["loss"][0, 3] != pytest.approx(result["loss"][3, 0], rel=1e-3)


def test_subset_is_seeded_and_the_measures_draw():
    x, y = torch.randn(50, 3), torch.randint(0, 2, (50,))
    index = subset(x, y, 20, seed=4)
    assert torch.equal(index, subset(x, y, 20, seed=4))
    assert not torch.equal(index, subset(x, y, 20, seed=5))
    assert len(index) == len(set(index.tolist())) == 20 and 0 <= int(index.min()) and int(index.max()) < 50
    sx, sy = measures_subset(x, y, 20, 4)
    assert torch.equal(x[index], sx) and torch.equal(y[index], sy)
    assert torch.equal(subset(x, y, 0, seed=4), torch.arange(50))
    assert torch.equal(subset(x, y, 80, seed=4), torch.arange(50))


def test_a_state_that_does_not_fit_the_model_is_refused():
    model, init, final, x, y = trained(mlp)
    broken = {name: t for name, t in final.items() if name != "2.bias"}
    with pytest.raises(ValueError, match="2.bias"):
        line(model, init, broken, x, y, points=3)
    with pytest.raises(ValueError, match="unexpected"):
        plane(model, {**final, "extra": torch.zeros(1)}, x, y, resolution=3)
