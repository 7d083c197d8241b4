"""`audit run`: an experiment with the command line's overrides, checked, trained into its store (in this
process, on Ray, or data-parallel under torchrun) and scored."""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import measures
from audit.data.fitted import build_run_data
from audit.data.sources import load_base
from audit.errors import UsageError, WorkError, user_frame
from audit.models.registry import model_entry
from audit.pipeline.changed import changed_runs, own_model, refuse_changed, replace_changed
from audit.pipeline.cost import TRAIN_FRACTION
from audit.pipeline.grid import GridOutcome, run_grid
from audit.pipeline.names import check_experiment
from audit.pipeline.plan import NOT_TRAINED, inspect_run, plan_items
from audit.pipeline.ray import run_with_ray
from audit.pipeline.scaling import FROM_FITS, FROM_FLOPS, Scaling
from audit.pipeline.score import Scored, Silent, Tracker, measure_names, score_store
from audit.registry import raised_in
from audit.spec.experiment import ExperimentSpec
from audit.spec.overrides import (
    apply_overrides,
    check_out,
    parse_checkpoint,
    parse_keep_option,
    parse_shard,
    shard_of,
    store_name,
)
from audit.spec.run import KERNEL_PREFIX, RunSpec
from audit.store.directory import DEFAULT_ROOT, create_store
from audit.store.record import RunRecord
from audit.train.ddp import init_ddp, leave_together
from audit.train.device import Operational, ddp_world, resolve_device
from audit.train.state import make_model

BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class RunOptions:
    """How `audit run` trains and scores, as given on the command line (none of it changes a run id)."""

    measure: tuple[str, ...] = ()
    all_measures: bool = False
    device: str = "auto"
    checkpoint_every: str | None = None
    keep: str | None = None
    batch: bool = True
    precision: str = "auto"
    compile: bool = False
    data_dir: Path | None = None
    download: bool = False
    shard: str | None = None
    backend: str = "local"
    address: str | None = None
    cpus_per_run: float = 1
    gpus_per_run: float = 0
    ddp: bool = False
    out: Path | str | None = None  # a str straight from the command line: check_out refuses an empty one
    retrain: bool = False  # train again, in place, the runs whose user model changed since they were trained


@dataclass(frozen=True)
class PreparedRun:
    """An experiment checked and ready to train: its runs, store, operational settings, measures, shard."""

    experiment: ExperimentSpec
    root: Path
    ops: Operational
    names: list[str]
    shard: tuple[int, int] | None
    options: RunOptions


def prepare_run(experiment: ExperimentSpec, overrides: dict[str, Any], options: RunOptions) -> PreparedRun:
    """The experiment with its overrides, every name and option checked before any work: a UsageError else."""
    spec = check_experiment(apply_overrides(experiment, overrides))
    names = measure_names(list(options.measure), options.all_measures)
    if not options.measure and not options.all_measures and all(r.model.startswith(KERNEL_PREFIX)
                                                                 for r in spec.expand()):
        names = ["rkhs-norm"]  # a kernel experiment: its measure is stored when each run is fitted
    every, seconds = parse_checkpoint(options.checkpoint_every)
    resolve_device(options.device)
    keep = parse_keep_option(options.keep)
    if keep is not None:
        spec = dataclasses.replace(spec, keep=keep)
    shard = parse_shard(options.shard)
    if options.backend not in BACKENDS:
        raise UsageError(f"unknown backend '{options.backend}': use local or ray")
    if options.ddp and options.backend != "local":
        raise UsageError("--ddp trains one run over the processes of a torchrun launch: use it with --backend local")
    ops = Operational(device=options.device, checkpoint_every=every, checkpoint_seconds=seconds,
                      data_dir=options.data_dir, download=options.download, keep=spec.keep,
                      batch=options.batch and not options.ddp, precision=options.precision,
                      compile=options.compile, ddp=options.ddp)
    out = check_out(options.out)
    root = out if out is not None else DEFAULT_ROOT / store_name(spec, overrides)
    try:
        if root.exists() and not root.is_dir():
            raise UsageError(f"store path {root} is a file; choose a directory with --out")
        (root / "runs" / "0123456789ab.h5").exists()  # a path too long for a run file fails here, not later
    except (OSError, ValueError) as err:
        raise UsageError(f"cannot use store path {root}: {getattr(err, 'strerror', None) or err}; choose another "
                         "with --out") from None
    return PreparedRun(spec, root, ops, names, shard, options)


def changed_models(run: PreparedRun, dry: bool = False) -> list[str]:
    """Runs in the store whose user model changed since they were trained: refused in one line, or with
    --retrain set aside to train again in place (a line per run saying so; `dry`: only the run ids, nothing
    moved). Only user and plugin models are compared; nothing is read for an experiment of built-in models."""
    specs = shard_of(run.experiment.expand(), run.shard)
    if not any(own_model(model) for model in {s.model for s in specs}):
        return []
    found = (inspect_run(run.root / "runs" / f"{spec.run_id}.h5") for spec in specs)
    changed = changed_runs(f.record for f in found if f.record is not None)
    if not run.options.retrain:
        refuse_changed(changed, "run")
        return []
    return [record.run_id for record, _ in changed] if dry else replace_changed(changed)


def plan_run(run: PreparedRun, scale: Scaling | None = None) -> dict[str, Any]:
    """`audit run --plan`: everything checked as `audit run` checks it (data there and large enough, user models
    built and probed, changed models refused), then the runs with their varying settings and state, and the
    estimated time here: training from the bench/scaling.py fits where they cover the model (else from its
    FLOPs), scoring the measures the run would score from the fits, both at this machine's matmul rate
    probed now. Writes nothing."""
    check_data(run)
    retrained = set(changed_models(run, dry=True))
    scale = scale or Scaling.here()
    items = plan_items(run.experiment, run.root, run.shard, scale, run.names)
    for item in items:
        if item["run_id"] in retrained:
            item["state"] = "model changed (retrained)"
            families, missing = scale.scoring(RunSpec.from_dict(item["spec"]), run.names)  # trained, then scored
            item.update(measures_to_score=len(run.names), score_seconds=round(sum(families.values()), 1),
                        score_families=families, not_estimated=missing)
    trained = [i for i in items if i["state"] not in NOT_TRAINED]
    sources = {source: sum(i["estimate_from"] == source for i in trained) for source in (FROM_FITS, FROM_FLOPS)}
    families: dict[str, float] = {}
    for item in items:
        for family, seconds in item["score_families"].items():
            families[family] = families.get(family, 0.0) + seconds
    scoring = {"measures": len(run.names), "computations": sum(i["measures_to_score"] for i in items),
               "seconds": round(sum(families.values()), 1), "families": {k: round(v, 2) for k, v in families.items()},
               "not_estimated": sorted({n for i in items for n in i["not_estimated"]}), "from": FROM_FITS,
               "extrapolated": sum(i["fits_cover"] == "extrapolated" and i["measures_to_score"] > 0 for i in items)}
    described = scale.describe()
    return {"store": str(run.root), "runs": items,
            "estimate": {"seconds_at_most": round(sum(i["seconds_at_most"] for i in trained), 1),
                         "matmul_gflops": described["matmul_gflops"], "training_fraction": TRAIN_FRACTION,
                         "training_from": sources, "fits": described["fits"], "scoring": scoring}}


def check_data(run: PreparedRun) -> None:
    """Every dataset of the experiment is there (or downloaded) and large enough, before any store is made;
    with the Ray backend, Ray is installed."""
    specs = run.experiment.expand()
    for dataset, size in sorted({(r.dataset, r.train_size or 0) for r in specs}):
        available = len(load_base(dataset, run.ops.data_dir, run.ops.download).y_train)  # missing data fails here
        if size > available:
            raise UsageError(f"train size {size} is larger than the {available} training images of {dataset}")
    build_run_data(specs[0], run.ops.data_dir, run.ops.download)
    probe_models(specs, run.ops.data_dir, run.ops.download)
    if run.options.backend == "ray":
        try:
            import ray  # noqa: F401  (an optional dependency: pip install -e '.[ray]')
        except ImportError:
            raise UsageError("the Ray backend needs Ray: pip install -e '.[ray]'") from None


def probe_models(specs: list[RunSpec], data_dir: Path | None, download: bool) -> None:
    """Build each user's or plugin's model once and pass it two train inputs, before any store or run file is
    made: an error in its code is one line naming its file and line (exit 1), and wrong outputs a usage error.
    Lazy modules get their shapes here too."""
    for spec in {s.model: s for s in reversed(specs) if own_model(s.model)}.values():
        data = build_run_data(spec, data_dir, download)
        try:
            model = make_model(spec, data).eval()
            with torch.no_grad():
                out = model(data.x_train[:2])
        except (UsageError, WorkError):
            raise
        except Exception as err:
            source = model_entry(spec.model).source
            where = raised_in(err, Path(source["file"])) if source else "?"
            raise WorkError(f"model {spec.model} raised {type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"
                            f" (at {where}); nothing was written; `audit --debug run ...` shows the traceback") from err
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, data.num_classes):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise UsageError(f"model {spec.model} returned {shape} for 2 inputs of shape {tuple(data.input_shape)}; "
                             f"it must return logits of shape (batch, {data.num_classes}), one per class")


def train(run: PreparedRun, tracker: Tracker) -> GridOutcome:
    """Train every run of the experiment (or of its shard) into the store, skipping complete ones."""
    if run.options.backend == "ray":
        return run_with_ray(run.experiment, run.root, run.ops, run.options.address, run.options.cpus_per_run,
                            run.options.gpus_per_run, run.shard, tracker.on_run)
    return run_grid(run.experiment, run.root, run.ops, on_run=tracker.on_run, on_epoch=tracker.on_epoch,
                    shard=run.shard)


def run_experiment(run: PreparedRun, tracker: Tracker | None = None) -> Scored | None:
    """Train the prepared experiment and score its runs (those of its shard; the others are reported as they
    are). None on a data-parallel rank other than 0: rank 0 scores and reports."""
    check_data(run)
    leave = None
    if run.ops.ddp:
        leave = init_ddp(run.options.device)
    tracker = tracker or Silent()
    fresh = not run.root.exists()
    try:
        with tracker:
            outcome = train(run, tracker)
            if leave is not None:  # every rank leaves at once, rank 0's writes done
                leave = None
                leave_together()
            if run.ops.ddp and ddp_world()[0] != 0:
                return None
            if outcome.skipped and not outcome.records:
                raise WorkError(f"every run of this experiment is held by another process ({outcome.skipped[0]}); "
                                f"nothing was done here: `audit report {run.root}` once that one finishes")
            store = create_store(run.root)
            only = {s.run_id for s in shard_of(run.experiment.expand(), run.shard)} if run.shard else None
            scored = score_store(store, run.names, run.ops, {}, on_run=tracker.on_score, only=only,
                                 own={s.run_id for s in run.experiment.expand()})
    except Exception as err:
        if fresh and user_frame(err) is not None:  # the user's code failed mid-training: no half-made store stays
            shutil.rmtree(run.root, ignore_errors=True)
        raise
    finally:
        if leave is not None:
            leave()
    return Scored(store.root, scored.records, run.names, measures.judged(run.names), outcome.errors + scored.errors,
                  notices=outcome.notices + outcome.skipped + unkept(outcome.records, run.experiment.keep))


def unkept(records: list[RunRecord], keep: tuple[str, ...]) -> list[str]:
    """One line per keep point that complete runs passed without keeping it (trained before it was asked):
    `audit run` does not retrain complete runs, so asking it now keeps nothing for them."""
    lines = []
    for tag in keep:
        kind, _, amount = tag.partition(":")
        passed = [r for r in records if tag not in r.kept and len(r.history.get("epoch", [])) and (
            max(r.history["epoch"]) >= float(amount) if kind == "epoch" else min(r.history["train_loss"]) <= float(amount))]
        if passed:
            lines.append(f"{len(passed)} complete run{'s' * (len(passed) > 1)} passed {tag} before it was asked and "
                         f"kept no weights there (complete runs are not retrained): train into a new store with --out "
                         f"--keep {tag} to keep it")
    return lines
