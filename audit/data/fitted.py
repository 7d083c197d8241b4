"""The fitted data of a run: subset, variant and preprocessing of a base dataset, and its fingerprint."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audit.data.imagenet import LazyImages
from audit.data.preprocess import preprocess
from audit.data.sources import load_base
from audit.data.variants import apply_variant
from audit.errors import UsageError, WorkError
from audit.spec.run import LABEL_VARIANTS, USER_DATASET, RunSpec


@dataclass
class RunData:
    """The exact data a run fits: preprocessed inputs, fitted labels, and what regenerates them."""
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    record: dict[str, np.ndarray | int | str] = field(default_factory=dict)
    x_raw: torch.Tensor | None = None  # the paper pipeline's uncropped images, which random crops are cut from

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def augment_source(self) -> torch.Tensor:
        """The images augmentation works on: raw uncropped ones for the paper pipeline, else the inputs."""
        return self.x_raw if self.x_raw is not None else self.x_train


def stratified_subset(labels: torch.Tensor, size: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a stratified, seeded subset of `size` examples (all of them when size is None)."""
    n = len(labels)
    if size is None or size == n:
        return np.arange(n)
    if size > n:
        raise UsageError(f"train size {size} is larger than the {n} training images of the dataset")
    from sklearn.model_selection import train_test_split  # slow to import (scikit-learn)

    classes = int(labels.max()) + 1
    if size < classes:
        raise UsageError(f"train size {size} is smaller than the {classes} classes; use at least {classes}")
    chosen, _ = train_test_split(np.arange(n), train_size=size, stratify=labels.numpy(), random_state=seed)
    return np.sort(chosen)


def fingerprint(*tensors: torch.Tensor) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        lazy = hasattr(tensor, "identity")  # LazyImages: files and preprocessing, not decoded pixels
        digest.update(tensor.identity() if lazy else tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def build_run_data(spec: RunSpec, data_dir: Path | None = None, download: bool = False,
                   stored: Mapping[str, Any] | None = None) -> RunData:
    """The data a run fits, rebuilt from its spec alone: subset → variant → preprocessing. A run whose spec has
    labels_sha256 or data_sha256 fitted arrays a user gave (audit import): they are taken from `stored` (its
    run file's data), checked against the digest."""
    if spec.data_sha256 is not None:
        return user_run_data(_given_arrays(spec, stored, USER_ARRAYS, spec.data_sha256))
    data = _built_run_data(spec, data_dir, download)
    if spec.labels_sha256 is not None:
        data = with_labels(data, _given_arrays(spec, stored, ("train_labels",), spec.labels_sha256)["train_labels"])
    return data


def _built_run_data(spec: RunSpec, data_dir: Path | None, download: bool) -> RunData:
    base = load_base(spec.dataset, data_dir, download)
    train_index = stratified_subset(base.y_train, spec.train_size, spec.split_seed)
    lazy = isinstance(base.x_train, LazyImages)
    if lazy and spec.variant not in LABEL_VARIANTS:
        raise UsageError(f"variant '{spec.variant}' changes pixels, but {spec.dataset} is read lazily from its "
                         "files: use true, corrupt:P or random-labels")
    clean_x = base.x_train.subset(train_index) if lazy else base.x_train[train_index]
    clean_y = base.y_train[train_index]
    varied = apply_variant(spec, clean_x, clean_y, base.x_test, base.y_test, base.num_classes)
    x_train, x_test = preprocess(spec.preprocess, varied.x_train, varied.x_test, clean_x)
    x_train, x_test = x_train.contiguous(), x_test.contiguous()
    for part, tensor in (("train", x_train), ("test", x_test)) if not lazy else ():
        if not math.isfinite(float(tensor.sum())) and not bool(torch.isfinite(tensor).all()):  # the sum first: cheap
            raise UsageError(f"the {part} inputs of {spec.dataset} contain NaN or infinite values after "
                             f"{spec.preprocess} preprocessing; fix the data files (or choose another preprocessing)")
    record: dict[str, np.ndarray | int | str] = dict(varied.record)
    record["train_index"] = train_index
    record["train_labels"] = varied.y_train.numpy()
    if spec.corrupt_test and spec.variant in ("corrupt", "random-labels"):
        record["test_labels"] = varied.y_test.numpy()
    if base.test_index is not None:
        record["base_test_index"] = base.test_index
    record["source"] = base.source
    record["num_classes"] = base.num_classes
    record["fingerprint_train"] = fingerprint(x_train, varied.y_train)
    record["fingerprint_test"] = fingerprint(x_test, varied.y_test)
    raw = varied.x_train.contiguous() if spec.preprocess == "paper" and spec.augment != "none" else None
    return RunData(x_train, varied.y_train, x_test, varied.y_test, base.num_classes, record, raw)


# ---------------------------------------------------------------- data a user gave (audit import --labels/--data)

USER_ARRAYS = ("x_train", "train_labels", "x_test", "test_labels")  # as a run file's data/ holds them


def array_sha256(*arrays: np.ndarray) -> str:
    """SHA-256 over each array's dtype, shape and bytes in C order: labels as int64, inputs as float32."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _given_arrays(spec: RunSpec, stored: Mapping[str, Any] | None, names: tuple[str, ...],
                   expected: str) -> dict[str, np.ndarray]:
    if stored is None or any(name not in stored for name in names):
        given = "arrays (--data)" if spec.data_sha256 is not None else "train labels (--labels)"
        raise WorkError(f"run {spec.run_id} was imported with its own {given}: its data are rebuilt from its run "
                        "file's data/, which were not given here")
    arrays = {name: np.asarray(stored[name]) for name in names}
    if array_sha256(*arrays.values()) != expected:
        raise WorkError(f"run {spec.run_id}: the stored data do not match the SHA-256 in its spec")
    return arrays


def with_labels(data: RunData, labels: np.ndarray) -> RunData:
    """The run data with these fitted train labels in place of the regenerated ones."""
    y_train = torch.from_numpy(np.asarray(labels, dtype=np.int64).copy())
    record = {**data.record, "train_labels": y_train.numpy(), "fingerprint_train": fingerprint(data.x_train, y_train)}
    return dataclasses.replace(data, y_train=y_train, record=record)


def user_run_data(arrays: Mapping[str, np.ndarray]) -> RunData:
    """The run data of a user's own arrays (USER_ARRAYS, checked by check_user_data): exactly these, no
    preprocessing; the classes are 0 .. the largest label."""
    x_train, x_test = (torch.from_numpy(np.asarray(arrays[k], dtype=np.float32).copy()) for k in ("x_train", "x_test"))
    y_train, y_test = (torch.from_numpy(np.asarray(arrays[k], dtype=np.int64).copy())
                       for k in ("train_labels", "test_labels"))
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    record: dict[str, np.ndarray | int | str] = {
        "x_train": x_train.numpy(), "train_labels": y_train.numpy(), "x_test": x_test.numpy(),
        "test_labels": y_test.numpy(), "source": USER_DATASET, "num_classes": num_classes,
        "fingerprint_train": fingerprint(x_train, y_train), "fingerprint_test": fingerprint(x_test, y_test)}
    return RunData(x_train, y_train, x_test, y_test, num_classes, record)


def _integer_labels(labels: np.ndarray, where: str, expected: str) -> np.ndarray:
    if not np.issubdtype(labels.dtype, np.integer):
        raise UsageError(f"{where}: labels of dtype {labels.dtype} are not integers; expected {expected}")
    return labels.astype(np.int64)


def check_labels(labels: np.ndarray, count: int, num_classes: int, where: str) -> np.ndarray:
    """The fitted train labels a user gave, as int64; else one UsageError naming `where`, what is wrong and the
    expected shape and range."""
    expected = f"integers in [0, {num_classes}) of shape ({count},), one per train example in audit's order"
    labels = _integer_labels(labels, where, expected)
    if labels.shape != (count,):
        raise UsageError(f"{where}: labels of shape {labels.shape}; expected {expected}")
    if count and (labels.min() < 0 or labels.max() >= num_classes):
        raise UsageError(f"{where}: labels range over [{labels.min()}, {labels.max()}]; expected {expected}")
    return labels


def check_user_data(arrays: Mapping[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    """A user's arrays x_train, y_train, x_test, y_test as USER_ARRAYS (inputs float32, labels int64); else
    one UsageError naming `where` and what is wrong."""
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise UsageError(f"{where}: no array {', '.join(missing)}; expected x_train, y_train, x_test, y_test")
    out: dict[str, np.ndarray] = {}
    for part in ("train", "test"):
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if x.ndim < 2 or y.ndim != 1 or len(x) != len(y) or not len(y):
            raise UsageError(f"{where}: x_{part} of shape {x.shape} and y_{part} of shape {y.shape}; expected "
                             f"(N, ...) inputs and (N,) labels, N > 0")
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise UsageError(f"{where}: x_{part} of dtype {x.dtype}; expected real numbers")
        x = x.astype(np.float32)
        if not np.isfinite(x).all():
            raise UsageError(f"{where}: x_{part} holds NaN or infinite values (as float32); expected finite inputs")
        y = _integer_labels(y, f"{where}: y_{part}", f"integers in [0, C) of shape {y.shape}")
        if y.min() < 0:
            raise UsageError(f"{where}: y_{part} holds the negative label {y.min()}; expected integers in [0, C)")
        out[f"x_{part}"], out[f"{part}_labels"] = x, y
    if out["x_train"].shape[1:] != out["x_test"].shape[1:]:
        raise UsageError(f"{where}: x_train of shape {out['x_train'].shape} and x_test of shape "
                         f"{out['x_test'].shape} disagree past the first axis; expected one input shape")
    return {name: out[name] for name in USER_ARRAYS}
