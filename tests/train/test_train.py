import numpy as np
import pytest

from audit.spec.run import RunSpec
from audit.store.files import read_run
from audit.train.device import Operational
from audit.train.loop import train_run


def test_random_labels_are_fitted_and_test_accuracy_is_chance(tmp_path):
    spec = RunSpec(variant="random-labels", corrupt=1.0)
    record = train_run(spec, tmp_path / "r.h5")
    assert record.status == "complete" and record.fitted
    assert record.attrs["train_acc"] == 1.0
    assert record.attrs["test_acc"] < 0.2
    assert record.attrs["steps_to_fit"] == record.history["step"][-1]
    assert record.attrs["samples_seen"] == record.attrs["epochs"] * 1347


def test_true_labels_generalize(tmp_path):
    record = train_run(RunSpec(), tmp_path / "t.h5")
    assert record.fitted and record.attrs["test_acc"] > 0.9
    assert record.attrs["epochs_to_fit"] == record.attrs["epochs"]


def test_max_epochs_stops_a_run_that_is_not_fitted(tmp_path):
    record = train_run(RunSpec(variant="random-labels", corrupt=1.0, epochs=2), tmp_path / "r.h5")
    assert record.status == "complete" and not record.fitted
    assert record.attrs["steps_to_fit"] is None and record.attrs["epochs"] == 2


def test_loss_target_stops_early(tmp_path):
    record = train_run(RunSpec(loss_target=1.0, fit_target=1.0), tmp_path / "l.h5")
    assert record.status == "complete" and record.history["train_loss"][-1] <= 1.0
    assert record.attrs["epochs"] < 5


def test_nan_loss_marks_the_run_diverged(tmp_path):
    record = train_run(RunSpec(lr=1e6, momentum=0.0, epochs=20), tmp_path / "d.h5")
    assert record.status == "diverged" and not record.fitted
    assert record.attrs["diverged_epoch"] >= 1
    assert read_run(tmp_path / "d.h5").status == "diverged"


class Kill(Exception):
    pass


def test_a_run_interrupted_mid_training_resumes_to_the_same_weights(tmp_path):
    spec = RunSpec(variant="corrupt", corrupt=0.5, epochs=12, fit_target=1.0, dropout=0.1)
    straight = train_run(spec, tmp_path / "a.h5")

    def kill_at_7(epoch, epochs, acc):
        if epoch == 7:
            raise Kill

    path = tmp_path / "b.h5"
    with pytest.raises(Kill):
        train_run(spec, path, Operational(checkpoint_every=3, checkpoint_seconds=0), on_epoch=kill_at_7)
    partial = read_run(path)
    assert partial.status == "running" and partial.attrs["epochs"] == 6  # the last checkpoint
    resumed = train_run(spec, path, Operational(checkpoint_every=3, checkpoint_seconds=0))
    assert resumed.attrs["resumed"] == 1
    assert resumed.attrs["epochs"] == straight.attrs["epochs"]
    for name, value in straight.final.items():
        assert np.array_equal(value, resumed.final[name]), name
    assert np.array_equal(straight.history["train_loss"], resumed.history["train_loss"])


def test_a_complete_run_is_not_trained_again(tmp_path):
    spec = RunSpec(epochs=2)
    first = train_run(spec, tmp_path / "c.h5")
    again = train_run(spec, tmp_path / "c.h5")
    assert again.attrs["train_seconds"] == first.attrs["train_seconds"]


def test_augmentation_crops_and_flips_fresh_each_epoch_and_keeps_labels(tmp_path):
    import torch

    from audit.data.augment import make_augmenter, random_crops
    from audit.data.preprocess import centre_crop, whiten_per_image

    images = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32)
    crops = random_crops(images, 28, torch.Generator().manual_seed(0))
    for i in range(2):  # every crop is a contiguous window of its own image, channels together
        found = [(t, l) for t in range(5) for l in range(5) if torch.equal(images[i, :, t:t + 28, l:l + 28], crops[i])]
        assert len(found) == 1
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))  # a ramp whitens alike anywhere
    generator = torch.Generator().manual_seed(1)
    paper = make_augmenter("crop", "paper", images, 28, generator)
    first, second = paper(torch.tensor([0, 1])), paper(torch.tensor([0, 1]))
    assert first.shape == (2, 3, 28, 28) and not torch.equal(first, second)  # a fresh crop every call
    assert torch.allclose(first.reshape(2, -1).mean(1), torch.zeros(2), atol=1e-4)  # whitened after cropping
    flips = make_augmenter("flip", "paper", images, 28, torch.Generator().manual_seed(2))
    centre = whiten_per_image(centre_crop(images, 28))
    outs = [flips(torch.tensor([0]))[0] for _ in range(20)]
    assert any(torch.allclose(o, centre[0], atol=1e-5) for o in outs)
    assert any(torch.allclose(o, centre[0].flip(-1), atol=1e-5) for o in outs)


def test_an_augmented_run_measures_train_accuracy_unaugmented(tmp_path):
    from audit.data.fitted import build_run_data
    from audit.train.evaluate import evaluate
    from audit.train.state import load_arrays, make_model

    spec = RunSpec(augment="crop+flip", epochs=3, model="mlp-1x64")
    record = train_run(spec, tmp_path / "a.h5")
    data = build_run_data(spec)
    model = make_model(spec, data)
    load_arrays(model, record.final)
    assert evaluate(model, data.x_train, data.y_train)[1] == pytest.approx(record.attrs["train_acc"])
    plain = train_run(RunSpec(epochs=3, model="mlp-1x64"), tmp_path / "b.h5")
    assert not np.array_equal(plain.final["1.weight"], record.final["1.weight"])


def test_bf16_autocast_path_trains_a_conv_model(tmp_path):
    """The GPU path's precision switch, exercised on the CPU (bf16 autocast exists there too)."""
    spec = RunSpec(model="alexnet-small", train_size=100, epochs=2, lr=0.01)
    record = train_run(spec, tmp_path / "a.h5", Operational(precision="bf16"))
    assert record.status == "complete" and np.isfinite(record.history["train_loss"]).all()
    with pytest.raises(Exception, match="precision"):
        train_run(RunSpec(epochs=1), tmp_path / "b.h5", Operational(precision="fp16"))
