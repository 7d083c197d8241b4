"""The plan of an experiment: its runs (or its shard's) and the state each is in the store; the plan of scoring a
store: the measures each complete run lacks. Both with their time on this machine; they read, never write."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import measures
from audit.errors import WorkError
from audit.pipeline.changed import changed_runs, refuse_changed
from audit.pipeline.scaling import FROM_FITS, Scaling
from audit.pipeline.score import check_reached, is_cached, measure_names, parse_settings
from audit.spec.experiment import ExperimentSpec
from audit.spec.overrides import check_point, shard_of
from audit.spec.run import KERNEL_PREFIX, RunSpec
from audit.store.digests import damage_line, damage_report
from audit.store.directory import open_store
from audit.store.files import BadRunFile, NewerSchema, read_run
from audit.store.record import RunRecord
from audit.train.device import resolve_device

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
FINISHED = ("complete", "diverged")  # states `audit run` does not train again
NOT_TRAINED = ("complete", "diverged", "newer schema (refused)")  # planned states that train nothing
SHOWN = ("variant", "corrupt", "seed", "model", "dataset")  # columns of their own in the plan


def varying(specs: list[RunSpec]) -> list[str]:
    """The spec fields whose values differ between the runs, beside those the plan shows as columns."""
    rows = [s.to_dict() for s in specs]
    return [k for k in rows[0] if k not in SHOWN and len({json.dumps(r[k]) for r in rows}) > 1] if rows else []


def plan_items(experiment: ExperimentSpec, root: Path, shard: tuple[int, int] | None = None,
               scale: Scaling | None = None, names: list[str] | None = None) -> list[dict[str, Any]]:
    """One item per run of the experiment (or of its shard): its id, variant, seed, model, dataset, the settings
    that vary between runs, its spec, its state in the store at root as `audit run` would find it (a corrupt
    file is retrained, a newer one refused) and, given the fits at this machine's rate, the most seconds its
    training takes and which estimate that is; given the measures `audit run` scores, how many of them it lacks
    and their estimated seconds (None: not estimated)."""
    items = []
    runs = shard_of(experiment.expand(), shard)
    fields = varying(experiment.expand())
    for run in runs:
        found = inspect_run(root / "runs" / f"{run.run_id}.h5")
        settings = run.to_dict()
        item = {"run_id": run.run_id, "variant": run.variant_label, "seed": run.seed, "model": run.model,
                "dataset": run.dataset, "settings": " ".join(f"{k}={settings[k]}" for k in fields),
                "state": PLANNED.get(found.state, found.state), "reason": found.reason, "seconds_at_most": None,
                "spec": settings}
        if scale is not None:
            seconds, source = scale.training(run)
            item.update(seconds_at_most=round(seconds, 1), estimate_from=source)
        if scale is not None and names is not None:
            done = found.record if found.state in FINISHED else None  # else trained (again), then scored
            todo = to_score(run, done, names, {}) if found.state != "newer" else []
            families, missing = scale.scoring(run, todo)
            families = {family: round(seconds, 3) for family, seconds in families.items()}
            item.update(measures_to_score=len(todo), score_seconds=round(sum(families.values()), 1),
                        score_families=families, not_estimated=missing, fits_cover=scale.coverage(run))
        items.append(item)
    return items


def to_score(spec: RunSpec, record: RunRecord | None, names: list[str], overrides: dict[str, dict[str, Any]],
             recompute: bool = False, at: str | None = None) -> list[str]:
    """The measures `audit score` would compute on a run (record None: one not trained yet, every measure), as
    audit.pipeline.score.score_store decides: the uncached ones (every one with `recompute`), none on a kernel
    run (its measure is written when it is fitted), on a run that is not complete or that never reached `at`."""
    if spec.model.startswith(KERNEL_PREFIX):
        return []
    if record is None:
        return list(names)
    if record.status != "complete" or (at is not None and at not in record.kept):
        return []
    return [n for n in names if recompute or not is_cached(record, n, measures.resolved_settings(
        n, overrides.get(n)), at)]


def plan_score(store: Path | None, measure: list[str], all_measures: bool, setting: list[str],
               recompute: bool = False, device: str = "auto", at: str | None = None,
               scale: Scaling | None = None) -> dict[str, Any]:
    """`audit score --plan`: checked as `audit score` checks (measure names, --set, device, store, --at, changed
    models), the measures each complete run lacks and their estimated seconds here, per family and in all.
    Computes nothing, writes nothing."""
    names = measure_names(measure, all_measures)
    overrides = parse_settings(setting)
    resolve_device(device)
    target = open_store(store)
    at = check_point(at)
    runs, records, errors = [], [], []
    for path in target.run_paths():
        try:
            record = read_run(path, weights=False, run_id=path.stem)
        except WorkError as err:
            errors.append(str(err))
            continue
        if any(not part.startswith("measures/") for part in record.damaged):
            errors.append(damage_report(path, record.damaged))
            continue
        records.append(record)
        runs.append((record, to_score(record.spec, record, names, overrides, recompute, at)))
    refuse_changed(changed_runs([r for r, _ in runs if r.status == "complete"]), "score")  # as score_runs does
    notes = check_reached(records, at, target.root)
    scale = scale or Scaling.here()
    items, families = [], {}
    for record, todo in runs:
        seconds, missing = scale.scoring(record.spec, todo)
        for name in todo:
            family = families.setdefault(measures.get(name).family, {"measures": [], "runs": set(), "seconds": 0.0,
                                                                     "not_estimated": 0})
            family["measures"] = list(dict.fromkeys([*family["measures"], name]))
            family["runs"].add(record.run_id)
            family["not_estimated"] += name in missing
        for family, value in seconds.items():
            families[family]["seconds"] += value
        if record.status == "complete":
            items.append({"run_id": record.run_id, "variant": record.spec.variant_label, "seed": record.spec.seed,
                          "model": record.spec.model, "to_compute": todo, "fits_cover": scale.coverage(record.spec),
                          "seconds": round(sum(seconds.values()), 2), "not_estimated": missing})
    rows = [{"family": f, "measures": v["measures"], "runs": len(v["runs"]), "seconds": round(v["seconds"], 2),
             "not_estimated": v["not_estimated"]} for f, v in families.items()]
    missing = sorted({n for i in items for n in i["not_estimated"]})
    return {"store": str(target.root), "measures": names, "at": at, "runs": items, "families": rows,
            "estimate": {**scale.describe(), "seconds": round(sum(r["seconds"] for r in rows), 1),
                         "extrapolated": sum(i["fits_cover"] == "extrapolated" and bool(i["to_compute"]) for i in items),
                         "computations": sum(len(i["to_compute"]) for i in items), "from": FROM_FITS,
                         "not_estimated": missing, "at_default_settings": sorted(overrides)},
            "notes": notes, "errors": errors}
