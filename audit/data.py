"""Base datasets as tensors, preprocessing pipelines, and the fitted data of a run.

Images are float32 tensors of shape (N, C, H, W) with raw values scaled to [0, 1]; labels are int64.
Everything is built on the CPU, deterministically, and moved to the training device afterwards.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from audit.errors import UsageError, unknown_name
from audit.spec import RunSpec

DIGITS_SPLIT_SEED = 0
DIGITS_TEST_SIZE = 450
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class BaseData:
    """A dataset before any randomization: raw images in [0, 1] and clean labels."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    source: str  # where it was read from
    test_index: np.ndarray | None = None  # for datasets whose split we make (digits)


@dataclass
class RunData:
    """The exact data a run fits: preprocessed inputs, fitted labels, and what regenerates them."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    record: dict[str, np.ndarray | int | str] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


DATASETS = {
    "digits": "scikit-learn's 8x8 digits, 1,797 images, built in (1,347 train / 450 test, stratified split)",
    "mnist": "MNIST 28x28, 60,000 + 10,000 (torchvision layout under --data-dir; --download to fetch)",
    "fashion-mnist": "Fashion-MNIST 28x28, 60,000 + 10,000 (--data-dir, or Debian's dataset-fashion-mnist)",
}


def default_data_dir() -> Path:
    return Path(os.environ.get("AUDIT_DATA_DIR", Path.home() / ".cache" / "audit" / "data"))


# ---------------------------------------------------------------- readers

def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (MNIST's format), plain or gzip-compressed, without writing anything."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UsageError(f"{path} is not an unsigned-byte idx file; replace it with the original download")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise UsageError(f"{path} is truncated: expected {int(np.prod(shape))} values, found {data.size}")
    return data.reshape(shape)


def _find_idx(folders: list[Path], stem: str) -> Path | None:
    for folder in folders:
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def _load_idx_dataset(name: str, data_dir: Path, download: bool) -> BaseData:
    sub = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}[name]
    folders = [data_dir / sub / "raw"]
    if name == "fashion-mnist":
        folders.append(DEBIAN_FASHION_DIR)
    stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    paths = [_find_idx(folders, stem) for stem in stems]
    if None in paths and download:
        import torchvision

        cls = torchvision.datasets.MNIST if name == "mnist" else torchvision.datasets.FashionMNIST
        try:
            cls(root=str(data_dir), train=True, download=True)
            cls(root=str(data_dir), train=False, download=True)
        except Exception as err:  # network errors come in many types
            raise UsageError(f"could not download {name} into {data_dir}: {err}") from None
        paths = [_find_idx(folders, stem) for stem in stems]
    if None in paths:
        looked = " and ".join(str(f) for f in folders)
        hint = " or `apt install dataset-fashion-mnist`" if name == "fashion-mnist" else ""
        raise UsageError(f"{name} not found: looked in {looked}; rerun with --download on a networked "
                         f"machine{hint}, or point --data-dir at a folder holding {sub}/raw/")
    x_train, y_train, x_test, y_test = (read_idx(p) for p in paths)
    for x, y, part in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise UsageError(f"{name} {part} files in {paths[0].parent} have shapes {x.shape} and {y.shape}; "
                             "expected (N, H, W) images and N labels")
    return BaseData(
        name=name,
        x_train=torch.from_numpy(x_train.astype(np.float32) / 255.0).unsqueeze(1),
        y_train=torch.from_numpy(y_train.astype(np.int64)),
        x_test=torch.from_numpy(x_test.astype(np.float32) / 255.0).unsqueeze(1),
        y_test=torch.from_numpy(y_test.astype(np.int64)),
        num_classes=10,
        source=str(paths[0].parent),
    )


def _load_digits() -> BaseData:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    index = np.arange(len(images))
    train_index, test_index = train_test_split(
        index, test_size=DIGITS_TEST_SIZE, stratify=digits.target, random_state=DIGITS_SPLIT_SEED)
    train_index, test_index = np.sort(train_index), np.sort(test_index)
    return BaseData(
        name="digits",
        x_train=torch.from_numpy(images[train_index]).unsqueeze(1),
        y_train=torch.from_numpy(digits.target[train_index].astype(np.int64)),
        x_test=torch.from_numpy(images[test_index]).unsqueeze(1),
        y_test=torch.from_numpy(digits.target[test_index].astype(np.int64)),
        num_classes=10,
        source="sklearn.datasets.load_digits",
        test_index=test_index,
    )


@functools.lru_cache(maxsize=4)
def load_base(name: str, data_dir: Path | None = None, download: bool = False) -> BaseData:
    """Load a base dataset once per process."""
    if name == "digits":
        return _load_digits()
    if name in ("mnist", "fashion-mnist"):
        return _load_idx_dataset(name, Path(data_dir or default_data_dir()), download)
    raise unknown_name("dataset", name, list(DATASETS))


# ---------------------------------------------------------------- subsets and preprocessing

def stratified_subset(labels: torch.Tensor, size: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a stratified, seeded subset of `size` examples (all of them when size is None)."""
    n = len(labels)
    if size is None or size == n:
        return np.arange(n)
    if size > n:
        raise UsageError(f"train size {size} is larger than the {n} training images of the dataset")
    from sklearn.model_selection import train_test_split

    classes = int(labels.max()) + 1
    if size < classes:
        raise UsageError(f"train size {size} is smaller than the {classes} classes; use at least {classes}")
    chosen, _ = train_test_split(np.arange(n), train_size=size, stratify=labels.numpy(), random_state=seed)
    return np.sort(chosen)


def preprocess(kind: str, x_train: torch.Tensor, x_test: torch.Tensor,
               clean_train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply a named pipeline. Statistics come from the clean raw train set, so variants share them."""
    if kind == "none":
        return x_train, x_test
    if kind == "standard":
        mean = clean_train.mean(dim=(0, 2, 3), keepdim=True)
        std = clean_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
        return (x_train - mean) / std, (x_test - mean) / std
    if kind == "paper":
        return whiten_per_image(centre_crop(x_train, 28)), whiten_per_image(centre_crop(x_test, 28))
    raise unknown_name("preprocessing", kind, ["standard", "paper", "none"])


def centre_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    if h <= size and w <= size:
        return x
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size]


def whiten_per_image(x: torch.Tensor) -> torch.Tensor:
    """(x − mean(x)) / max(std(x), 1/sqrt(N)) per image, N = values per image (TensorFlow's rule)."""
    flat = x.reshape(len(x), -1)
    count = flat.shape[1]
    mean = flat.mean(dim=1, keepdim=True)
    std = flat.std(dim=1, unbiased=False, keepdim=True).clamp_min(1.0 / count ** 0.5)
    return ((flat - mean) / std).reshape(x.shape)


def fingerprint(*tensors: torch.Tensor) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def build_run_data(spec: RunSpec, data_dir: Path | None = None, download: bool = False) -> RunData:
    """The data a run fits, rebuilt from its spec alone: subset → variant → preprocessing."""
    from audit.variants import apply_variant

    base = load_base(spec.dataset, data_dir, download)
    train_index = stratified_subset(base.y_train, spec.train_size, spec.split_seed)
    clean_x = base.x_train[train_index]
    clean_y = base.y_train[train_index]
    varied = apply_variant(spec, clean_x, clean_y, base.x_test, base.y_test, base.num_classes)
    x_train, x_test = preprocess(spec.preprocess, varied.x_train, varied.x_test, clean_x)
    x_train, x_test = x_train.contiguous(), x_test.contiguous()
    record: dict[str, np.ndarray | int | str] = dict(varied.record)
    record["train_index"] = train_index
    record["train_labels"] = varied.y_train.numpy()
    if spec.corrupt_test and spec.variant in ("corrupt", "random-labels"):
        record["test_labels"] = varied.y_test.numpy()
    if base.test_index is not None:
        record["base_test_index"] = base.test_index
    record["source"] = base.source
    record["fingerprint_train"] = fingerprint(x_train, varied.y_train)
    record["fingerprint_test"] = fingerprint(x_test, varied.y_test)
    return RunData(x_train, varied.y_train, x_test, varied.y_test, base.num_classes, record)
