"""Batched grid training computes what sequential training computes."""

from dataclasses import replace

import numpy as np
import pytest

from audit.spec.run import RunSpec
from audit.store.files import read_run
from audit.train.batched import batchable, groups_of, train_group
from audit.train.device import Operational
from audit.train.loop import train_run

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
        assert read_run(tmp_path / f"b{i}.h5").attrs["products"] == "torch"  # stacked: below cpu_mlp's size
        for name, value in alone.final.items():
            scale = np.abs(value).max()
            assert np.abs(record.final[name] - value).max() <= 1e-4 * scale, (spec.variant, name)
        assert np.allclose(record.history["train_loss"], alone.history["train_loss"], rtol=1e-4)
        for key in ("train_top5", "test_top5"):  # the run file is the one sequential training writes
            assert 0.4 <= record.attrs[key] <= 1 and abs(record.attrs[key] - alone.attrs[key]) <= 0.01, key


# Checkpoints every 25 epochs: still several mid-run saves per run on both paths, not one per epoch (an
# HDF5 write and fsync per epoch cost about five times the training itself here).
FULL_OPS = Operational(checkpoint_every=25, checkpoint_seconds=0)
DECAYED_EPOCHS = 60  # lr 0.03 · 0.9^60 ≈ 5e-5: the decayed run has stopped moving (same outcome as at 300)


@pytest.fixture
def one_thread():
    """An MLP of width 64 on 400 images gains nothing from intra-op threads, and on a shared 2-core machine two
    threads spin against each other (this test: about 500 s with two, 45 s with one, at load 4-6); restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_full_training_gives_the_same_outcomes(tmp_path, one_thread):
    specs = [replace(s, epochs=DECAYED_EPOCHS) if s.lr_decay != 1.0 else s for s in small_grid(epochs=300)]
    assert len(groups_of(specs)) == 1  # its own epoch budget, in the same group
    batched = train_group(specs, [tmp_path / f"b{i}.h5" for i in range(len(specs))], FULL_OPS)
    for i, (spec, record) in enumerate(zip(specs, batched)):
        alone = train_run(spec, tmp_path / f"s{i}.h5", FULL_OPS)
        assert record.fitted == alone.fitted, spec
        if alone.attrs["test_acc"] > 0.3:  # runs that generalize land within 0.02 of each other
            assert abs(record.attrs["test_acc"] - alone.attrs["test_acc"]) <= 0.02, spec
        else:  # chance-level runs: two chaotic trajectories draw independent chance accuracies
            assert record.attrs["test_acc"] < 0.2 and alone.attrs["test_acc"] < 0.2, spec
        assert read_run(tmp_path / f"b{i}.h5").status == "complete"
    # runs left the batch as they fitted: true labels stop long before random labels
    epochs = {spec.variant: record.attrs["epochs"] for spec, record in zip(specs, batched) if spec.seed == 0}
    assert epochs["true"] < epochs["random-labels"]
    decayed = batched[-1]  # trains out its own budget inside the group, unfitted, as it does alone
    assert decayed.attrs["epochs"] == DECAYED_EPOCHS and not decayed.fitted


def test_runs_leaving_the_group_leave_the_others_bitwise_as_alone(tmp_path):
    """The epoch's working copies of the active runs are gathered anew whenever runs leave: the runs left train
    on bitwise as they do in a group of their own."""
    specs = small_grid(epochs=4, fit_target=1.0)[:5]
    specs = [replace(spec, epochs=1 + i % 3) for i, spec in enumerate(specs)]  # leave after 1, 2 and 3 epochs
    whole = train_group(specs, [tmp_path / f"w{i}.h5" for i in range(len(specs))], OPS)
    assert [record.attrs["epochs"] for record in whole] == [1, 2, 3, 1, 2]
    for i in (2, 4):
        alone = train_group([specs[i]], [tmp_path / f"a{i}.h5"], OPS)[0]
        for name, value in alone.final.items():
            assert np.array_equal(whole[i].final[name], value), (i, name)
        assert np.array_equal(whole[i].history["train_loss"], alone.history["train_loss"]), i


def interrupted_after_epoch_2(specs, paths):
    """Train the group until its epoch-2 callback, which raises (as a kill would stop it there)."""

    class Kill(Exception):
        pass

    def stop_at_2(epoch, epochs, acc):
        if epoch == 2:
            raise Kill

    with pytest.raises(Kill):
        train_group(specs, paths, OPS, on_epoch=stop_at_2)


def test_a_run_checkpointed_in_a_group_resumes_alone(tmp_path):
    specs = small_grid(epochs=4)[:3]
    paths = [tmp_path / f"b{i}.h5" for i in range(3)]
    interrupted_after_epoch_2(specs, paths)
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

    from audit.train.batched import sgd_state

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


def test_stacked_mlp_step_is_torch_sgd_on_autograd_gradients(seed):
    """Three runs with their own hyperparameters: one fused step equals, run by run, torch.optim.SGD on the
    gradients that autograd computes for the nn.Module."""
    import torch

    from audit.models.zoo import mlp
    from audit.train import stacked_mlp

    hyper = [(0.1, 0.9, 0.0), (0.05, 0.0, 1e-2), (0.2, 0.5, 1e-3)]  # lr, momentum, weight decay
    models = [mlp((2, 3, 3), 4, depth=2, width=7) for _ in hyper]
    x, y = torch.randn(3, 5, 2, 3, 3), torch.randint(0, 4, (3, 5))
    names = stacked_mlp.linear_names(models[0])
    assert names == ["1", "3", "5"]
    layers = [(torch.stack([m.get_submodule(n).weight.detach() for m in models]).clone(),
               torch.stack([m.get_submodule(n).bias.detach() for m in models]).clone()) for n in names]
    momenta = [(torch.zeros_like(w), torch.zeros_like(b)) for w, b in layers]
    optimizers = [torch.optim.SGD(m.parameters(), lr=lr, momentum=mu, weight_decay=wd) for m, (lr, mu, wd) in
                  zip(models, hyper)]
    per_run = [torch.tensor(column) for column in zip(*hyper)]
    for _ in range(3):  # momentum buffers carry over between steps
        losses = stacked_mlp.sgd_step(layers, momenta, x, y, *per_run)
        for r, (model, optimizer) in enumerate(zip(models, optimizers)):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[r]), y[r])
            loss.backward()
            optimizer.step()
            assert abs(losses[r].item() - loss.item()) < 1e-6
    for number, name in enumerate(names):
        for r, model in enumerate(models):
            torch.testing.assert_close(layers[number][0][r], model.get_submodule(name).weight.detach())
            torch.testing.assert_close(layers[number][1][r], model.get_submodule(name).bias.detach())


@pytest.mark.parametrize("runs, part", [(7, 3), (5, 2), (4, 4), (6, 5)])
def test_a_step_in_parts_is_bitwise_the_step_of_the_whole_group(runs, part):
    """sgd_step_in_parts (parts of the group that stay in cache, a last run never alone) leaves every run's
    weights, momenta and loss bitwise where sgd_step on the whole group does, over several steps."""
    import torch

    from audit.train import stacked_mlp

    generator = torch.Generator().manual_seed(runs * 10 + part)
    shapes = [(16, 12), (10, 16)]
    layers = [(torch.randn(runs, o, i, generator=generator), torch.randn(runs, o, generator=generator))
              for o, i in shapes]
    momenta = [(torch.zeros_like(w), torch.zeros_like(b)) for w, b in layers]
    twin = [(w.clone(), b.clone()) for w, b in layers]
    twin_momenta = [(w.clone(), b.clone()) for w, b in momenta]
    lr = torch.rand(runs, generator=generator) / 5
    for _ in range(3):
        x, y = torch.randn(runs, 9, 12, generator=generator), torch.randint(0, 10, (runs, 9), generator=generator)
        whole = stacked_mlp.sgd_step(layers, momenta, x, y, lr, 0.9, 1e-3)
        parted = stacked_mlp.sgd_step_in_parts(twin, twin_momenta, x, y, lr, 0.9, 1e-3, part)
        assert torch.equal(whole, parted)
    for (w, b), (w2, b2) in zip(layers + momenta, twin + twin_momenta):
        assert torch.equal(w, w2) and torch.equal(b, b2)


@pytest.mark.parametrize("threads, budget, expected", [(2, 5, 4), (2, 6, 6), (2, 1, 2), (4, 5, 4), (4, 9, 8),
                                                       (4, 2, 4), (1, 5, 5), (3, 7, 6)])
def test_a_step_part_is_a_multiple_of_the_thread_count(monkeypatch, threads, budget, expected):
    """runs_per_part: as many runs as the budget holds (here `budget` runs' activations), rounded down to a
    multiple of the threads and at least max(2, threads): a part of 5 on 2 threads idles one for its last run."""
    import torch

    from audit.train import stacked_mlp

    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    layers = [(torch.zeros(1, 30, 20), torch.zeros(1, 30)), (torch.zeros(1, 10, 30), torch.zeros(1, 10))]
    per_run = 8 * 30 * 4  # a batch of 8 × the widest layer (30), fp32
    assert stacked_mlp.runs_per_part(layers, 8, budget * per_run + per_run // 2) == expected


def test_stacked_mlp_forward_and_which_models_qualify():
    import torch
    from torch import nn

    from audit.models.registry import build_model
    from audit.models.zoo import mlp
    from audit.train import stacked_mlp

    torch.manual_seed(1)
    models = [mlp((1, 4, 4), 3, depth=1, width=6) for _ in range(2)]
    layers = [(torch.stack([m[i].weight for m in models]), torch.stack([m[i].bias for m in models])) for i in (1, 3)]
    x = torch.randn(8, 1, 4, 4)
    with torch.no_grad():
        expected = torch.stack([m(x) for m in models])
        torch.testing.assert_close(stacked_mlp.forward(layers, x.expand(2, *x.shape)), expected)
    assert stacked_mlp.linear_names(mlp((1, 4, 4), 3, depth=1, width=6, dropout=0.5)) is None
    assert stacked_mlp.linear_names(build_model("alexnet-small", (1, 8, 8), 10)) is None
    assert stacked_mlp.linear_names(nn.Sequential(nn.Flatten(), nn.Linear(4, 3, bias=False))) is None
    assert stacked_mlp.linear_names(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))) is None
    assert stacked_mlp.linear_names(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU())) is None


def test_a_conv_group_trains_through_vmap_like_sequential_training(tmp_path):
    """Models other than plain MLPs take the vmapped functional_call path."""
    specs = [RunSpec(model="alexnet-small", train_size=64, epochs=2, fit_target=1.0, seed=seed, lr=0.01,
                     variant=variant, corrupt=p) for seed, (variant, p) in enumerate((("true", 0.0), ("gaussian", None)))]
    batched = train_group(specs, [tmp_path / f"b{i}.h5" for i in range(2)], OPS)
    for i, (spec, record) in enumerate(zip(specs, batched)):
        alone = train_run(spec, tmp_path / f"s{i}.h5", OPS)
        for name, value in alone.final.items():
            assert np.abs(record.final[name] - value).max() <= 1e-4 * np.abs(value).max(), name


def test_batched_and_run_by_run_audits_give_the_same_verdicts(tmp_path):
    import json

    from typer.testing import CliRunner

    from cli import app

    runner = CliRunner()
    args = ["run", "--model", "mlp-1x64", "--train-size", "300", "--variants", "true,corrupt:0.5,random-labels",
            "--seeds", "3", "--epochs", "150", "--json"]
    for name in ("params", "l2", "spectral", "l2-margin", "path-l2"):
        args += ["--measure", name]
    documents = {}
    for mode, extra in (("batched", []), ("alone", ["--no-batch"])):
        result = runner.invoke(app, [*args, *extra, "--out", str(tmp_path / mode)])
        assert result.exit_code == 0, result.stderr
        documents[mode] = json.loads(result.stdout)
    verdicts = {mode: {row["measure"]: row["verdict"] for row in doc["summary"]} for mode, doc in documents.items()}
    assert verdicts["batched"] == verdicts["alone"]
    assert verdicts["batched"]["params"] == "fails" and verdicts["batched"]["l2-margin"] == "distinguishes"
    for batched, alone in zip(documents["batched"]["runs"], documents["alone"]["runs"]):
        assert batched["run_id"] == alone["run_id"] and batched["fitted"] == alone["fitted"]


def test_a_run_that_diverges_leaves_the_group_without_touching_the_others(tmp_path):
    specs = [RunSpec(model="mlp-1x64", train_size=400, epochs=4, fit_target=1.0, lr=1e6, momentum=0.0),
             RunSpec(model="mlp-1x64", train_size=400, epochs=4, fit_target=1.0, seed=1)]
    batched = train_group(specs, [tmp_path / f"b{i}.h5" for i in range(2)], OPS)
    assert batched[0].status == "diverged" and read_run(tmp_path / "b0.h5").status == "diverged"
    alone = train_run(specs[1], tmp_path / "s.h5", OPS)
    assert batched[1].status == "complete" and batched[1].attrs["epochs"] == 4
    for name, value in alone.final.items():
        assert np.abs(batched[1].final[name] - value).max() <= 1e-4 * np.abs(value).max(), name
