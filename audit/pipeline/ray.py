"""Running a grid on Ray: a task per training group, retried, gathered into one store."""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from audit.errors import UsageError
from audit.pipeline.grid import (
    GridOutcome,
    RunCallback,
    TrainingGroup,
    pending_groups,
    prepare_store,
    shard_of,
    train_held,
)
from audit.spec.experiment import ExperimentSpec
from audit.spec.run import RunSpec
from audit.store.directory import Store
from audit.store.locks import LOCK_STALE_SECONDS
from audit.train.device import Operational

RAY_RETRIES = 3


def _train_task(group: TrainingGroup, root: str, ops: Operational, threads: int) -> GridOutcome:
    """One Ray task: train a group into the store; wait out locks left by a dead predecessor on another host."""
    torch.set_num_threads(max(1, threads))
    store = Store(Path(root))
    outcome = train_held(group, store, ops)
    deadline = time.monotonic() + LOCK_STALE_SECONDS + 60
    while outcome.skipped and time.monotonic() < deadline:
        time.sleep(5)
        held = {line.split(":")[0] for line in outcome.skipped}
        retry = train_held(TrainingGroup(group.trainer, [s for s in group.specs if s.run_id in held]), store, ops)
        outcome = GridOutcome(outcome.records + retry.records, retry.skipped, outcome.errors + retry.errors)
    return outcome


def run_with_ray(experiment: ExperimentSpec, root: Path, ops: Operational, address: str | None = None,
                 cpus_per_run: float = 1, gpus_per_run: float = 0, shard: tuple[int, int] | None = None,
                 on_run: RunCallback | None = None, init_options: dict | None = None) -> GridOutcome:
    """Send every training group of the experiment (or its shard) to Ray and wait for all of them."""
    try:
        import ray  # optional dependency (pip install -e '.[ray]')
    except ImportError:
        raise UsageError("the Ray backend needs Ray: pip install -e '.[ray]'") from None
    if cpus_per_run <= 0 or gpus_per_run < 0:
        raise UsageError("--cpus-per-run must be positive and --gpus-per-run not negative")
    specs = shard_of(experiment.expand(), shard)
    store = prepare_store(experiment, root, ops)
    pending = pending_groups(store, specs, ops)
    started = not ray.is_initialized()
    # Ray prints worker-death notices on the driver's stdout; stdout is for results, so they go to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        if started:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, **(init_options or {}))
        try:
            outcome = _gather(ray, store, specs, pending.records, pending.groups, ops, cpus_per_run, gpus_per_run,
                              on_run)
            return GridOutcome(outcome.records, outcome.skipped, pending.errors + outcome.errors, pending.notices)
        finally:
            if started:
                ray.shutdown()


def _gather(ray, store: Store, specs: list[RunSpec], records: list, groups: list[TrainingGroup], ops: Operational,
            cpus_per_run: float, gpus_per_run: float, on_run: RunCallback | None) -> GridOutcome:
    """Submit one task per group and collect their outcomes as they finish."""
    task = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=RAY_RETRIES)(_train_task)
    device_ops = replace(ops, device="cuda" if gpus_per_run > 0 else ops.device)
    pending = {task.remote(group, str(store.root.resolve()), device_ops, int(cpus_per_run)): group
               for group in groups}
    outcome = GridOutcome(records, [], [])
    done = len(records)
    while pending:
        finished, _ = ray.wait(list(pending), num_returns=1)
        group = pending.pop(finished[0])
        try:
            result = ray.get(finished[0])
        except Exception as err:  # the task failed after its retries: its runs stay resumable in the store
            outcome.errors.append(f"runs {', '.join(s.run_id for s in group.specs)}: the Ray task failed after "
                                  f"{RAY_RETRIES} retries ({type(err).__name__}); `audit run` resumes them")
            continue
        for spec in group.specs:
            if on_run is not None:
                on_run(done, len(specs), spec, "done on Ray")
            done += 1
        outcome.records += result.records
        outcome.skipped += result.skipped
        outcome.errors += result.errors
    return outcome
