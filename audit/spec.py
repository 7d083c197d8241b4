"""Run specs and experiment specs: what changes the science, its canonical form, and grid expansion.

A RunSpec holds every setting that changes the result of a run; its run id is a short hash of its
canonical JSON. Operational settings (device, threads, batching, checkpointing) live elsewhere so that
adding one never re-keys a store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.errors import UsageError, unknown_name

LABEL_VARIANTS = ("true", "corrupt", "random-labels")
INPUT_VARIANTS = ("shuffled-pixels", "random-pixels", "gaussian")
VARIANTS = LABEL_VARIANTS + INPUT_VARIANTS
OPTIMIZERS = ("sgd", "adam")
PREPROCESSINGS = ("standard", "paper", "none")
KERNEL_PREFIX = "kernel-"  # a model named kernel-KIND[,...] is a kernel machine (audit.kernel), not a network


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

    def __post_init__(self) -> None:
        validate(self)

    def canonical(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))

    @property
    def run_id(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()[:12]

    @property
    def variant_label(self) -> str:
        return f"corrupt:{self.corrupt:g}" if self.variant == "corrupt" else self.variant

    def family_key(self) -> str:
        """Runs identical but for variant and seed share a family."""
        rest = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("variant", "corrupt", "seed")}
        return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()[:8]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

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


def parse_variant(text: str) -> tuple[str, float | None]:
    """'true', 'corrupt:0.2', 'random-labels', ... → (variant, p). corrupt:0 is true, corrupt:1 random-labels."""
    name, _, arg = text.strip().partition(":")
    if name == "corrupt":
        try:
            p = float(arg)
        except ValueError:
            raise UsageError(f"variant '{text}': corrupt needs a probability, e.g. corrupt:0.2") from None
        if not 0.0 <= p <= 1.0 or math.isnan(p):
            raise UsageError(f"variant '{text}': the corruption p must lie in [0, 1]")
        if p == 0.0:
            return "true", 0.0
        if p == 1.0:
            return "random-labels", 1.0
        return "corrupt", p
    if name not in VARIANTS or arg:
        raise unknown_name("variant", text, list(VARIANTS) + ["corrupt:P"])
    if name == "true":
        return "true", 0.0
    if name == "random-labels":
        return "random-labels", 1.0
    return name, None


FIELD_TYPES: dict[str, tuple[tuple[type, ...], bool]] = {  # field → (accepted types, None allowed)
    **{name: ((str,), False) for name in ("dataset", "preprocess", "variant", "model", "optimizer", "augment")},
    **{name: ((int,), False) for name in ("seed", "split_seed", "batch_size", "epochs")},
    "train_size": ((int,), True),
    **{name: ((float, int), False) for name in ("lr", "lr_decay", "momentum", "weight_decay", "fit_target",
                                                 "dropout")},
    "loss_target": ((float, int), True), "corrupt": ((float, int), True),
    **{name: ((bool,), False) for name in ("corrupt_test", "batchnorm")},
}


def check_field(name: str, value: Any) -> None:
    """Raise UsageError unless value has the type of spec field `name` (bools are not numbers here)."""
    kinds, none_ok = FIELD_TYPES[name]
    if value is None and none_ok:
        return
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        raise UsageError(f"spec field '{name}' must be {kinds[0].__name__}, got {value!r}")


def validate(spec: RunSpec) -> None:
    """Raise UsageError naming the first invalid field; the spec is then never used."""
    for name in FIELD_TYPES:
        check_field(name, getattr(spec, name))
    from audit.data import check_dataset_name
    from audit.models import model_entry

    check_dataset_name(spec.dataset)
    if spec.model.startswith(KERNEL_PREFIX):
        from audit.kernel import parse_kernel_model

        parse_kernel_model(spec.model)
    else:
        model_entry(spec.model)
    if spec.variant not in VARIANTS:
        raise unknown_name("variant", spec.variant, list(VARIANTS))
    expected = {"true": 0.0, "random-labels": 1.0}.get(spec.variant)
    if spec.variant in INPUT_VARIANTS and spec.corrupt is not None:
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
    if spec.train_size is not None and spec.train_size <= 0:
        raise UsageError(f"train_size must be positive, got {spec.train_size}")
    if spec.seed < 0 or spec.split_seed < 0:
        raise UsageError("seeds must be non-negative integers")
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
    if spec.optimizer not in OPTIMIZERS:
        raise unknown_name("optimizer", spec.optimizer, list(OPTIMIZERS))
    from audit.imagenet import image_size

    if spec.preprocess not in PREPROCESSINGS and image_size(spec.preprocess) is None:
        raise unknown_name("preprocessing", spec.preprocess, [*PREPROCESSINGS, "imagenet[:SIZE]"])
    if (spec.dataset == "imagenet") != (image_size(spec.preprocess) is not None):
        raise UsageError(f"dataset {spec.dataset} with preprocessing '{spec.preprocess}': the imagenet dataset "
                         "takes preprocess imagenet or imagenet:SIZE, and only it does")
    if spec.augment not in ("none", "crop", "flip", "crop+flip"):
        raise unknown_name("augmentation", spec.augment, ["none", "crop", "flip", "crop+flip"])


# ---------------------------------------------------------------- experiments

RUN_FIELDS = {f.name for f in dataclasses.fields(RunSpec)}
GRID_KEYS = {"variants", "seeds"} | {f"{name}s" for name in RUN_FIELDS} | RUN_FIELDS
SWEEP_AXES = ("width", "depth", "lr", "batch_size", "weight_decay", "train_size", "model", "momentum", "lr_decay",
              "dropout", "optimizer", "epochs", "augment")
KEEP_PATTERN = re.compile(r"^(epoch|loss):([0-9.eE+-]+)$")


@dataclass(frozen=True)
class ExperimentSpec:
    """A named grid of runs: base settings, the grid axes (variants, seeds, ...), the hyperparameter sweep
    axes the verdicts judge measures along, the points of training to keep, and the default store name."""

    name: str
    description: str = ""
    store: str = ""
    base: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    sweep: dict[str, list[Any]] = field(default_factory=dict)
    keep: tuple[str, ...] = ()  # "epoch:N" or "loss:X": weights kept when reached (operational, not in run ids)
    runs: tuple[dict[str, Any], ...] = ()  # explicit rows (a paper's table), each over the base, then the axes

    def expand(self) -> list[RunSpec]:
        """All run specs: for each explicit row (or the base alone), the sweep axes, then the grid axes."""
        axes = [(key, list(values)) for key, values in self.sweep.items()]
        axes += [(key, list(values)) for key, values in self.grid.items()]
        specs = []
        for row, combo in itertools.product(self.runs or ({},),
                                            itertools.product(*(values for _, values in axes))):
            fields_ = {**self.base, **row}
            for (key, _), value in zip(axes, combo):
                if key == "variants":
                    fields_["variant"], fields_["corrupt"] = parse_variant(value)
                elif key in ("width", "depth"):
                    fields_["model"] = _resize_mlp(fields_.get("model", RunSpec.model), key, value)
                else:
                    fields_[_singular(key)] = value
            specs.append(RunSpec.from_dict(fields_))
        return list(dict.fromkeys(specs))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _resize_mlp(model: str, key: str, value: Any) -> str:
    match = re.match(r"^mlp-(\d+)x(\d+)$", model)
    if match is None:
        raise UsageError(f"sweep axis '{key}' needs an mlp-DxW model, got '{model}'")
    depth, width = int(match.group(1)), int(match.group(2))
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise UsageError(f"sweep axis '{key}' takes positive integers, got {value!r}")
    return f"mlp-{value if key == 'depth' else depth}x{value if key == 'width' else width}"


def _singular(key: str) -> str:
    if key in RUN_FIELDS:
        return key
    if key == "seeds":
        return "seed"
    return key[:-1]


def _normalize_axes(table: dict[str, Any], known: set[str], kind: str, where: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for key, values in table.items():
        if key not in known:
            raise unknown_name(kind, key, sorted(known))
        if key == "seeds" and isinstance(values, int) and not isinstance(values, bool):
            if values <= 0:
                raise UsageError(f"{where}: seeds must be a positive count or a list, got {values}")
            values = list(range(values))
        if not isinstance(values, list) or not values:
            raise UsageError(f"{where}: {kind} '{key}' must be a non-empty list")
        if key == "variants":
            for value in values:
                if not isinstance(value, str):
                    raise UsageError(f"{where}: variants must be strings, got {value!r}")
                parse_variant(value)
        out[key] = values
    return out


def parse_keep(values: Any, where: str) -> tuple[str, ...]:
    if not isinstance(values, list) or not all(isinstance(v, str) and KEEP_PATTERN.match(v) for v in values):
        raise UsageError(f"{where}: keep must be a list like [\"epoch:5\", \"loss:0.1\"]")
    for value in values:
        kind, number = KEEP_PATTERN.match(value).groups()  # type: ignore[union-attr]
        amount = float(number)
        if not math.isfinite(amount) or amount <= 0 or (kind == "epoch" and amount != int(amount)):
            raise UsageError(f"{where}: keep point '{value}' needs a positive epoch or loss")
    return tuple(values)


def experiment_from_dict(values: dict[str, Any], where: str) -> ExperimentSpec:
    known = {"name", "description", "store", "base", "grid", "sweep", "keep", "runs"}
    for key in values:
        if key not in known:
            raise unknown_name("experiment key", key, sorted(known))
    base = values.get("base", {})
    if not isinstance(base, dict):
        raise UsageError(f"{where}: [base] must be a table")
    runs = values.get("runs", [])
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise UsageError(f"{where}: runs must be an array of tables ([[runs]])")
    for row in [base, *runs]:
        for key, value in row.items():
            if key not in RUN_FIELDS:
                raise unknown_name("spec field", key, sorted(RUN_FIELDS))
            check_field(key, value)
    grid = _normalize_axes(values.get("grid", {}), GRID_KEYS, "grid axis", where)
    sweep = _normalize_axes(values.get("sweep", {}), set(SWEEP_AXES), "sweep axis", where)
    name = values.get("name") or Path(where).stem
    spec = ExperimentSpec(name=name, description=values.get("description", ""),
                          store=values.get("store", name), base=dict(base), grid=grid, sweep=sweep,
                          keep=parse_keep(values.get("keep", []), where), runs=tuple(dict(r) for r in runs))
    spec.expand()  # validates every run spec before any work starts
    return spec


def load_experiment_file(path: Path) -> ExperimentSpec:
    try:
        text = path.read_text()
    except OSError as err:
        raise UsageError(f"cannot read experiment file {path}: {err.strerror}") from None
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"experiment file {path} is not valid TOML: {err}") from None
    return experiment_from_dict(values, str(path))
