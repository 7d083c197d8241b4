"""Running an experiment: expand it, train every run into the store, skip complete ones, resume the rest."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import audit
from audit.errors import WorkError
from audit.pipeline.plan import run_state
from audit.spec.experiment import ExperimentSpec
from audit.spec.overrides import shard_of
from audit.spec.run import KERNEL_PREFIX, RunSpec
from audit.store.directory import Store, create_store
from audit.store.files import DiskFull, read_run
from audit.store.locks import RunLocked, run_lock
from audit.store.record import RunRecord
from audit.theory.kernel_runs import train_kernel_run
from audit.train.batched import groups_of, train_group
from audit.train.device import Operational, ddp_world, resolve_device
from audit.train.loop import EpochCallback, train_run


@dataclass
class GridOutcome:
    records: list[RunRecord]
    skipped: list[str]  # runs held by another process
    errors: list[str]


RunCallback = Callable[[int, int, RunSpec, str], None]


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
        state = run_state(path)
        if state == "corrupt":
            set_aside(path)
        if state in ("complete", "diverged"):
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


def set_aside(path: Path) -> None:
    """Move a corrupt run file out of the way (to NAME.h5.corrupt), so that the run is retrained from scratch."""
    path.rename(path.with_name(path.name + ".corrupt"))


def open_for_report(store: Store) -> tuple[list[RunRecord], list[str]]:
    """Every readable run of the store, and one line per unreadable run file."""
    records, errors = [], []
    for path in store.run_paths():
        try:
            records.append(read_run(path, weights=False))
        except WorkError as err:
            errors.append(str(err))
    return records, errors
