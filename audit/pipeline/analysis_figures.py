"""What `audit plot STORE landscape|esd|hessian-density` draws, as plain arrays per run for
audit.render.analysis_plots: the loss landscapes and Hessian densities cached in the run files
(`audit landscape`, `audit density`) and each layer's spectrum, computed from the stored weights when drawn."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from audit.errors import UsageError, WorkError
from audit.models.architecture import loads
from audit.pipeline.esd import run_esd
from audit.spec.run import KERNEL_PREFIX
from audit.store.files import read_run
from audit.store.record import RunRecord
from measures.spectra import MIN_EVALS

KINDS = ("landscape", "esd", "hessian-density")
# figure kind → (the analysis cached in the run file, its part, the command that computes it)
CACHED = {"landscape-1d": ("landscape", "line", "audit landscape"),
          "landscape-2d": ("landscape", "plane", "audit landscape"),
          "hessian-density": ("density", "density", "audit density")}
PART_KEYS = {"line": ("alpha", "loss", "accuracy"), "plane": ("a", "b", "loss", "accuracy"),
             "density": ("grid", "density", "nodes", "weights")}


def analysis_arrays(record: RunRecord, name: str, part: str) -> dict[str, np.ndarray] | None:
    """The arrays of one part (line, plane, density) of an analysis cached in a run file, without their
    prefix, or None when the run has none. The store keeps each part as its own entry, analyses["NAME/PART"]
    (audit.store.record.ANALYSES: landscape/line, landscape/plane, density); also read: analyses["NAME"]
    holding arrays named PART/KEY, a nested {PART: {KEY: ...}}, or flat {KEY: ...}."""
    analyses = record.analyses
    entry = analyses.get(f"{name}/{part}") or analyses.get(name)
    if not entry:
        return None
    arrays = entry.get("arrays", entry)
    prefix = f"{part}/"
    found = {key.removeprefix(prefix): value for key, value in arrays.items() if key.startswith(prefix)}
    if not found and isinstance(arrays.get(part), Mapping):
        found = dict(arrays[part])
    if not found:
        found = {key: arrays[key] for key in PART_KEYS[part] if key in arrays}
    if PART_KEYS[part][0] not in found:
        return None
    return {key: np.asarray(value) for key, value in found.items()}


def check_kinds(kinds: Sequence[str]) -> list[str]:
    """The figure kinds for `audit plot` kinds: landscape is its 1D line and its 2D plane."""
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown:
        raise UsageError(f"unknown figure '{unknown[0]}': use one of {', '.join(KINDS)}")
    return [part for kind in kinds for part in (("landscape-1d", "landscape-2d") if kind == "landscape" else (kind,))]


def drawable(record: RunRecord) -> str | None:
    """Why a run has nothing to draw, or None."""
    if record.spec.model.startswith(KERNEL_PREFIX):
        return "a kernel fit has no layers"
    if record.status == "diverged":
        return "diverged"
    if not record.final:
        return "no final weights yet"
    return None


def first_seeds(records: Sequence[RunRecord]) -> list[RunRecord]:
    """The lowest-seed run of each variant of each family: one spectrum per variant keeps the panels legible."""
    chosen: dict[tuple[str, str], RunRecord] = {}
    for record in sorted(records, key=lambda r: r.spec.seed):
        chosen.setdefault((record.spec.family_key(), record.spec.variant_label), record)
    return list(chosen.values())


def run_entry(record: RunRecord) -> dict[str, Any]:
    recorded = loads(record.attrs.get("architecture"))
    return {"spec": record.spec, "run_id": record.run_id, "variant": record.spec.variant_label,
            "label": f"{record.spec.variant_label} · seed {record.spec.seed}",
            "num_classes": recorded.get("num_classes") if recorded else None}


def figure_runs(records: Sequence[RunRecord], kinds: Sequence[str], root: Path | str = "STORE",
                min_evals: int = MIN_EVALS["min_evals"],
                data_dir: Path | None = None) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Figure kind (landscape-1d, landscape-2d, esd, hessian-density) → its runs for
    audit.render.analysis_plots.write_analysis_figures, and one note per kind for the runs left out (with the
    command that computes a missing analysis). Spectra and 2D landscapes (a panel per run) are of the lowest
    seed of each variant per family; 1D landscapes and densities of every run."""
    runs: dict[str, list[dict[str, Any]]] = {}
    notes: list[str] = []
    # a report reads runs without their weights; the spectra need them, and drawable() looks for them
    records = [read_run(r.path, run_id=r.run_id) if not r.final and r.path is not None and r.status == "complete" else r
               for r in records]
    usable = sorted((record for record in records if drawable(record) is None), key=lambda r: r.spec.seed)
    for kind in check_kinds(kinds):
        if kind == "esd":
            label_ends = [r for r in usable if r.spec.variant in ("true", "random-labels")]  # the comparison drawn
            drawn, failed = esd_runs(first_seeds(label_ends or usable), min_evals, data_dir)
            notes += failed
        else:
            name, part, command = CACHED[kind]
            cached = [r for r in usable if analysis_arrays(r, name, part) is not None]
            if len(cached) < len(usable):
                notes.append(f"{kind}: drawn for the {len(cached)} of {len(usable)} runs that have it cached "
                             f"(`{command} {root} [RUN...]` computes it)")
            chosen = first_seeds(cached) if kind == "landscape-2d" else cached  # a panel per run: one seed
            drawn = [{**run_entry(r), part: analysis_arrays(r, name, part)} for r in chosen]
        if drawn:
            runs[kind] = drawn
    skipped = [(record, drawable(record)) for record in records if drawable(record) is not None]
    if skipped:
        record, why = skipped[0]
        more = f" and {len(skipped) - 1} more" if len(skipped) > 1 else ""
        notes.append(f"run {record.run_id} ({why}){more} left out of the figures")
    return runs, notes


def esd_runs(records: Sequence[RunRecord], min_evals: int,
             data_dir: Path | None) -> tuple[list[dict[str, Any]], list[str]]:
    drawn, failed = [], []
    for record in records:
        try:
            drawn.append({**run_entry(record), "layers": run_esd(record, min_evals=min_evals, data_dir=data_dir)})
        except WorkError as err:
            failed.append(f"esd: {err}")
    return drawn, failed
