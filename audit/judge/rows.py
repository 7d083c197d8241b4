"""Stored runs → plain rows: one per run, its family, hyperparameters and measure values."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from audit.spec.run import INPUT_VARIANTS, LABEL_VARIANTS, USER_DATA_FIELDS, RunSpec
from audit.store.record import RunRecord, cache_key, measure_value


def family_labels(specs: list[RunSpec]) -> dict[str, str]:
    """A readable name per family: model·dataset, plus the settings that differ between families."""
    by_family: dict[str, RunSpec] = {}
    for spec in specs:
        by_family.setdefault(spec.family_key(), spec)
    skip = {"variant", "corrupt", "seed", "model", "dataset", *USER_DATA_FIELDS}  # user data: the variant's data
    varying = [f.name for f in dataclasses.fields(RunSpec) if f.name not in skip
               and len({getattr(s, f.name) for s in by_family.values()}) > 1]
    labels = {}
    for key, spec in by_family.items():
        extra = "".join(f" {name}={getattr(spec, name)}" for name in varying)
        labels[key] = f"{spec.model}·{spec.dataset}{extra}"
    return labels


def hyperparameters(spec: RunSpec) -> dict[str, Any]:
    """The settings a sweep varies, with an mlp-DxW model split into its width and depth."""
    values = {k: v for k, v in spec.to_dict().items() if k not in ("variant", "corrupt", "seed")}
    match = re.match(r"^mlp-(\d+)x(\d+)$", spec.model)
    if match:
        values["depth"], values["width"] = int(match.group(1)), int(match.group(2))
    return values


def run_rows(records: list[RunRecord], names: list[str], at: str | None = None) -> list[dict[str, Any]]:
    """One plain row per run, in the shape of the JSON document. With `at` (a keep point such as loss:0.1),
    accuracies, gap and measures are those at that point; runs that never reached it have none."""
    labels = family_labels([r.spec for r in records])
    rows = []
    for record in records:
        spec, attrs = record.spec, record.attrs
        if at is not None:
            point = record.kept.get(at, {}).get("attrs", {})
            attrs = {**attrs, "train_acc": point.get("train_acc"), "test_acc": point.get("test_acc"),
                     "epochs": int(point["epoch"]) if "epoch" in point else None}
        train_acc, test_acc = attrs.get("train_acc"), attrs.get("test_acc")
        gap = train_acc - test_acc if train_acc is not None and test_acc is not None else None
        rows.append({
            "run_id": record.run_id, "family": labels[spec.family_key()], "model": spec.model,
            "dataset": spec.dataset, "variant": spec.variant, "corrupt": spec.corrupt, "seed": spec.seed,
            "status": record.status, "fitted": record.fitted, "train_acc": train_acc, "test_acc": test_acc,
            "train_top5": attrs.get("train_top5") if at is None else None,
            "test_top5": attrs.get("test_top5") if at is None else None, "gap": gap, "epochs": attrs.get("epochs"), "steps_to_fit": attrs.get("steps_to_fit"),
            "test_size": attrs.get("test_size"), "hyperparameters": hyperparameters(spec),
            "measures": {name: measure_value(record, name, at) for name in names},
            "reasons": {name: record.measures[cache_key(name, at)]["reason"] for name in names
                        if record.measures.get(cache_key(name, at), {}).get("reason")},
            "seconds": {name: record.measures[cache_key(name, at)].get("seconds") for name in names
                        if cache_key(name, at) in record.measures},
        })
    rows.sort(key=lambda r: (r["family"], variant_rank(r["variant"]), r["variant"], r["corrupt"] or 0.0, r["seed"],
                             r["run_id"]))
    return rows


def variant_rank(variant: str) -> int:
    """The order of variants in tables: the label axis, the built-in input variants, then plugins' variants."""
    built_in = LABEL_VARIANTS + INPUT_VARIANTS
    return built_in.index(variant) if variant in built_in else len(built_in)


def input_variants(variants: Any) -> list[str]:
    """The variants on the input axis among `variants`, in table order: all but the label axis's."""
    return sorted((v for v in variants if v not in LABEL_VARIANTS), key=lambda v: (variant_rank(v), v))


def variant_label(row: dict[str, Any]) -> str:
    return f"corrupt:{row['corrupt']:g}" if row["variant"] == "corrupt" else row["variant"]
