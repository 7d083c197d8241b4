"""Batched grid training computes what sequential training computes."""

import dataclasses

import numpy as np
import pytest

from audit.batched import batchable, groups_of, train_group
from audit.spec import RunSpec
from audit.store import read_run
from audit.train import Operational, train_run

OPS = Operational(checkpoint_seconds=0)


def small_grid(epochs, **extra):
    base = dict(model="mlp-1x64", train_size=400, epochs=epochs, **extra)
    specs = []
    for seed in range(2):
        for variant, p in (("true", 0.0), ("corrupt", 0.5), ("random-labels", 1.0), ("gaussian", None)):
            specs.append(RunSpec(variant=variant, corrupt=p, seed=seed, **base))
    # per-run hyperparameters inside one group
    specs.append(RunSpec(variant="true", corrupt=0.0, seed=5, lr=0.03, momentum=0.5, weight_decay=1e-3,
                         lr_decay=0.9, **base))
    return specs


def test_weights_after_three_epochs_match_sequential_training(tmp_path):
    specs = small_grid(epochs=3, fit_target=1.0)
    assert len(groups_of(specs)) == 1
    batched = train_group(specs, [tmp_path / f"b{i}.h5" for i in range(len(specs))], OPS)
    for i, (spec, record) in enumerate(zip(specs, batched)):
        alone = train_run(spec, tmp_path / f"s{i}.h5", OPS)
        assert record.attrs["epochs"] == alone.attrs["epochs"] == 3
        for name, value in alone.final.items():
            scale = np.abs(value).max()
            assert np.abs(record.final[name] - value).max() <= 1e-4 * scale, (spec.variant, name)
        assert np.allclose(record.history["train_loss"], alone.history["train_loss"], rtol=1e-4)
        for key in ("train_top5", "test_top5"):  # the run file is the one sequential training writes
            assert 0.4 <= record.attrs[key] <= 1 and abs(record.attrs[key] - alone.attrs[key]) <= 0.01, key


def test_full_training_gives_the_same_outcomes(tmp_path):
    specs = small_grid(epochs=300)
    batched = train_group(specs, [tmp_path / f"b{i}.h5" for i in range(len(specs))], OPS)
    for i, (spec, record) in enumerate(zip(specs, batched)):
        alone = train_run(spec, tmp_path / f"s{i}.h5", OPS)
        assert record.fitted == alone.fitted, spec
        if alone.attrs["test_acc"] > 0.3:  # runs that generalize land within 0.02 of each other
            assert abs(record.attrs["test_acc"] - alone.attrs["test_acc"]) <= 0.02, spec
        else:  # chance-level runs: two chaotic trajectories draw independent chance accuracies
            assert record.attrs["test_acc"] < 0.2 and alone.attrs["test_acc"] < 0.2, spec
        assert read_run(tmp_path / f"b{i}.h5").status == "complete"
    # runs left the batch as they fitted: true labels stop long before random labels
    epochs = {spec.variant: record.attrs["epochs"] for spec, record in zip(specs, batched) if spec.seed == 0}
    assert epochs["true"] < epochs["random-labels"]


def test_a_run_checkpointed_in_a_group_resumes_alone(tmp_path):
    specs = small_grid(epochs=4)[:3]
    paths = [tmp_path / f"b{i}.h5" for i in range(3)]

    class Kill(Exception):
        pass

    def stop_at_2(epoch, epochs, acc):
        if epoch == 2:
            raise Kill

    with pytest.raises(Kill):
        train_group(specs, paths, OPS, on_epoch=stop_at_2)
    assert read_run(paths[2]).status == "running" and read_run(paths[2]).attrs["epochs"] == 2
    resumed = train_run(specs[2], paths[2], OPS)
    straight = train_group([specs[2]], [tmp_path / "c.h5"], OPS)[0]
    assert resumed.attrs["epochs"] == 4 and resumed.attrs["resumed"] == 1
    for name, value in straight.final.items():
        assert np.allclose(resumed.final[name], value, rtol=1e-4, atol=1e-6)


def test_runs_that_cannot_be_batched_train_alone():
    assert not batchable(RunSpec(dropout=0.1))
    assert not batchable(RunSpec(optimizer="adam"))
    assert not batchable(RunSpec(model="inception-small"))  # batch norm
    groups = groups_of([RunSpec(seed=0), RunSpec(seed=1), RunSpec(dropout=0.1), RunSpec(batch_size=64)])
    assert sorted(len(g) for g in groups) == [1, 1, 2]


def test_a_batched_checkpoints_optimizer_state_is_the_one_torch_sgd_writes():
    import torch

    from audit.batched import sgd_state

    spec = RunSpec(dataset="digits", model="mlp-1x16", lr=0.05, momentum=0.8, weight_decay=1e-3)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    real = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.8, weight_decay=1e-3)
    model(torch.randn(5, 4)).sum().backward()
    real.step()
    names = [name for name, _ in model.named_parameters()]
    buffers = {name: real.state[p]["momentum_buffer"] for name, p in model.named_parameters()}
    ours = sgd_state(names, buffers, spec)
    theirs = real.state_dict()
    assert ours["param_groups"] == theirs["param_groups"]
    for index in theirs["state"]:
        assert torch.equal(ours["state"][index]["momentum_buffer"], theirs["state"][index]["momentum_buffer"])
    fresh = torch.optim.SGD(model.parameters(), lr=1.0)
    fresh.load_state_dict(ours)  # a run checkpointed in a group resumes alone through torch's own SGD
    assert fresh.param_groups[0]["momentum"] == 0.8
