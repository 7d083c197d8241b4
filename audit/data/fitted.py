"""The fitted data of a run: subset, variant and preprocessing of a base dataset, and its fingerprint."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from audit.data.imagenet import LazyImages
from audit.data.preprocess import preprocess
from audit.data.sources import load_base
from audit.data.variants import apply_variant
from audit.errors import UsageError
from audit.spec.run import LABEL_VARIANTS, RunSpec


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


def build_run_data(spec: RunSpec, data_dir: Path | None = None, download: bool = False) -> RunData:
    """The data a run fits, rebuilt from its spec alone: subset → variant → preprocessing."""
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
