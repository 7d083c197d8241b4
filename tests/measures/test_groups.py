"""Measures computed on a group of runs at once give each run exactly the value it gets alone."""

import copy
import math
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import measures
from audit.pipeline import score
from audit.store.directory import open_store
from audit.store.files import read_run
from measures import flatness

GROUPED = ["pacbayes-flatness", "pacbayes-mag-flatness", "pacbayes-init", "pacbayes-orig", "pacbayes-mag-init",
           "pacbayes-mag-orig"]


def fitted(seed: int, width: int, flatten: bool = True):
    """A small MLP fitted on its own 80 synthetic points (labels from a random linear map), with its init."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(80, 1, 2, 4, generator=generator)
    y = (x.flatten(1) @ torch.randn(8, 3, generator=generator)).argmax(1)
    torch.manual_seed(seed)
    layers = [nn.Linear(8, width), nn.ReLU(), nn.Linear(width, 3)]
    model = nn.Sequential(nn.Flatten(), *layers) if flatten else nn.Sequential(*layers)
    init = copy.deepcopy(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    inputs = x if flatten else x.flatten(1)
    for _ in range(150):
        optimizer.zero_grad()
        F.cross_entropy(model(inputs), y).backward()
        optimizer.step()
    return measures.Context(model=model.eval(), init=init.eval(), x=inputs, y=y)


@pytest.fixture(scope="module")
def runs():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield [fitted(0, 16), fitted(1, 16), fitted(2, 16), fitted(3, 16, flatten=False)]
    torch.set_num_threads(threads)


def fresh(ctxs):
    return [measures.Context(model=c.model, init=c.init, x=c.x, y=c.y) for c in ctxs]


@pytest.mark.parametrize("name", GROUPED)
def test_a_group_gives_every_run_its_value_alone(runs, name):
    alone = [measures.evaluate(ctx, name).value for ctx in fresh(runs)]
    together = [r.value for r in measures.evaluate_group(fresh(runs), name)]
    reordered = [r.value for r in measures.evaluate_group(fresh(runs[::-1]), name)][::-1]
    pair = [r.value for r in measures.evaluate_group(fresh(runs[1:3]), name)]
    assert all(v is not None and math.isfinite(v) for v in alone)
    assert together == alone  # bitwise: a run's value never depends on what else is measured with it
    assert reordered == alone
    assert pair == alone[1:3]


def test_one_failing_run_does_not_take_the_group_with_it(runs):
    broken = measures.Context(model=nn.Sequential(nn.Linear(5, 3)).eval(), x=runs[0].x, y=runs[0].y)  # 8 inputs
    results = measures.evaluate_group([*fresh(runs[:2]), broken], "pacbayes-flatness")
    assert [r.value for r in results[:2]] == [measures.evaluate(c, "pacbayes-flatness").value for c in fresh(runs[:2])]
    assert results[2].value is None and results[2].failed and "RuntimeError" in results[2].reason


def test_a_run_undefined_in_a_group_keeps_its_reason(runs):
    results = measures.evaluate_group(fresh(runs[:2]), "pacbayes-flatness", {"low": 50.0, "high": 60.0})
    assert [r.value for r in results] == [None, None]
    assert all("already drops the train accuracy" in r.reason for r in results)


@pytest.mark.parametrize("magnitude_aware", [False, True])
def test_first_layer_products_equal_the_full_forward(runs, magnitude_aware, monkeypatch):
    """The noisy first layer from its kept products (xWᵀ + σ·xZᵀ) against the noisy model run whole."""
    ctx = fresh(runs[:1])[0]
    kept = flatness.start(ctx, magnitude_aware, 1e-3, draws=8, samples=0, seed=4)
    assert kept.products is not None
    whole = flatness.start(ctx, magnitude_aware, 1e-3, draws=8, samples=0, seed=4)
    whole.products, whole.rest = None, None
    for sigma in (1e-3, 0.05, 0.3, 1.0):
        assert flatness.drop(kept, sigma) == pytest.approx(flatness.drop(whole, sigma), abs=1.5 / 80 / 8)
    redrawn = flatness.start(ctx, magnitude_aware, 1e-3, draws=8, samples=0, seed=4)
    redrawn.noise, redrawn.products, redrawn.rest = None, None, None  # a model too large to keep its noise
    assert flatness.drop(redrawn, 0.3) == flatness.drop(whole, 0.3)  # the same draws, regenerated


@pytest.mark.parametrize("magnitude_aware", [False, True])
def test_the_early_decision_is_the_whole_sums_decision(runs, magnitude_aware):
    ctx = fresh(runs[2:3])[0]
    state = flatness.start(ctx, magnitude_aware, 1e-3, draws=8, samples=0, seed=1)
    for sigma in (1e-4, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0, 3.0):
        value = flatness.drop(state, sigma)
        for target in (0.0, 0.02, 0.1, 0.3, value, value - 1e-12, value + 1e-12):
            assert flatness.within(state, sigma, target) == (value <= target), (sigma, target)


def test_bisection_steps_like_the_closed_form():
    """The search on a known monotone drop finds its threshold to within the tolerance."""
    search = flatness.bisection(1e-6, 10.0, 0.1, 0.01, 30)
    sigma, tried = next(search), 1
    while True:
        try:
            sigma = search.send(sigma <= 0.0314)
            tried += 1
        except StopIteration as done:
            found = done.value
            break
    assert 0.0314 / 1.01 <= found <= 0.0314
    assert tried == 2 + math.ceil(math.log2(math.log(1e7) / math.log(1.01)))


def test_a_store_scored_in_groups_equals_it_scored_run_by_run(small_store, tmp_path, monkeypatch):
    names = ["pacbayes-flatness", "pacbayes-mag-init", "sharpness", "margin"]
    planned = [(p, read_run(p, weights=False), names) for p in open_store(small_store).run_paths()]
    assert score.scoring_groups(planned) == [[0, 1, 2, 3, 4, 5]]  # one architecture: one group
    stores = {}
    for label, size in (("grouped", score.GROUP_RUNS), ("alone", 1)):
        root = tmp_path / label
        shutil.copytree(small_store, root)
        monkeypatch.setattr(score, "GROUP_RUNS", size)
        outcome = score.score_store(open_store(root), names, recompute=True)
        assert not outcome.errors
        stores[label] = {p.stem: {n: read_run(p).measures[n]["value"] for n in names}
                         for p in open_store(root).run_paths()}
    assert len(stores["alone"]) == 6 and stores["grouped"] == stores["alone"]
