"""Properties every registered measure must have, checked over the whole registry."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import measures
from audit.data.fitted import build_run_data
from audit.models.registry import build_model
from audit.pipeline.score import context_for
from audit.spec.run import RunSpec, derive_seed
from audit.store.files import read_run
from audit.train.device import Operational
from audit.train.loop import train_run
from measures.layers import prepare

FAST = {"samples": 256, "draws": 4, "steps": 5, "probes": 8, "iterations": 12}


def fast_settings(name):
    return {k: v for k, v in FAST.items() if k in measures.get(name).settings}


@pytest.fixture(scope="module")
def run_path(tmp_path_factory):
    spec = RunSpec(model="mlp-1x32", train_size=100, epochs=60, lr=0.1)
    path = tmp_path_factory.mktemp("store") / "runs" / f"{spec.run_id}.h5"
    path.parent.mkdir()
    record = train_run(spec, path)
    assert record.fitted
    return path


NAMES = measures.names()


def test_the_catalogue_has_at_least_40_measures_across_the_families():
    assert len(NAMES) >= 40
    families = {measures.get(n).family for n in NAMES}
    assert families >= {"count", "norm", "spectral", "path", "margin", "margin-normalized", "sharpness", "flatness",
                        "pac-bayes", "curvature", "information", "spectra", "capacity", "optimization", "sensitivity"}


@pytest.mark.parametrize("name", NAMES)
def test_metadata_is_complete(name):
    meta = measures.get(name).metadata()
    assert meta["family"] in measures.FAMILIES
    assert meta["needs"] and set(meta["needs"]) <= set(measures.NEEDS)
    assert meta["cost"] in measures.COSTS and meta["version"] >= 1
    assert meta["reference"].strip() and meta["formula"].strip()
    assert isinstance(meta["settings"], dict) and isinstance(meta["invariant"], bool)


@pytest.fixture(scope="module")
def two_contexts(run_path):
    record = read_run(run_path)
    return context_for(record, Operational(device="cpu")), context_for(record, Operational(device="cpu"))


@pytest.mark.parametrize("name", NAMES)
def test_every_measure_is_finite_and_deterministic_on_a_fitted_run(two_contexts, name):
    first, second = two_contexts
    a = measures.evaluate(first, name, fast_settings(name))
    b = measures.evaluate(second, name, fast_settings(name))
    if name == "rkhs-norm":  # a property of kernel runs, stored when they are fitted
        assert a.value is None and not a.failed and "kernel runs" in a.reason
        return
    assert a.value is not None and math.isfinite(a.value), f"{name}: {a.reason}"
    assert a.value == b.value, name


def rescaled(model, c=3.0):
    """Layer 1 (weights and bias) × c, layer 2 weights ÷ c: the same function."""
    out = copy.deepcopy(model)
    linears = [m for m in out.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        linears[0].weight.mul_(c)
        linears[0].bias.mul_(c)
        linears[1].weight.div_(c)
    return out


INVARIANT = [n for n in NAMES if measures.get(n).invariant and not {"history", "procedure"} & set(measures.get(n).needs)]


@pytest.fixture(scope="module")
def original_and_rescaled():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # module-scoped, so not the function-scoped `seed` fixture; restored on exit
        data = build_run_data(RunSpec(train_size=100))
        model = build_model("mlp-2x16", data.input_shape, 10, seed=1)
        init = build_model("mlp-2x16", data.input_shape, 10, seed=2)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for _ in range(150):
            optimizer.zero_grad()
            F.cross_entropy(model(data.x_train), data.y_train).backward()
            optimizer.step()
    device = torch.device("cpu")

    def ctx(m):
        return measures.Context(model=prepare(m, device), init=prepare(init, device), x=data.x_train,
                                y=data.y_train, raw_model=m)

    original, scaled = ctx(model), ctx(rescaled(model))
    with torch.no_grad():
        assert torch.allclose(original.model(data.x_train), scaled.model(data.x_train), atol=1e-4)
    return original, scaled


def test_enough_measures_are_declared_invariant_and_l2_is_not(original_and_rescaled):
    original, scaled = original_and_rescaled
    assert len(INVARIANT) >= 15
    assert measures.evaluate(scaled, "l2").value != pytest.approx(measures.evaluate(original, "l2").value, rel=1e-3)


@pytest.mark.parametrize("name", INVARIANT)
def test_measures_declared_invariant_to_relu_rescaling_are(original_and_rescaled, name):
    original, scaled = original_and_rescaled
    a = measures.evaluate(original, name, fast_settings(name)).value
    b = measures.evaluate(scaled, name, fast_settings(name)).value
    assert b == pytest.approx(a, rel=1e-4, abs=1e-6), name


def test_first_epoch_loss_equals_the_losses_of_an_explicit_first_epoch(run_path):
    record = read_run(run_path)
    spec = record.spec
    data = build_run_data(spec)
    model = build_model(spec.model, data.input_shape, 10)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in record.init.items()})
    optimizer = torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum)
    perm = torch.randperm(100, generator=torch.Generator().manual_seed(derive_seed(spec.seed, "order")))
    total = 0.0
    for start in range(0, 100, spec.batch_size):
        index = perm[start:start + spec.batch_size]
        loss = F.cross_entropy(model(data.x_train[index]), data.y_train[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item()
    ctx = context_for(record, Operational(device="cpu"))
    assert measures.evaluate(ctx, "first-epoch-loss").value == pytest.approx(total, rel=1e-5)


def test_rademacher_known_outcomes_and_cache_shared_across_labels(tmp_path, monkeypatch):
    import audit.pipeline.score

    calls = []
    original = audit.pipeline.score.fit_labels_group
    monkeypatch.setattr(audit.pipeline.score, "fit_labels_group",
                        lambda spec, jobs: calls.append(len(jobs)) or original(spec, jobs))
    (tmp_path / "runs").mkdir()
    values = {}
    for variant, p in (("true", 0.0), ("random-labels", 1.0)):
        spec = RunSpec(model="mlp-1x512", train_size=100, epochs=200, variant=variant, corrupt=p)
        path = tmp_path / "runs" / f"{spec.run_id}.h5"
        record = train_run(spec, path)
        values[variant] = measures.evaluate(context_for(record, Operational()), "rademacher", {"draws": 2}).value
    assert values["true"] == values["random-labels"] == 1.0  # a wide MLP fits any ±1 labelling of 100 points
    assert calls == [2]  # both draws refitted together; the second run, same inputs, read the cached value
    assert len(list((tmp_path / "cache" / "rademacher").glob("*.json"))) == 1
    weak = RunSpec(model="mlp-1x512", train_size=100, epochs=1, lr=1e-6)
    record = train_run(weak, tmp_path / "runs" / f"{weak.run_id}.h5")
    value = measures.evaluate(context_for(record, Operational()), "rademacher", {"draws": 4}).value
    assert abs(value) < 0.3  # a procedure that cannot fit gives about 2·(1/2) − 1 = 0
