"""The plan of an experiment: its runs (or its shard's) and the state each is in the store. Reads, never writes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit.errors import WorkError
from audit.pipeline.cost import run_flops
from audit.spec.experiment import ExperimentSpec
from audit.spec.overrides import shard_of
from audit.spec.run import RunSpec
from audit.store.digests import damage_line
from audit.store.files import BadRunFile, NewerSchema, read_run
from audit.store.record import RunRecord

TRAINERS = ("batched", "sequential")  # the trainer path a run was started with (the run file's `trainer`)


@dataclass(frozen=True)
class FileState:
    """What a run file holds, as `audit run` acts on it: state is 'new' (no file), 'running', 'complete',
    'diverged', 'corrupt' (a part that training wrote fails its check: retrained) or 'newer' (a newer schema:
    refused); reason is the one line saying why for the last two; trainer the path the file recorded."""

    state: str
    reason: str | None = None
    trainer: str | None = None
    record: RunRecord | None = None  # the run as read (weights verified, not kept), when it is usable


def inspect_run(path: Path) -> FileState:
    """The state of the run file at path (named by its run id). Read only: a damaged file keeps its name and
    bytes. A damaged cached measure alone leaves the run complete: `audit score` recomputes it."""
    if not path.exists() and not path.is_symlink():
        return FileState("new")
    try:
        record = read_run(path, weights=False, run_id=path.stem)  # the reader checks the weights either way
    except NewerSchema as err:
        return FileState("newer", str(err))
    except BadRunFile as err:
        return FileState("corrupt", err.problem)
    except WorkError as err:
        return FileState("corrupt", str(err))
    trainer = record.attrs.get("trainer")
    trained = [part for part in record.damaged if not part.startswith("measures/")]
    if trained:
        damaged = damage_line({part: record.damaged[part] for part in trained})
        return FileState("corrupt", f"{path} is damaged: {damaged}", trainer)
    return FileState(record.status, None, trainer if trainer in TRAINERS else None, record)


def run_state(path: Path) -> str:
    """inspect_run's state alone."""
    return inspect_run(path).state


PLANNED = {"corrupt": "corrupt (retrained)", "newer": "newer schema (refused)"}
SHOWN = ("variant", "corrupt", "seed", "model", "dataset")  # columns of their own in the plan


def varying(specs: list[RunSpec]) -> list[str]:
    """The spec fields whose values differ between the runs, beside those the plan shows as columns."""
    rows = [s.to_dict() for s in specs]
    return [k for k in rows[0] if k not in SHOWN and len({json.dumps(r[k]) for r in rows}) > 1] if rows else []


def plan_items(experiment: ExperimentSpec, root: Path, shard: tuple[int, int] | None = None,
               rate: float | None = None) -> list[dict[str, Any]]:
    """One item per run of the experiment (or of its shard): its id, variant, seed, model, dataset, the settings
    that vary between runs, its spec, its state in the store at root as `audit run` would find it (a corrupt
    file is retrained, a newer one refused) and, given a training rate in FLOP/s, the most seconds it takes."""
    items, cache = [], {}
    runs = shard_of(experiment.expand(), shard)
    fields = varying(experiment.expand())
    for run in runs:
        found = inspect_run(root / "runs" / f"{run.run_id}.h5")
        settings = run.to_dict()
        items.append({"run_id": run.run_id, "variant": run.variant_label, "seed": run.seed, "model": run.model,
                      "dataset": run.dataset, "settings": " ".join(f"{k}={settings[k]}" for k in fields),
                      "state": PLANNED.get(found.state, found.state), "reason": found.reason,
                      "seconds_at_most": None if rate is None else round(run_flops(run, cache) / rate, 1),
                      "spec": settings})
    return items
