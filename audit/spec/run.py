"""The run spec: every setting that changes the science of one run, its canonical form and run id.

A RunSpec holds every setting that changes the result of a run; its run id is a short hash of its
canonical JSON. Operational settings (device, threads, batching, checkpointing) live elsewhere so that
adding one never re-keys a store. Constructing one checks types and ranges only: names are checked
against the registries where specs enter (audit.pipeline.names), never when a stored file is read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from audit.errors import UsageError, unknown_name

LABEL_VARIANTS = ("true", "corrupt", "random-labels")

INPUT_VARIANTS = ("shuffled-pixels", "random-pixels", "gaussian")

VARIANTS = LABEL_VARIANTS + INPUT_VARIANTS  # the built-in ones; a plugin's variants lie on the input axis

VARIANT_NAME = re.compile(r"[a-z][a-z0-9-]*")



KERNEL_PREFIX = "kernel-"  # a model named kernel-KIND[,...] is a kernel machine (audit.theory), not a network

USER_DATASET = "npz"  # the dataset of a run imported with its own arrays (audit import --data)

# The digests of data a user gave (audit import --labels/--data). Left out of the canonical form, to_dict and the
# family key while None, so that adding them re-keys no stored run; set, they enter the run id.
USER_DATA_FIELDS = ("labels_sha256", "data_sha256")

SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class RunSpec:
    """Every setting that changes the science of one training run, defaults written out."""

    dataset: str = "digits"
    train_size: int | None = None  # stratified subset of the train set; None = all of it
    split_seed: int = 0  # seed of the subset (and of the digits train/test split)
    preprocess: str = "standard"
    variant: str = "true"
    corrupt: float | None = 0.0  # p on the label axis; None on the input axis
    corrupt_test: bool = False
    seed: int = 0
    model: str = "mlp-1x512"
    optimizer: str = "sgd"
    lr: float = 0.1
    lr_decay: float = 1.0  # learning rate multiplied by this after every epoch
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 128
    epochs: int = 200  # the most epochs a run trains for
    fit_target: float = 1.0  # train accuracy at which a run is fitted and stops
    loss_target: float | None = None  # stop once the train loss is at or below this
    augment: str = "none"  # none | crop | crop+flip | flip
    dropout: float = 0.0
    batchnorm: bool = True  # only for models that have batch norm
    labels_sha256: str | None = None  # SHA-256 of the fitted train labels a user gave (audit import --labels)
    data_sha256: str | None = None  # SHA-256 of the arrays a user gave (audit import --data); dataset is "npz"

    def __post_init__(self) -> None:
        validate(self)

    def canonical(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def run_id(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()[:12]

    @property
    def variant_label(self) -> str:
        return f"corrupt:{self.corrupt:g}" if self.variant == "corrupt" else self.variant

    def family_key(self) -> str:
        """Runs identical but for variant and seed share a family."""
        rest = {k: v for k, v in dataclasses.asdict(self).items()
                if k not in ("variant", "corrupt", "seed", *USER_DATA_FIELDS)}  # user data: the variant's data
        return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()[:8]

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        return {k: v for k, v in values.items() if not (k in USER_DATA_FIELDS and v is None)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            name = sorted(unknown)[0]
            raise unknown_name("spec field", name, sorted(known))
        return cls(**values)


def derive_seed(seed: int, purpose: str) -> int:
    """An independent 63-bit seed for one purpose (labels, init, order, ...) of a run's seed."""
    digest = hashlib.sha256(f"{seed}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1

FIELD_TYPES: dict[str, tuple[tuple[type, ...], bool]] = {  # field → (accepted types, None allowed)
    **{name: ((str,), False) for name in ("dataset", "preprocess", "variant", "model", "optimizer", "augment")},
    **{name: ((int,), False) for name in ("seed", "split_seed", "batch_size", "epochs")},
    "train_size": ((int,), True),
    **{name: ((float, int), False) for name in ("lr", "lr_decay", "momentum", "weight_decay", "fit_target",
                                                 "dropout")},
    "loss_target": ((float, int), True), "corrupt": ((float, int), True),
    **{name: ((str,), True) for name in USER_DATA_FIELDS},
    **{name: ((bool,), False) for name in ("corrupt_test", "batchnorm")},
}


INT_LIMIT = 2 ** 63  # every integer of a spec fits a signed 64-bit integer (HDF5, numpy, torch seeds)

FLOAT32_MAX = 3.4028234663852886e38  # the largest learning rate an optimizer step can apply in float32


def control_character(text: str) -> str | None:
    """The first control character (C0, C1, a lone surrogate, a line or paragraph separator) in text, or None."""
    for char in text:
        if unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp"):
            return char
    return None


def check_field(name: str, value: Any) -> None:
    """Raise UsageError unless value has the type of spec field `name` (bools are not numbers here): integers
    within 64 bits, floats finite, strings non-empty and free of control characters."""
    kinds, none_ok = FIELD_TYPES[name]
    if value is None and none_ok:
        return
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        raise UsageError(f"spec field '{name}' must be {kinds[0].__name__}, got {value!r}")
    if isinstance(value, int) and not isinstance(value, bool) and not -INT_LIMIT <= value < INT_LIMIT:
        raise UsageError(f"spec field '{name}' is out of range: {value}")
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"spec field '{name}' must be a finite number, got {value}")
    if isinstance(value, str):
        if not value.strip():
            raise UsageError(f"spec field '{name}' must be a non-empty string")
        char = control_character(value)
        if char is not None:
            raise UsageError(f"spec field '{name}' holds a control character ({char!a}): {value!r}")


def is_user_model(name: str) -> bool:
    """Whether name is written module:function, the module dotted Python names and the function one."""
    module, _, function = name.partition(":")
    return function.isidentifier() and all(part.isidentifier() for part in module.split("."))


def validate(spec: RunSpec) -> None:
    """Raise UsageError naming the first invalid field; the spec is then never used."""
    for name in FIELD_TYPES:
        check_field(name, getattr(spec, name))
    if spec.variant not in VARIANTS and not VARIANT_NAME.fullmatch(spec.variant):
        raise unknown_name("variant", spec.variant, list(VARIANTS))
    expected = {"true": 0.0, "random-labels": 1.0}.get(spec.variant)
    if spec.variant not in LABEL_VARIANTS and spec.corrupt is not None:
        raise UsageError(f"variant '{spec.variant}' is on the input axis: its corrupt must be null")
    if spec.variant in LABEL_VARIANTS:
        if spec.corrupt is None or not 0.0 <= spec.corrupt <= 1.0:
            raise UsageError(f"corrupt must lie in [0, 1], got {spec.corrupt!r}")
        if expected is not None and spec.corrupt != expected:
            raise UsageError(f"variant '{spec.variant}' has corrupt {expected}, got {spec.corrupt}")
    positive = {"batch_size": spec.batch_size, "epochs": spec.epochs, "lr": spec.lr}
    for name, value in positive.items():
        if not value > 0 or not math.isfinite(value):
            raise UsageError(f"{name} must be positive, got {value}")
    if spec.lr > FLOAT32_MAX:
        raise UsageError(f"lr must be at most {FLOAT32_MAX:.3g} (training is in float32), got {spec.lr}")
    if spec.train_size is not None and spec.train_size <= 0:
        raise UsageError(f"train_size must be positive, got {spec.train_size}")
    if spec.seed < 0 or spec.split_seed < 0:
        raise UsageError("seeds must be non-negative integers")
    if spec.split_seed >= 2 ** 32:
        raise UsageError(f"split_seed must be below 2**32 (the seed of a stratified split), got {spec.split_seed}")
    for name, low, high in (("lr_decay", 0.0, 1.0), ("momentum", 0.0, 1.0), ("fit_target", 0.0, 1.0)):
        value = getattr(spec, name)
        if not (low < value <= high if name != "momentum" else low <= value < high):
            raise UsageError(f"{name} must lie in ({low}, {high}], got {value}")
    if not 0.0 <= spec.weight_decay < 1.0:
        raise UsageError(f"weight_decay must lie in [0, 1), got {spec.weight_decay}")
    if not 0.0 <= spec.dropout < 1.0:
        raise UsageError(f"dropout must lie in [0, 1), got {spec.dropout}")
    if spec.loss_target is not None and not spec.loss_target > 0:
        raise UsageError(f"loss_target must be positive, got {spec.loss_target}")
    if ":" in spec.model and not spec.model.startswith(KERNEL_PREFIX) and not is_user_model(spec.model):
        raise UsageError(f"model '{spec.model}': a user's model is written module:function, both Python names "
                         "(e.g. mymodels:small_cnn)")
    for name in USER_DATA_FIELDS:
        value = getattr(spec, name)
        if value is not None and not SHA256_HEX.fullmatch(value):
            raise UsageError(f"{name} must be 64 lowercase hex digits (a SHA-256), got {value!r}")
    if spec.labels_sha256 is not None and spec.data_sha256 is not None:
        raise UsageError("a run has labels_sha256 or data_sha256, not both: a user's data carry their own labels")
    if (spec.data_sha256 is not None) != (spec.dataset == USER_DATASET):
        raise UsageError(f"dataset '{USER_DATASET}' is a user's arrays (audit import --data) and needs data_sha256; "
                         "data_sha256 needs it")
    if spec.data_sha256 is not None and (spec.preprocess != "none" or spec.train_size is not None):
        raise UsageError("a user's arrays (data_sha256) are the inputs as the model sees them: preprocess none, "
                         "train_size null")
    if spec.augment not in ("none", "crop", "flip", "crop+flip"):
        raise unknown_name("augmentation", spec.augment, ["none", "crop", "flip", "crop+flip"])
