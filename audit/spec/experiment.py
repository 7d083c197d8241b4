"""Experiment specs: a named grid of runs, read from TOML, expanded into run specs."""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.errors import UsageError, unknown_name
from audit.spec.names import check_store_name, check_text, parse_variant
from audit.spec.run import RunSpec, check_field

RUN_FIELDS = {f.name for f in dataclasses.fields(RunSpec)}

GRID_KEYS = {"variants", "seeds"} | {f"{name}s" for name in RUN_FIELDS} | RUN_FIELDS

SWEEP_AXES = ("width", "depth", "lr", "batch_size", "weight_decay", "train_size", "model", "momentum", "lr_decay",
              "dropout", "optimizer", "epochs", "augment")

KEEP_PATTERN = re.compile(r"^(epoch|loss):([0-9.eE+-]+)$")

MAX_SEEDS = 10_000  # seeds = N in a grid

MAX_RUNS = 100_000  # runs one experiment may expand to

BOMS = ((b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe\x00\x00", "UTF-32"), (b"\xfe\xff", "UTF-16"),
        (b"\xff\xfe", "UTF-16"))


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


def _normalize_axes(table: Any, known: set[str], kind: str, where: str) -> dict[str, list[Any]]:
    if not isinstance(table, dict):
        raise UsageError(f"{where}: [{kind.split()[0]}] must be a table of axes, each a non-empty list")
    out: dict[str, list[Any]] = {}
    for key, values in table.items():
        if key not in known:
            raise unknown_name(kind, key, sorted(known))
        if key == "seeds" and isinstance(values, int) and not isinstance(values, bool):
            if not 0 < values <= MAX_SEEDS:
                raise UsageError(f"{where}: seeds must be a positive count (at most {MAX_SEEDS}) or a list, "
                                 f"got {values}")
            values = list(range(values))
        if not isinstance(values, list) or not values:
            raise UsageError(f"{where}: {kind} '{key}' must be a non-empty list, got {values!r}")
        for value in values:
            if isinstance(value, (list, dict)):
                raise UsageError(f"{where}: {kind} '{key}' holds {value!r}: its values are single settings")
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


def check_size(experiment: ExperimentSpec, where: str) -> None:
    """A UsageError when the experiment would expand to more than MAX_RUNS runs (before expanding it)."""
    axes = [*experiment.grid.values(), *experiment.sweep.values()]
    count = max(len(experiment.runs), 1) * math.prod(len(values) for values in axes)
    if count > MAX_RUNS:
        raise UsageError(f"{where}: the experiment expands to {count} runs, more than the {MAX_RUNS} audit plans "
                         "at most")


def experiment_from_dict(values: dict[str, Any], where: str) -> ExperimentSpec:
    """An experiment from the tables of its TOML file, every key and value checked by type and range (a
    UsageError naming the first wrong one) and every run spec it expands to validated."""
    known = {"name", "description", "store", "base", "grid", "sweep", "keep", "runs"}
    for key in values:
        if key not in known:
            raise unknown_name("experiment key", key, sorted(known))
    name = check_text(f"{where}: name", values["name"]) if "name" in values else Path(where).stem
    description = values.get("description", "")
    if not isinstance(description, str):
        raise UsageError(f"{where}: description must be a string, got {description!r}")
    if "store" in values:
        store = check_store_name(values["store"], f"{where}: store")
    else:
        store = check_store_name(name, f"{where}: name (the store's when none is given)")
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
    spec = ExperimentSpec(name=name, description=description, store=store, base=dict(base), grid=grid,
                          sweep=sweep, keep=parse_keep(values.get("keep", []), where),
                          runs=tuple(dict(r) for r in runs))
    check_size(spec, where)
    spec.expand()  # validates every run spec before any work starts
    return spec


def load_experiment_file(path: Path) -> ExperimentSpec:
    """An experiment file, read as UTF-8 TOML (a UTF-8 byte-order mark is allowed); anything else is one
    UsageError naming the file."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise UsageError(f"cannot read experiment file {path}: {err.strerror or err}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        bom = next((name for mark, name in BOMS if data.startswith(mark)), None)
        found = f"it starts with a {bom} byte-order mark" if bom else f"byte {err.start} is not UTF-8"
        raise UsageError(f"experiment file {path} must be UTF-8 TOML ({found})") from None
    try:
        values = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError, RecursionError) as err:  # ValueError: an int of over 4300 digits
        raise UsageError(f"experiment file {path} is not valid TOML: {err}") from None
    return experiment_from_dict(values, str(path))
