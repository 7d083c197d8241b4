"""Run-by-run oneDNN training of plain MLPs on the CPU (audit/train/cpu_mlp.py): PyTorch's SGD on autograd's
gradients, each run independent of its group, and the rule that picks the path."""

import numpy as np
import pytest
import torch

from audit.models.zoo import mlp
from audit.store.files import read_run
from audit.train import cpu_mlp, stacked_mlp
from audit.train.batched import train_group
from audit.train.device import Operational
from audit.train.loop import train_run
from tests.train.test_batched import interrupted_after_epoch_2, small_grid

OPS = Operational(checkpoint_seconds=0)
needs_onednn = pytest.mark.skipif(not cpu_mlp.available(), reason="this PyTorch build has no oneDNN")


@pytest.fixture
def run_by_run(monkeypatch):
    """The digits MLPs of these tests are below the rules' sizes: train and evaluate run by run whatever the size."""
    monkeypatch.setattr(cpu_mlp, "PER_RUN_MACS", 0)
    monkeypatch.setattr(cpu_mlp, "EVAL_PER_RUN_MACS", 0)


def stacked_layers(models, names):
    return [(torch.stack([m.get_submodule(n).weight.detach() for m in models]).clone(),
             torch.stack([m.get_submodule(n).bias.detach() for m in models]).clone()) for n in names]


@needs_onednn
@pytest.mark.parametrize("lr, momentum, weight_decay", [(0.1, 0.9, 0.0), (0.05, 0.0, 1e-2), (0.2, 0.5, 1e-3)])
def test_a_step_is_torch_sgd_on_autograd_gradients(lr, momentum, weight_decay):
    torch.manual_seed(3)
    model = mlp((2, 3, 3), 4, depth=2, width=7)
    names = stacked_mlp.linear_names(model)
    layers = [(w[0], b[0]) for w, b in stacked_layers([model], names)]
    momenta = [(torch.zeros_like(w), torch.zeros_like(b)) for w, b in layers]
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    for _ in range(3):  # momentum buffers carry over between steps
        x, y = torch.randn(5, 2, 3, 3), torch.randint(0, 4, (5,))
        loss = cpu_mlp.sgd_step(layers, momenta, x, y, lr, momentum, weight_decay)
        optimizer.zero_grad()
        expected = torch.nn.functional.cross_entropy(model(x), y)
        expected.backward()
        optimizer.step()
        assert abs(loss.item() - expected.item()) < 1e-6
    for (weight, bias), name in zip(layers, names):
        torch.testing.assert_close(weight, model.get_submodule(name).weight.detach())
        torch.testing.assert_close(bias, model.get_submodule(name).bias.detach())


@needs_onednn
def test_forward_is_each_runs_module():
    torch.manual_seed(1)
    models = [mlp((1, 4, 4), 3, depth=2, width=6) for _ in range(3)]
    layers = stacked_layers(models, stacked_mlp.linear_names(models[0]))
    x = torch.randn(3, 8, 1, 4, 4)
    with torch.no_grad():
        expected = torch.stack([model(x[r]) for r, model in enumerate(models)])
    torch.testing.assert_close(cpu_mlp.forward(layers, x), expected)


def test_the_rule_reads_the_device_and_the_layer_shapes():
    def layers(inputs, width=512, classes=10):
        return [(torch.zeros(2, width, inputs), torch.zeros(2, width)), (torch.zeros(2, classes, width), torch.zeros(2, classes))]

    cpu = torch.device("cpu")
    assert cpu_mlp.applies(layers(784), cpu) == cpu_mlp.available()  # mlp-1x512 on 28×28 images: 406k
    assert not cpu_mlp.applies(layers(64), cpu)  # on 8×8 digits: 38k, stacked products
    assert not cpu_mlp.applies(layers(256), cpu)  # 16×16: 136k
    assert not cpu_mlp.applies(layers(784), torch.device("cuda"))
    assert cpu_mlp.evaluates(layers(784), cpu) == cpu_mlp.available()  # the evaluation's rule: from 2^15 on
    assert cpu_mlp.evaluates(layers(64), cpu) == cpu_mlp.available()  # the quick grid's digits MLP: 38k
    assert not cpu_mlp.evaluates(layers(64, width=256), cpu)  # 19k: stacked products
    assert not cpu_mlp.evaluates(layers(784), torch.device("cuda"))


@needs_onednn
def test_stacked_training_with_run_by_run_evaluation(tmp_path, monkeypatch):
    """Below the training rule's size and from the evaluation's: stacked steps, each run's own oneDNN forward
    passes in the evaluation, recorded as such. A run's history is bitwise the same in its group and alone, and
    agrees with the stacked evaluation of the same weights to float rounding (accuracies exactly)."""
    specs = small_grid(epochs=2, fit_target=1.0)
    stacked = train_group(specs, [tmp_path / f"s{i}.h5" for i in range(len(specs))], OPS)
    assert stacked[0].attrs["products"] == "torch"
    monkeypatch.setattr(cpu_mlp, "EVAL_PER_RUN_MACS", 0)
    whole = train_group(specs, [tmp_path / f"w{i}.h5" for i in range(len(specs))], OPS)
    assert read_run(tmp_path / "w0.h5").attrs["products"] == "torch, evaluation onednn"
    for i in (0, 3):  # true labels; gaussian inputs, a slot of their own
        alone = train_group([specs[i]], [tmp_path / f"a{i}.h5"], OPS)[0]
        for key, values in alone.history.items():
            if key != "seconds":
                assert np.array_equal(whole[i].history[key], values), (i, key)
    for ours, theirs in zip(whole, stacked):
        for name, value in theirs.final.items():  # the evaluation never touches the weights
            assert np.array_equal(ours.final[name], value), name
        for key in ("train_acc", "test_acc"):
            assert np.array_equal(ours.history[key], theirs.history[key]), key
        for key in ("train_loss", "test_loss"):
            assert np.allclose(ours.history[key], theirs.history[key], rtol=1e-5), key


@needs_onednn
def test_a_run_trains_bitwise_the_same_in_any_group(tmp_path, run_by_run):
    """Each run's weights and history (all but wall-clock seconds) equal those it gets trained alone."""
    specs = small_grid(epochs=2, fit_target=1.0)
    whole = train_group(specs, [tmp_path / f"w{i}.h5" for i in range(len(specs))], OPS)
    assert read_run(tmp_path / "w0.h5").attrs["trainer"] == "batched"
    assert read_run(tmp_path / "w0.h5").attrs["products"] == "onednn"
    for i in (0, 3, len(specs) - 1):  # true labels, gaussian inputs, per-run hyperparameters
        alone = train_group([specs[i]], [tmp_path / f"a{i}.h5"], OPS)[0]
        for name, value in alone.final.items():
            assert np.array_equal(whole[i].final[name], value), (i, name)
        for key, values in alone.history.items():
            if key != "seconds":
                assert np.array_equal(whole[i].history[key], values), (i, key)


@needs_onednn
def test_weights_after_three_epochs_match_sequential_training(tmp_path, run_by_run):
    specs = small_grid(epochs=3, fit_target=1.0)
    batched = train_group(specs, [tmp_path / f"b{i}.h5" for i in range(len(specs))], OPS)
    for i, (spec, record) in enumerate(zip(specs, batched)):
        alone = train_run(spec, tmp_path / f"s{i}.h5", OPS)
        assert record.attrs["epochs"] == alone.attrs["epochs"] == 3
        for name, value in alone.final.items():
            assert np.abs(record.final[name] - value).max() <= 1e-4 * np.abs(value).max(), (spec.variant, name)
        assert np.allclose(record.history["train_loss"], alone.history["train_loss"], rtol=1e-4)
        assert np.allclose(record.history["test_acc"], alone.history["test_acc"], atol=2 / 400)


@needs_onednn
def test_a_run_checkpointed_run_by_run_resumes_bitwise(tmp_path, run_by_run):
    """Stopped after epoch 2 of 4 and resumed in a group of its own: bitwise the run trained straight through."""
    specs = small_grid(epochs=4, fit_target=1.0)[:3]
    paths = [tmp_path / f"b{i}.h5" for i in range(3)]
    interrupted_after_epoch_2(specs, paths)
    assert read_run(paths[2]).status == "running" and read_run(paths[2]).attrs["epochs"] == 2
    resumed = train_group([specs[2]], [paths[2]], OPS)[0]
    straight = train_group([specs[2]], [tmp_path / "c.h5"], OPS)[0]
    assert resumed.attrs["epochs"] == 4 and resumed.attrs["resumed"] == 1
    for name, value in straight.final.items():
        assert np.array_equal(resumed.final[name], value), name
