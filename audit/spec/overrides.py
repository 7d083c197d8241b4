"""Settings given on the command line: the overrides of an experiment's runs, the store name they make, and
the small grammars of --checkpoint-every, --shard, --keep, --at, --set and `audit show [STORE] RUN_ID`.
Pure parsing: every bad value is a one-line UsageError naming the option."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from audit.errors import UsageError
from audit.spec.experiment import MAX_SEEDS, ExperimentSpec, check_size, parse_keep
from audit.spec.names import check_store_name, parse_variant
from audit.spec.run import RunSpec


def run_overrides(*, dataset: str | None = None, model: str | None = None, epochs: int | None = None,
                  train_size: int | None = None, preprocess: str | None = None, lr: float | None = None,
                  lr_decay: float | None = None, momentum: float | None = None, weight_decay: float | None = None,
                  batch_size: int | None = None, corrupt_test: bool | None = None, seeds: int | None = None,
                  variants: str | None = None) -> dict[str, Any]:
    """The overrides dict of `audit run`'s options (None: not given); --variants split at commas."""
    return {"dataset": dataset, "model": model, "epochs": epochs, "train_size": train_size,
            "preprocess": preprocess, "lr": lr, "lr_decay": lr_decay, "momentum": momentum,
            "weight_decay": weight_decay, "batch_size": batch_size, "corrupt_test": corrupt_test, "seeds": seeds,
            "variants": split_variants(variants) if variants is not None else None}


def split_variants(text: str) -> list[str]:
    """--variants 'true, corrupt:0.2' → ['true', 'corrupt:0.2']: at least one, each known, none twice."""
    listed = [v.strip() for v in text.split(",") if v.strip()]
    if not listed:
        raise UsageError(f"--variants needs at least one variant, e.g. true,random-labels; got {text!r}")
    seen: dict[tuple[str, float | None], str] = {}
    for variant in listed:
        parsed = parse_variant(variant)
        if parsed in seen:
            same = "twice" if seen[parsed] == variant else f"beside '{seen[parsed]}', the same variant"
            raise UsageError(f"--variants lists '{variant}' {same}")
        seen[parsed] = variant
    return listed


def check_out(path: str | Path | None) -> Path | None:
    """The store directory given with --out (None: not given), as check_path checks it."""
    return None if path is None else check_path(path, "--out")


def check_path(path: str | Path, what: str) -> Path:
    """A directory given on the command line (any path, relative or absolute). An empty one would be the current
    directory, and no path holds a NUL: both are UsageErrors naming the option. (A Path made from '' is '.'
    already: give the command line's str.)"""
    text = str(path) if isinstance(path, Path) else path
    if not text.strip():
        raise UsageError(f"{what} needs a directory path, got {text!r}")
    if "\x00" in text:
        raise UsageError(f"{what} {text!r} holds a NUL character, which no path can hold")
    return Path(text)


def apply_overrides(experiment: ExperimentSpec, overrides: dict[str, Any]) -> ExperimentSpec:
    """The experiment with CLI overrides: run-spec fields replace the base and any grid axis over them."""
    base, grid = dict(experiment.base), dict(experiment.grid)
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "variants":
            if not value:
                raise UsageError("--variants needs at least one variant, e.g. true,random-labels")
            for text in value:
                parse_variant(text)
            grid["variants"] = list(value)
        elif key == "seeds":
            if not 0 < value <= MAX_SEEDS:
                raise UsageError(f"--seeds must be positive (at most {MAX_SEEDS}), got {value}")
            grid["seeds"] = list(range(value))
        else:
            base[key] = value
            grid.pop(key, None)
            grid.pop(f"{key}s", None)
    updated = dataclasses.replace(experiment, base=base, grid=grid)
    check_size(updated, "with the options given")
    updated.expand()  # validates before any work
    return updated


def store_name(experiment: ExperimentSpec, overrides: dict[str, Any]) -> str:
    """The store's folder name under ./audit-runs: the experiment's, or one built from the overridden settings."""
    given = {k: v for k, v in overrides.items() if v is not None}
    check_store_name(experiment.store, f"experiment {experiment.name}: store")
    if not given:
        return experiment.store
    parts = []
    for key, value in sorted(given.items()):
        text = "+".join(map(str, value)) if isinstance(value, list) else str(value)
        parts.append(f"{key.replace('_', '-')}={text.replace(':', '-')}")  # ':' and ',' trouble shells and other OSes
    return re.sub(r"[^A-Za-z0-9=.+-]+", "_", f"{experiment.store}_{'_'.join(parts)}")[:200]


def parse_checkpoint(text: str | None) -> tuple[int, float]:
    """--checkpoint-every: N epochs (exactly), or Ns seconds; default every epoch, at most every 30 s."""
    if text is None:
        return 1, 30.0
    try:
        if text.endswith("s"):
            seconds = float(text[:-1])
            if seconds >= 0:
                return 1, seconds
        elif int(text) > 0:
            return int(text), 0.0
    except ValueError:
        pass
    raise UsageError(f"--checkpoint-every must be a positive number of epochs (5) or seconds (30s), got '{text}'")


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """--shard 'I/N' → (I, N) with 1 ≤ I ≤ N; None: the whole grid."""
    if text is None:
        return None
    index, _, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i, n = 0, 0
    if not 1 <= i <= n:
        raise UsageError(f"--shard must be I/N with 1 ≤ I ≤ N (e.g. 2/3), got '{text}'")
    return i, n


def shard_of(specs: list[RunSpec], shard: tuple[int, int] | None) -> list[RunSpec]:
    """A deterministic 1/N of the grid: every N-th run of the expanded order, starting at the I-th."""
    if shard is None:
        return specs
    index, count = shard
    return [spec for position, spec in enumerate(specs) if position % count == index - 1]


def parse_keep_option(text: str | None) -> tuple[str, ...] | None:
    """--keep 'epoch:N,loss:X' → the keep points; None when not given (the experiment's own stand)."""
    if text is None:
        return None
    return parse_keep([k.strip() for k in text.split(",") if k.strip()], "--keep")


def check_point(at: str | None) -> str | None:
    """--at: one keep point (epoch:N or loss:X), returned unchanged; None: the end of training."""
    if at is not None:
        parse_keep([at], "--at")
    return at


def split_setting(text: str) -> tuple[str, str, Any]:
    """--set 'NAME.KEY=VALUE' → (NAME, KEY, VALUE), the value read as JSON where it is JSON, else the text."""
    target, sep, raw = text.partition("=")
    name, dot, key = target.partition(".")
    if not sep or not dot:
        raise UsageError(f"--set '{text}': write MEASURE.SETTING=VALUE, e.g. margin.percentile=5")
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return name, key, value


def show_args(args: list[str]) -> tuple[Path | None, str]:
    """`audit show [STORE] RUN_ID` → (the store or None for the latest, the run id or its prefix)."""
    if len(args) not in (1, 2):
        raise UsageError("give a run id, optionally after the store: audit show [STORE] RUN_ID")
    return (Path(args[0]) if len(args) == 2 else None), args[-1]


def plot_args(args: list[str], kinds: tuple[str, ...]) -> tuple[Path | None, list[str]]:
    """`[STORE] [WORD...]` → (the store, or None for the latest, and the words): the first argument is the
    store when it is not one of `kinds` and either names a directory or more words follow (`audit plot S esd`,
    `audit landscape S 17116a`)."""
    if not args:
        return None, []
    first = args[0]
    if first not in kinds and (Path(first).is_dir() or (kinds and len(args) > 1)):
        return Path(first), args[1:]
    return None, list(args)
