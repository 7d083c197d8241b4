"""CIFAR-10, CIFAR-100, SVHN and image folders, read from tiny files written in the real on-disk formats.

torchvision checks every CIFAR and SVHN file against the MD5 of the real one. The tests register the tiny
files' MD5s in place of the real ones (on torchvision's class lists), so the loader's own path, integrity
check included, is what runs; a file whose MD5 is not registered is refused.
"""

import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import torchvision.datasets as tvd
from PIL import Image

from audit.data import fitted, sources
from audit.errors import UsageError
from audit.pipeline.names import check_run
from audit.spec.run import RunSpec


@pytest.fixture(autouse=True)
def fresh_cache():
    sources.load_base.cache_clear()
    yield
    sources.load_base.cache_clear()


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


class Py2Pickler(pickle._Pickler):
    """Pickles bytes as Python 2 `str` (BINSTRING), as the CIFAR files were written: loaded with
    encoding='latin1' (torchvision) their keys are str, loaded with encoding='bytes' they are b"data"."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def write_py2_pickle(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        Py2Pickler(handle, protocol=2).dump(obj)


def write_cifar10(root: Path, monkeypatch, n: int = 20, register: bool = True) -> dict[str, np.ndarray]:
    """data_batch_1..5 and test_batch: b"data" uint8 (n, 3072), each row the R, G and B planes row-major."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in (np.arange(n) + len(written)) % 10]
        write_py2_pickle(folder / name, {b"batch_label": name.encode(), b"labels": labels, b"data": pixels,
                                         b"filenames": [f"{i}.png".encode() for i in range(n)]})
        written[name] = pixels, np.asarray(labels)
    write_py2_pickle(folder / "batches.meta", {b"label_names": [f"class{i}".encode() for i in range(10)],
                                               b"num_cases_per_batch": n, b"num_vis": 3072})
    if register:
        monkeypatch.setattr(tvd.CIFAR10, "train_list", [[f"data_batch_{i}", md5(folder / f"data_batch_{i}")]
                                                        for i in range(1, 6)])
        monkeypatch.setattr(tvd.CIFAR10, "test_list", [["test_batch", md5(folder / "test_batch")]])
        monkeypatch.setattr(tvd.CIFAR10, "meta", {**tvd.CIFAR10.meta, "md5": md5(folder / "batches.meta")})
    return written


def test_the_py2_pickles_read_like_the_real_files(tmp_path, monkeypatch):
    write_cifar10(tmp_path, monkeypatch, n=2)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb") as handle:
        entry = pickle.load(handle, encoding="bytes")
    assert set(entry) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert entry[b"data"].dtype == np.uint8 and entry[b"data"].shape == (2, 3072)


def test_cifar10_pixels_channels_and_labels_round_trip(tmp_path, monkeypatch):
    written = write_cifar10(tmp_path, monkeypatch)
    base = sources.load_base("cifar10", tmp_path)
    assert base.x_train.shape == (100, 3, 32, 32) and base.x_test.shape == (20, 3, 32, 32)
    assert base.x_train.dtype == torch.float32 and base.y_train.dtype == torch.int64
    assert base.num_classes == 10 and base.source == str(tmp_path / "cifar-10-batches-py")
    pixels, labels = written["data_batch_2"]
    i = 20 + 3  # image 3 of the second batch
    for c, h, w in ((0, 0, 0), (1, 0, 0), (2, 0, 0), (0, 0, 31), (0, 1, 0), (2, 31, 30), (1, 17, 5)):
        assert round(float(base.x_train[i, c, h, w]) * 255) == pixels[3, c * 1024 + h * 32 + w]
    assert np.array_equal(np.rint(base.x_train[20:40].numpy() * 255).astype(np.uint8).reshape(20, 3072), pixels)
    assert base.y_train[20:40].tolist() == labels.tolist()
    test_pixels, test_labels = written["test_batch"]
    assert np.array_equal(np.rint(base.x_test.numpy() * 255).reshape(20, 3072), test_pixels)
    assert base.y_test.tolist() == test_labels.tolist()


def test_cifar100_reads_fine_labels(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-100-python"
    labels = {"train": np.arange(200) % 100, "test": (np.arange(20) * 7) % 100}
    for part, fine in labels.items():
        write_py2_pickle(folder / part, {b"filenames": [b"x.png"] * len(fine), b"batch_label": part.encode(),
                                         b"fine_labels": fine.tolist(), b"coarse_labels": (fine // 5).tolist(),
                                         b"data": rng.integers(0, 256, (len(fine), 3072), dtype=np.uint8)})
    write_py2_pickle(folder / "meta", {b"fine_label_names": [f"f{i}".encode() for i in range(100)],
                                       b"coarse_label_names": [f"c{i}".encode() for i in range(20)]})
    monkeypatch.setattr(tvd.CIFAR100, "train_list", [["train", md5(folder / "train")]])
    monkeypatch.setattr(tvd.CIFAR100, "test_list", [["test", md5(folder / "test")]])
    monkeypatch.setattr(tvd.CIFAR100, "meta", {**tvd.CIFAR100.meta, "md5": md5(folder / "meta")})
    base = sources.load_base("cifar100", tmp_path)
    assert base.num_classes == 100
    assert base.x_train.shape == (200, 3, 32, 32) and base.x_test.shape == (20, 3, 32, 32)
    assert base.y_train.tolist() == labels["train"].tolist() and base.y_test.tolist() == labels["test"].tolist()


def write_svhn(root: Path, monkeypatch, n: int = 20) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """train_32x32.mat and test_32x32.mat: X (32, 32, 3, n) uint8, y (n, 1) in 1..10 where 10 is digit 0."""
    rng = np.random.default_rng(2)
    written = {}
    split_list = {k: list(v) for k, v in tvd.SVHN.split_list.items()}
    for part in ("train", "test"):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)
        path = root / f"{part}_32x32.mat"
        scipy.io.savemat(path, {"X": x, "y": y})
        split_list[part][2] = md5(path)
        written[part] = x, y
    monkeypatch.setattr(tvd.SVHN, "split_list", split_list)
    return written


def test_svhn_maps_label_10_to_digit_0_and_keeps_pixels(tmp_path, monkeypatch):
    written = write_svhn(tmp_path, monkeypatch)
    base = sources.load_base("svhn", tmp_path)
    x, y = written["train"]
    assert base.x_train.shape == (20, 3, 32, 32) and base.num_classes == 10
    assert base.y_train.tolist() == [int(v) % 10 for v in y[:, 0]]
    assert base.y_train.tolist()[9] == 0 and y[9, 0] == 10
    assert np.array_equal(np.rint(base.x_train.numpy() * 255).astype(np.uint8), x.transpose(3, 2, 0, 1))
    assert base.y_test.min() == 0 and base.y_test.max() == 9


def test_a_file_without_its_md5_registered_is_refused(tmp_path, monkeypatch):
    write_cifar10(tmp_path, monkeypatch, n=2, register=False)  # torchvision still holds the real MD5s
    with pytest.raises(UsageError, match="corrupted") as err:
        sources.load_base("cifar10", tmp_path)
    message = str(err.value)
    assert "\n" not in message and "data_batch_1" in message and "--download" in message
    (tmp_path / "svhn").mkdir()
    write_svhn(tmp_path / "svhn", monkeypatch, n=2)
    (tmp_path / "svhn" / "test_32x32.mat").write_bytes(b"not the file that was registered")
    with pytest.raises(UsageError, match="test_32x32.mat is corrupted"):
        sources.load_base("svhn", tmp_path / "svhn")


@pytest.mark.parametrize("name, folder", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python"),
                                          ("svhn", "")])
def test_missing_data_names_the_folder_and_download(tmp_path, name, folder):
    with pytest.raises(UsageError) as err:
        sources.load_base(name, tmp_path / "nothing")
    message = str(err.value)
    assert "\n" not in message and "not found" in message and "--download" in message and "--data-dir" in message
    assert str((tmp_path / "nothing" / folder) if folder else tmp_path / "nothing") in message


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_folder_of_rgb_images_labels_in_sorted_order(tmp_path):
    rng = np.random.default_rng(3)
    images = {}
    for class_name in ("zebra", "ant", "moth"):
        for i in range(4):
            images[(class_name, i)] = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
            write_png(tmp_path / "pics" / class_name / f"{i}.png", images[(class_name, i)])
    (tmp_path / "pics" / "notes.txt").write_text("not a class")
    base = sources.load_base(f"folder:{tmp_path / 'pics'}")
    assert base.num_classes == 3
    assert base.x_train.shape == (9, 3, 6, 5) and base.x_test.shape == (3, 3, 6, 5)
    assert sorted(base.y_test.tolist()) == [0, 1, 2]  # stratified: one test image per class
    everything = torch.cat([base.x_train, base.x_test])
    labels = torch.cat([base.y_train, base.y_test]).tolist()
    order = np.concatenate([np.setdiff1d(np.arange(12), base.test_index), base.test_index])
    for k, index in enumerate(order):
        class_name, i = sorted(images)[index]  # files in sorted class then name order
        assert labels[k] == ["ant", "moth", "zebra"].index(class_name)
        assert np.array_equal(np.rint(everything[k].numpy() * 255).astype(np.uint8), images[(class_name, i)]
                              .transpose(2, 0, 1))


def test_folder_with_train_and_test_keeps_grayscale_as_one_channel(tmp_path):
    rng = np.random.default_rng(4)
    for part, count in (("train", 3), ("test", 2)):
        for class_name in ("one", "two"):
            for i in range(count):
                write_png(tmp_path / part / class_name / f"{i}.png", rng.integers(0, 256, (7, 7), dtype=np.uint8))
    base = sources.load_base(f"folder:{tmp_path}")
    assert base.x_train.shape == (6, 1, 7, 7) and base.x_test.shape == (4, 1, 7, 7)
    assert base.y_train.tolist() == [0, 0, 0, 1, 1, 1] and base.y_test.tolist() == [0, 0, 1, 1]
    assert base.num_classes == 2 and base.test_index is None


def test_folder_with_mixed_sizes_is_refused_naming_the_file(tmp_path):
    write_png(tmp_path / "a" / "0.png", np.zeros((8, 8, 3), np.uint8))
    write_png(tmp_path / "a" / "1.png", np.zeros((8, 8, 3), np.uint8))
    write_png(tmp_path / "b" / "0.png", np.zeros((8, 9, 3), np.uint8))
    with pytest.raises(UsageError) as err:
        sources.load_base(f"folder:{tmp_path}")
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "b" / "0.png") in message
    assert "3×8×9" in message and "3×8×8" in message
    with pytest.raises(UsageError, match="is not a folder"):
        sources.load_base(f"folder:{tmp_path / 'absent'}")


def test_spec_names_accept_folder_names_and_reject_unknown_ones():
    assert check_run(RunSpec(dataset="folder:/some/where")).dataset == "folder:/some/where"
    assert check_run(RunSpec(dataset="svhn")).dataset == "svhn"
    with pytest.raises(UsageError, match="did you mean 'cifar10'"):
        check_run(RunSpec(dataset="cifar-10"))
    with pytest.raises(UsageError, match="unknown dataset"):
        check_run(RunSpec(dataset="folder:"))


def test_cifar10_run_data_with_paper_preprocessing_and_a_stratified_subset(tmp_path, monkeypatch):
    write_cifar10(tmp_path, monkeypatch)  # 100 train images, 10 per class
    spec = RunSpec(dataset="cifar10", preprocess="paper", train_size=50, model="alexnet-small")
    run = fitted.build_run_data(spec, data_dir=tmp_path)
    assert run.x_train.shape == (50, 3, 28, 28) and run.x_test.shape == (20, 3, 28, 28)
    assert torch.bincount(run.y_train, minlength=10).tolist() == [5] * 10
    flat = run.x_train.reshape(50, -1)
    assert torch.allclose(flat.mean(1), torch.zeros(50), atol=1e-5)
    assert torch.allclose(flat.std(1, unbiased=False), torch.ones(50), atol=1e-4)
    again = fitted.build_run_data(spec, data_dir=tmp_path)
    assert again.record["fingerprint_train"] == run.record["fingerprint_train"]
    assert run.record["train_index"].tolist() == again.record["train_index"].tolist()
