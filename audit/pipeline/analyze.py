"""`audit landscape` and `audit density`: loss landscapes (Li et al. 2018) and Hessian eigenvalue densities
(stochastic Lanczos quadrature) of stored runs, on a seeded subset of each run's fitted train data, cached in
its run file (groups landscape/line, landscape/plane, density) under the run lock and reused while the
analysis version and its settings match."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audit.analyses import density as slq
from audit.analyses import landscape as li
from audit.data.fitted import build_run_data
from audit.errors import UsageError, WorkError
from audit.models.flops import forward_flops, matmul_rate
from audit.pipeline.report import find_run
from audit.spec.run import KERNEL_PREFIX
from audit.store.digests import damage_line
from audit.store.directory import Store, open_store
from audit.store.files import read_run, write_run
from audit.store.locks import run_lock_waiting
from audit.store.record import RunRecord
from audit.train.device import Operational, resolve_device
from audit.train.state import load_arrays, make_model

VERSION = 1  # of the analyses' definitions: a cached one of another version is computed again
SETTINGS = {
    "landscape": {"examples": 512, "seed": 0, "points": li.POINTS, "stretch": li.STRETCH,
                  "resolution": li.RESOLUTION, "span": li.SPAN},
    "density": {"examples": 512, "seed": 0, "probes": 4, "steps": slq.STEPS, "sigma": slq.SIGMA},
}
PARTS = {"landscape": ("landscape/line", "landscape/plane"), "density": ("density",)}
EFFICIENCY = 0.3  # the share of the matmul rate small evaluations reach (measured on the quick MLP, 2 CPU cores)
LOCK_WAIT_SECONDS = 300.0


def analysis_settings(kind: str, pairs: Sequence[str]) -> dict[str, Any]:
    """The defaults of `kind` with KEY=VALUE overrides (--set), each typed like its default."""
    settings = dict(SETTINGS[kind])
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in settings:
            raise UsageError(f"--set {pair}: use KEY=VALUE with KEY one of {', '.join(settings)}")
        try:
            settings[key] = type(settings[key])(value)
        except ValueError:
            raise UsageError(f"--set {key} must be a {type(settings[key]).__name__}, got {value!r}") from None
        if isinstance(settings[key], (int, float)) and settings[key] <= 0 and key not in ("seed",):
            raise UsageError(f"--set {key} must be positive, got {value}")
    if kind == "landscape" and settings["resolution"] % 2 == 0:
        raise UsageError(f"--set resolution must be odd (the final weights at the plane's centre), got "
                         f"{settings['resolution']}")
    return settings


def chosen_runs(store: Store, prefixes: Sequence[str]) -> list[Path]:
    """The runs named by id prefix, or by default per family the lowest-seed complete run of true and of
    random-labels (the comparison the figures draw)."""
    if prefixes:
        return [find_run(store, prefix) for prefix in prefixes]
    chosen: dict[tuple[str, str], tuple[int, Path]] = {}
    for path in store.run_paths():
        record = read_run(path, weights=False, run_id=path.stem)
        spec = record.spec
        if record.status != "complete" or spec.variant not in ("true", "random-labels") \
                or spec.model.startswith(KERNEL_PREFIX):
            continue
        key = (spec.family_key(), spec.variant)
        if key not in chosen or spec.seed < chosen[key][0]:
            chosen[key] = (spec.seed, path)
    if not chosen:
        raise UsageError(f"store {store.root} has no complete true or random-labels run of a network; name runs "
                         "by id (`audit report` lists them)")
    return [path for _, path in sorted(chosen.values(), key=lambda item: str(item[1]))]


def cached(record: RunRecord, kind: str, settings: dict[str, Any]) -> bool:
    stamp = json.dumps(settings, sort_keys=True)
    return all(part in record.analyses and record.analyses[part]["attrs"].get("settings") == stamp
               and int(record.analyses[part]["attrs"].get("version", -1)) == VERSION for part in PARTS[kind])


def forward_passes(kind: str, settings: dict[str, Any], parameters: int, examples: int) -> int:
    """Example-forward-passes (or, for the density, Hessian-vector products over every example) of one run."""
    if kind == "landscape":
        return (li.line_passes(examples, settings["points"], settings["stretch"])
                + li.plane_passes(examples, settings["resolution"]))
    return slq.hessian_vector_products(settings["probes"], settings["steps"], parameters) * examples


def lanczos_step_seconds(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, probes: int) -> float:
    """Seconds of one Lanczos step of `probes` probes run together, timed now on a 3-step density (after an
    untimed 1-step one: torch.func's warmup)."""
    slq.hessian_density(model, x, y, probes=probes, steps=1)
    start = time.perf_counter()
    slq.hessian_density(model, x, y, probes=probes, steps=3)
    return (time.perf_counter() - start) / 3


def estimate(paths: Sequence[Path], kind: str, settings: dict[str, Any], ops: Operational) -> dict[str, Any]:
    """What the analysis of these runs costs, before it starts: forward passes (Hessian-vector products for the
    density) and seconds on this machine, from the matmul rate measured now (landscape) or one
    few Lanczos steps timed now per architecture (density); runs cached with these settings cost nothing."""
    passes, seconds, todo = 0, 0.0, 0
    timed: dict[tuple[str, int], float] = {}
    rate = None
    for path in paths:
        record = read_run(path, weights=False, run_id=path.stem)
        if cached(record, kind, settings):
            continue
        record = read_run(path, run_id=path.stem)
        model, _, _, x, y = run_inputs(record, settings, ops)
        parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
        run_passes = forward_passes(kind, settings, parameters, len(y))
        passes += run_passes
        todo += 1
        if kind == "landscape":
            rate = rate or matmul_rate(device=str(resolve_device(ops.device)))
            seconds += run_passes * forward_flops(model, tuple(x.shape[1:])) / (rate * EFFICIENCY)
        else:
            key = (record.spec.model, len(y))
            together = min(settings["probes"], slq.CHUNK)
            if key not in timed:
                timed[key] = lanczos_step_seconds(model, x, y, together)
            rounds = -(-settings["probes"] // together)
            seconds += timed[key] * slq.lanczos_steps(settings["steps"], parameters) * rounds
    return {"runs": len(paths), "to_compute": todo, "forward_passes": passes, "seconds": seconds}


def run_inputs(record: RunRecord, settings: dict[str, Any], ops: Operational
               ) -> tuple[torch.nn.Module, dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor,
                          torch.Tensor]:
    """The run's model (final weights, on the device), its init and final states, and the seeded subset of
    its exact fitted train data."""
    device = resolve_device(ops.device)
    data = build_run_data(record.spec, ops.data_dir, ops.download, stored=record.data)
    if data.record["fingerprint_train"] != record.data.get("fingerprint_train"):
        raise WorkError(f"{record.path}: the rebuilt train data do not match the data the run fitted "
                        "(fingerprint mismatch); the dataset files changed since it was trained")
    model = make_model(record.spec, data)
    try:
        load_arrays(model, record.final)
    except RuntimeError:
        raise WorkError(f"{record.path}: the stored weights do not fit model {record.spec.model} as it is now; "
                        "`audit run --retrain` trains it again") from None
    model = model.to(device).eval()
    init = {k: torch.from_numpy(np.asarray(v)).to(device) for k, v in record.init.items()}
    final = {k: torch.from_numpy(np.asarray(v)).to(device) for k, v in record.final.items()}
    x, y = data.x_train, data.y_train
    x = x[:] if hasattr(x, "identity") else x  # lazily read images: the subset is read below
    index = li.subset(x, y, min(settings["examples"], len(y)), settings["seed"])
    return model, init, final, x[index.cpu()].to(device), y[index.cpu()].to(device)


def entry(result: dict[str, Any], settings: dict[str, Any], seconds: float, keys: Sequence[str]) -> dict[str, Any]:
    attrs = {**result["attrs"], "settings": json.dumps(settings, sort_keys=True), "version": VERSION,
             "seconds": seconds}
    arrays = {key: np.asarray(result[key]) for key in keys}
    return {"attrs": attrs, "arrays": arrays}


def compute(kind: str, record: RunRecord, settings: dict[str, Any], ops: Operational) -> dict[str, Any]:
    """The analysis parts of one run, as RunRecord.analyses entries."""
    model, init, final, x, y = run_inputs(record, settings, ops)
    start = time.perf_counter()
    if kind == "density":
        result = slq.hessian_density(model, x, y, probes=settings["probes"], steps=settings["steps"],
                                     seed=settings["seed"], sigma=settings["sigma"])
        result["attrs"] = {**result["attrs"], "trace_estimate": result["trace_estimate"],
                           "trace_stderr": result["trace_stderr"]}
        return {"density": entry(result, settings, time.perf_counter() - start,
                                 ("grid", "density", "nodes", "weights", "lengths"))}
    line = li.line(model, init, final, x, y, points=settings["points"], stretch=settings["stretch"])
    line_seconds = time.perf_counter() - start
    plane = li.plane(model, final, x, y, resolution=settings["resolution"], span=settings["span"],
                     seed=settings["seed"])
    return {"landscape/line": entry(line, settings, line_seconds, ("alpha", "loss", "accuracy")),
            "landscape/plane": entry(plane, settings, time.perf_counter() - start - line_seconds,
                                     ("a", "b", "loss", "accuracy"))}


def analyze_run(path: Path, kind: str, settings: dict[str, Any], ops: Operational) -> tuple[RunRecord, bool]:
    """Compute and cache the analysis of one run under its lock, unless cached with these settings; the record
    (with its analyses) and whether it was computed now."""
    with run_lock_waiting(path, LOCK_WAIT_SECONDS, poll_seconds=0.5):
        record = read_run(path, run_id=path.stem)
        if any(not part.startswith("measures/") for part in record.damaged):
            raise WorkError(f"{path} is damaged: {damage_line(record.damaged)}; `audit run` retrains the run")
        if record.status != "complete" or record.spec.model.startswith(KERNEL_PREFIX):
            raise UsageError(f"run {record.run_id} is {'a kernel fit' if record.status == 'complete' else record.status}"
                             f": {kind} needs a trained network's complete run")
        if cached(record, kind, settings):
            return record, False
        record.analyses.update(compute(kind, record, settings, ops))
        write_run(path, record, "analysis")
        return record, True


def analyze(store_path: Path | None, kind: str, prefixes: Sequence[str], settings: dict[str, Any],
            ops: Operational, on_estimate: Callable[[dict[str, Any]], None],
            on_run: Callable[[int, int, RunRecord, bool], None]) -> tuple[Store, list[RunRecord]]:
    """The analysis of the chosen runs of a store: the estimate first (on_estimate), then run by run."""
    store = open_store(store_path)
    paths = chosen_runs(store, prefixes)
    on_estimate(estimate(paths, kind, settings, ops))
    records = []
    for index, path in enumerate(paths):
        record, computed = analyze_run(path, kind, settings, ops)
        on_run(index, len(paths), record, computed)
        records.append(record)
    return store, records
