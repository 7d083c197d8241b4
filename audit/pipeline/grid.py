"""Running an experiment: expand it, train every run into the store, skip complete ones, resume the rest."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import audit
from audit.errors import WorkError
from audit.pipeline.plan import inspect_run
from audit.spec.experiment import ExperimentSpec
from audit.spec.overrides import shard_of
from audit.spec.run import KERNEL_PREFIX, RunSpec
from audit.store.digests import damage_report
from audit.store.directory import Store, create_store
from audit.store.files import DiskFull, read_run
from audit.store.locks import RunLocked, run_lock
from audit.store.record import RunRecord
from audit.theory.kernel_runs import train_kernel_run
from audit.train.batched import batchable, groups_of, train_group
from audit.train.device import Operational, ddp_world, resolve_device
from audit.train.loop import EpochCallback, train_run


@dataclass
class GridOutcome:
    records: list[RunRecord]
    skipped: list[str]  # runs held by another process
    errors: list[str]
    notices: list[str] = field(default_factory=list)  # runs retrained because their file was damaged


RunCallback = Callable[[int, int, RunSpec, str], None]


def prepare_store(experiment: ExperimentSpec, root: Path, ops: Operational = Operational()) -> Store:
    """Create the store and record the experiment in experiment.json, merged with what it holds (every shard
    writes the same expansion; imported and kernel runs are kept), and the trainer path of each run not
    recorded before, so that a run retrained or resumed later takes the path it was started with."""
    specs = experiment.expand()
    store = create_store(root)

    def merge(previous: dict[str, Any]) -> dict[str, Any]:
        known = set(previous.get("run_ids", []))
        trainers = {s.run_id: trainer_by_rule(s, ops) for s in specs if not s.model.startswith(KERNEL_PREFIX)}
        return {**previous, "audit_version": audit.__version__, "experiment": experiment.to_dict(),
                "run_ids": sorted(known | {s.run_id for s in specs}),
                "runs": {s.run_id: s.to_dict() for s in specs} | previous.get("runs", {}),
                "trainers": trainers | previous.get("trainers", {})}

    store.update_experiment(merge)
    return store


def trainer_by_rule(spec: RunSpec, ops: Operational) -> str:
    """The trainer path today's grouping rules give a run: batched where it applies and is asked for."""
    return "batched" if ops.batch and not ops.ddp and batchable(spec) else "sequential"


@dataclass
class TrainingGroup:
    trainer: str  # batched (train_group, a lone run paired as in a group) or sequential (train_run)
    specs: list[RunSpec]


@dataclass
class Pending:
    records: list[RunRecord]  # runs already finished
    groups: list[TrainingGroup]  # the rest, grouped for training
    notices: list[str]  # runs retrained because their file was damaged, and why
    errors: list[str]  # runs refused (a newer schema)


def pending_groups(store: Store, specs: list[RunSpec], ops: Operational) -> Pending:
    """The records of finished runs, and the rest grouped for training, each by the trainer path it was
    started with (its file's, else experiment.json's, else today's rule); a damaged file is set aside and
    its run retrained, said so; a newer-schema file is refused and left as it is."""
    recorded = store.read_experiment().get("trainers", {})
    pending = Pending([], [], [], [])
    batched: list[RunSpec] = []
    for spec in specs:
        path = store.run_path(spec.run_id)
        found = inspect_run(path)
        if found.state == "newer":
            pending.errors.append(f"{found.reason}; `audit run` leaves it and does not retrain it")
            continue
        if found.state == "corrupt":
            aside = set_aside(path)
            pending.notices.append(f"retraining run {spec.run_id} from scratch: {found.reason}; the damaged file "
                                   f"is kept as {aside.name}")
        if found.state in ("complete", "diverged") and found.record is not None:
            pending.records.append(found.record)
        elif spec.model.startswith(KERNEL_PREFIX):
            pending.groups.append(TrainingGroup("kernel", [spec]))  # fitted one at a time
        elif ops.ddp:
            pending.groups.append(TrainingGroup("sequential", [spec]))  # data parallel: one run at a time
        elif (found.trainer or recorded.get(spec.run_id) or trainer_by_rule(spec, ops)) == "batched":
            batched.append(spec)
        else:
            pending.groups.append(TrainingGroup("sequential", [spec]))
    pending.groups += [TrainingGroup("batched", group) for group in groups_of(batched)]
    return pending


def train_held(group: TrainingGroup, store: Store, ops: Operational,
               on_epoch: EpochCallback | None = None) -> GridOutcome:
    """Lock the group's runs (skipping those another process holds) and train them by the group's path."""
    records, skipped, errors = [], [], []
    with contextlib.ExitStack() as stack:
        held, locks = [], []
        for spec in group.specs:
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
            if held and group.trainer == "kernel":
                records.append(train_kernel_run(held[0], paths[0], ops.data_dir, str(resolve_device(ops.device)),
                                                ops.download))
            elif held and group.trainer == "sequential":
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
    store = prepare_store(experiment, root, ops)
    pending = pending_groups(store, specs, ops)
    outcome = GridOutcome(pending.records, [], list(pending.errors), list(pending.notices))
    done = len(pending.records)
    for group in pending.groups:
        for offset, spec in enumerate(group.specs):
            if on_run is not None:
                on_run(done + offset, len(specs), spec, "batched" if len(group.specs) > 1 else "training")
        done += len(group.specs)
        result = train_held(group, store, ops, on_epoch)
        outcome.records += result.records
        outcome.skipped += result.skipped
        outcome.errors += result.errors
    return outcome


def set_aside(path: Path) -> Path:
    """Move a damaged run file out of the way (to NAME.h5.corrupt, or .corrupt.N when that exists: an earlier
    damaged file is never overwritten), so that the run is retrained from scratch; returns the new path."""
    aside = path.with_name(path.name + ".corrupt")
    number = 1
    while aside.exists() or aside.is_symlink():
        aside, number = path.with_name(f"{path.name}.corrupt.{number}"), number + 1
    path.rename(aside)
    return aside


def open_for_report(store: Store) -> tuple[list[RunRecord], list[str]]:
    """Every readable, undamaged run of the store (every part checked, weights included), and one line per
    run file that is unreadable, damaged or misnamed: those runs are left out of the statistics."""
    records, errors = [], []
    for path in store.run_paths():
        try:
            record = read_run(path, weights=False, run_id=path.stem)
        except WorkError as err:
            errors.append(str(err))
            continue
        if record.damaged:
            errors.append(damage_report(path, record.damaged))
        else:
            records.append(record)
    return records, errors
