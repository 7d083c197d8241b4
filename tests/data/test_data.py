import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from audit.data import fitted, preprocess, sources
from audit.errors import UsageError
from audit.spec.run import RunSpec


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    """An idx file as MNIST ships it: zero bytes, type 0x08 (uint8), ndim, big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)


def tiny_idx_dataset(folder: Path, compress: bool, n_train: int = 60, n_test: int = 20) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    arrays = (rng.integers(0, 256, (n_train, 28, 28)), np.arange(n_train) % 10,
              rng.integers(0, 256, (n_test, 28, 28)), np.arange(n_test) % 10)
    stems = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    for stem, array in zip(stems, arrays):
        write_idx(folder / stem, array, compress)
    return arrays


def test_digits_split_is_fixed_and_stratified():
    base = sources.load_base("digits")
    assert base.x_train.shape == (1347, 1, 8, 8) and base.x_test.shape == (450, 1, 8, 8)
    assert float(base.x_train.max()) == 1.0 and float(base.x_train.min()) == 0.0
    counts = torch.bincount(base.y_test, minlength=10)
    assert counts.min() >= 43 and counts.max() <= 47


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_reads_torchvision_layout(tmp_path, compress):
    x_train, y_train, x_test, _ = tiny_idx_dataset(tmp_path / "MNIST" / "raw", compress)
    base = sources._load_idx_dataset("mnist", tmp_path, download=False)
    assert base.x_train.shape == (60, 1, 28, 28)
    assert np.allclose(base.x_train[:, 0].numpy() * 255, x_train)
    assert base.y_train.tolist() == y_train.tolist()
    assert base.x_test.shape == (20, 1, 28, 28)


def test_fashion_mnist_found_in_the_debian_folder_read_in_place(tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    tiny_idx_dataset(debian, compress=True)
    debian.chmod(0o555)
    monkeypatch.setattr(sources, "DEBIAN_FASHION_DIR", debian)
    base = sources._load_idx_dataset("fashion-mnist", tmp_path / "empty", download=False)
    assert base.x_train.shape == (60, 1, 28, 28) and base.source == str(debian)
    assert sorted(p.name for p in debian.iterdir()) == sorted(p.name for p in debian.glob("*.gz"))


def test_missing_data_says_where_it_looked_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "DEBIAN_FASHION_DIR", tmp_path / "nowhere")
    with pytest.raises(UsageError) as err:
        sources._load_idx_dataset("fashion-mnist", tmp_path, download=False)
    message = str(err.value)
    assert "looked in" in message and str(tmp_path) in message and "--download" in message
    assert "dataset-fashion-mnist" in message and "\n" not in message


def test_truncated_idx_file_is_a_clear_error(tmp_path):
    tiny_idx_dataset(tmp_path / "MNIST" / "raw", compress=False)
    target = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    target.write_bytes(target.read_bytes()[:1000])
    with pytest.raises(UsageError, match="truncated"):
        sources._load_idx_dataset("mnist", tmp_path, download=False)


def test_train_size_is_a_stratified_seeded_subset():
    run = fitted.build_run_data(RunSpec(train_size=200))
    assert run.x_train.shape[0] == 200
    assert torch.bincount(run.y_train).tolist() == [20] * 10 or torch.bincount(run.y_train).max() <= 21
    again = fitted.build_run_data(RunSpec(train_size=200, seed=5))
    assert np.array_equal(run.record["train_index"], again.record["train_index"])  # same subset across seeds
    with pytest.raises(UsageError, match="larger than"):
        fitted.build_run_data(RunSpec(train_size=5000))


def test_standard_preprocessing_uses_clean_train_statistics():
    run = fitted.build_run_data(RunSpec())
    assert abs(float(run.x_train.mean())) < 1e-5 and abs(float(run.x_train.std()) - 1) < 1e-3


def test_paper_whitening_matches_its_formula():
    x = torch.rand(4, 3, 32, 32)
    out = preprocess.whiten_per_image(preprocess.centre_crop(x, 28))
    ref = x[:, :, 2:30, 2:30].reshape(4, -1).numpy().astype(np.float64)
    ref = (ref - ref.mean(1, keepdims=True)) / np.maximum(ref.std(1, keepdims=True), 1 / np.sqrt(2352))
    assert out.shape == (4, 3, 28, 28) and np.allclose(out.reshape(4, -1).numpy(), ref, atol=1e-5)
