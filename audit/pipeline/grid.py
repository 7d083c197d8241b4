"""Running an experiment: expand it, train every run into the store, skip complete ones, resume the rest."""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import audit
from audit.errors import UsageError, WorkError
from audit.spec.experiment import ExperimentSpec
from audit.spec.names import parse_variant
from audit.spec.run import KERNEL_PREFIX, RunSpec
from audit.store.directory import DEFAULT_ROOT, Store, create_store
from audit.store.files import DiskFull, read_run
from audit.store.locks import RunLocked, run_lock
from audit.store.record import RunRecord
from audit.theory.kernel_runs import train_kernel_run
from audit.train.batched import groups_of, train_group
from audit.train.device import Operational, ddp_world, resolve_device
from audit.train.loop import EpochCallback, train_run


def apply_overrides(experiment: ExperimentSpec, overrides: dict[str, Any]) -> ExperimentSpec:
    """The experiment with CLI overrides: run-spec fields replace the base and any grid axis over them."""
    base, grid = dict(experiment.base), dict(experiment.grid)
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "variants":
            for text in value:
                parse_variant(text)
            grid["variants"] = list(value)
        elif key == "seeds":
            if value <= 0:
                raise UsageError(f"--seeds must be positive, got {value}")
            grid["seeds"] = list(range(value))
        else:
            base[key] = value
            grid.pop(key, None)
            grid.pop(f"{key}s", None)
    updated = dataclasses.replace(experiment, base=base, grid=grid)
    updated.expand()  # validates before any work
    return updated


def store_name(experiment: ExperimentSpec, overrides: dict[str, Any]) -> Path:
    """./audit-runs/<store>, or a name built from the overridden settings."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if not given:
        return DEFAULT_ROOT / experiment.store
    parts = []
    for key, value in sorted(given.items()):
        text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        parts.append(f"{key.replace('_', '-')}={text}")
    name = re.sub(r"[^A-Za-z0-9=.,:+-]+", "_", f"{experiment.store}_{'_'.join(parts)}")
    return DEFAULT_ROOT / name[:200]


@dataclass
class GridOutcome:
    records: list[RunRecord]
    skipped: list[str]  # runs held by another process
    errors: list[str]


RunCallback = Callable[[int, int, RunSpec, str], None]


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'I/N' → (I, N) with 1 ≤ I ≤ N."""
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


def prepare_store(experiment: ExperimentSpec, root: Path) -> Store:
    """Create the store and record the experiment in experiment.json, merged with what it holds (every shard
    writes the same expansion; imported and kernel runs are kept)."""
    specs = experiment.expand()
    store = create_store(root)

    def merge(previous: dict[str, Any]) -> dict[str, Any]:
        known = set(previous.get("run_ids", []))
        return {**previous, "audit_version": audit.__version__, "experiment": experiment.to_dict(),
                "run_ids": sorted(known | {s.run_id for s in specs}),
                "runs": {s.run_id: s.to_dict() for s in specs} | previous.get("runs", {})}

    store.update_experiment(merge)
    return store


def pending_groups(store: Store, specs: list[RunSpec], ops: Operational) -> tuple[list[RunRecord], list[list[RunSpec]]]:
    """The records of finished runs, and the rest grouped for training (batched groups where they apply)."""
    records, pending = [], []
    for spec in specs:
        path = store.run_path(spec.run_id)
        if _status_of(path) in ("complete", "diverged"):
            records.append(read_run(path, weights=False))
        else:
            pending.append(spec)
    kernels = [[spec] for spec in pending if spec.model.startswith(KERNEL_PREFIX)]  # fitted one at a time
    pending = [spec for spec in pending if not spec.model.startswith(KERNEL_PREFIX)]
    return records, kernels + (groups_of(pending) if ops.batch else [[spec] for spec in pending])


def train_held(group: list[RunSpec], store: Store, ops: Operational,
               on_epoch: EpochCallback | None = None) -> GridOutcome:
    """Lock the group's runs (skipping those another process holds) and train them, batched or alone."""
    records, skipped, errors = [], [], []
    with contextlib.ExitStack() as stack:
        held, locks = [], []
        for spec in group:
            if ops.ddp and ddp_world()[0] != 0:  # rank 0 holds the locks and writes
                held.append(spec)
                locks.append(None)
                continue
            try:
                locks.append(stack.enter_context(run_lock(store.run_path(spec.run_id))))
                held.append(spec)
            except RunLocked as err:
                skipped.append(f"{spec.run_id}: skipped, {err}")
        paths = [store.run_path(spec.run_id) for spec in held]
        try:
            if len(held) == 1 and held[0].model.startswith(KERNEL_PREFIX):
                records.append(train_kernel_run(held[0], paths[0], ops.data_dir, str(resolve_device(ops.device)),
                                                ops.download))
            elif len(held) == 1:
                records.append(train_run(held[0], paths[0], ops, on_epoch=on_epoch, lock=locks[0]))
            elif held:
                records += train_group(held, paths, ops, on_epoch=on_epoch, locks=locks)
        except DiskFull:
            raise
        except WorkError as err:
            errors.append(str(err))
    return GridOutcome(records, skipped, errors)


def run_grid(experiment: ExperimentSpec, root: Path, ops: Operational = Operational(),
             on_run: RunCallback | None = None, on_epoch: EpochCallback | None = None,
             shard: tuple[int, int] | None = None) -> GridOutcome:
    """Train every run of the experiment (or of its shard) into the store at root, in this process."""
    specs = shard_of(experiment.expand(), shard)
    store = prepare_store(experiment, root)
    records, groups = pending_groups(store, specs, ops)
    outcome = GridOutcome(records, [], [])
    done = len(records)
    for group in groups:
        for offset, spec in enumerate(group):
            if on_run is not None:
                on_run(done + offset, len(specs), spec, "batched" if len(group) > 1 else "training")
        done += len(group)
        result = train_held(group, store, ops, on_epoch)
        outcome.records += result.records
        outcome.skipped += result.skipped
        outcome.errors += result.errors
    return outcome


def _status_of(path: Path) -> str:
    """'new', 'running', 'complete', 'diverged' or 'corrupt' (retrained from scratch)."""
    if not path.exists():
        return "new"
    try:
        record = read_run(path, weights=True)
    except WorkError:
        path.rename(path.with_name(path.name + ".corrupt"))
        return "corrupt"
    return record.status


def open_for_report(store: Store) -> tuple[list[RunRecord], list[str]]:
    """Every readable run of the store, and one line per unreadable run file."""
    records, errors = [], []
    for path in store.run_paths():
        try:
            records.append(read_run(path, weights=False))
        except WorkError as err:
            errors.append(str(err))
    return records, errors
