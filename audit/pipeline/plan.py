"""The plan of an experiment: its runs (or its shard's) and the state each is in the store. Reads, never writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from audit.errors import WorkError
from audit.spec.experiment import ExperimentSpec
from audit.spec.overrides import shard_of
from audit.store.files import read_run


def run_state(path: Path) -> str:
    """What a run file holds: 'new' (no file), 'running', 'complete', 'diverged', or 'corrupt' (a part fails its
    check, weights included). Read only: a corrupt file keeps its name and bytes."""
    if not path.exists():
        return "new"
    try:
        return read_run(path, weights=True).status
    except WorkError:
        return "corrupt"


def plan_items(experiment: ExperimentSpec, root: Path, shard: tuple[int, int] | None = None) -> list[dict[str, Any]]:
    """One item per run of the experiment (or of its shard): its id, variant, seed, model, dataset, spec, and its
    state in the store at root, as `audit run` would find it (a corrupt file is retrained)."""
    items = []
    for run in shard_of(experiment.expand(), shard):
        state = run_state(root / "runs" / f"{run.run_id}.h5")
        items.append({"run_id": run.run_id, "variant": run.variant_label, "seed": run.seed, "model": run.model,
                      "dataset": run.dataset, "state": "corrupt (retrained)" if state == "corrupt" else state,
                      "spec": run.to_dict()})
    return items
