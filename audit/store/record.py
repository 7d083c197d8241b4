"""The run record: everything a run file holds, in memory, and its checksums."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from audit.spec.run import RunSpec

SCHEMA = 4  # 1: first release; 2: train_size/test_size attributes and weights/kept; 3: a digest of every part;
# 4: analyses (landscape/line, landscape/plane, density). A file is written as 4 only when it holds an analysis,
# so that an audit from before them refuses it ("newer schema") instead of rewriting it without them.
WRITTEN_WITHOUT_ANALYSES = 3
# (older schemas are read and migrated in memory; they are "unverified" until `audit verify --upgrade`)

STATUSES = ("running", "complete", "diverged")
ANALYSES = ("landscape/line", "landscape/plane", "density")  # the parts an analysis may fill; each an HDF5 group
# groups that only hold analysis parts (written, with an empty part of their own, whenever one of theirs is)
ANALYSIS_GROUPS = tuple(sorted({name.partition("/")[0] for name in ANALYSES if "/" in name}))


@dataclass
class RunRecord:
    """Everything a run file holds, in memory."""

    spec: RunSpec
    status: str = "running"
    fitted: bool = False
    attrs: dict[str, Any] = field(default_factory=dict)  # timings, versions, outcome summary
    data: dict[str, Any] = field(default_factory=dict)  # what regenerates the fitted data
    init: dict[str, np.ndarray] = field(default_factory=dict)
    final: dict[str, np.ndarray] = field(default_factory=dict)
    history: dict[str, np.ndarray] = field(default_factory=dict)
    resume: bytes | None = None
    measures: dict[str, dict[str, Any]] = field(default_factory=dict)
    kept: dict[str, dict[str, Any]] = field(default_factory=dict)  # tag → {"attrs": {...}, "weights": {...}}
    analyses: dict[str, dict[str, Any]] = field(default_factory=dict)  # ANALYSES name → {"attrs", "arrays"}
    path: Path | None = None
    verified: bool = False  # read with every part checked against its digest (schema 3)
    damaged: dict[str, str] = field(default_factory=dict)  # part → what is wrong; those parts are left out

    @property
    def run_id(self) -> str:
        return self.spec.run_id


def cache_key(name: str, at: str | None) -> str:
    """Measures at a keep point are cached as NAME@POINT, e.g. l2-margin@loss:0.1."""
    return name if at is None else f"{name}@{at}"


def measure_value(record: RunRecord, name: str, at: str | None = None) -> float | None:
    entry = record.measures.get(cache_key(name, at))
    if entry is None:
        return None
    value = entry.get("value")
    return None if value is None else float(value)
