"""Analyses cached in a run file (loss landscapes, Hessian densities): read, matched against the settings they
were computed with, and written under the run lock, atomically, with every other part of the file kept.

An analysis part (audit.store.record.ANALYSES) is one HDF5 group, `landscape/line`, `landscape/plane` or
`density`, holding its arrays as datasets and its attributes, among them `settings` (canonical JSON) and
`version`; like every part it has its digest in the file's manifest, checked on every read. In a RunRecord it
is `record.analyses[name] = {"attrs": {...}, "arrays": {...}}`.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from audit.errors import WorkError
from audit.store.digests import damage_line, recomputable
from audit.store.files import read_run, stored_attrs, write_run
from audit.store.locks import run_lock_waiting
from audit.store.record import ANALYSES, RunRecord
from audit.store.regular import read_regular_text

LOCK_WAIT_SECONDS = 300.0  # writing an analysis is short: wait this long for another process that holds the run
REQUIRED = ("settings", "version")  # attributes every analysis part records, so that a cache can be judged


def settings_stamp(settings: Mapping[str, Any]) -> str:
    """Settings as an analysis part stores them (attribute `settings`): JSON with sorted keys."""
    return json.dumps(dict(settings), sort_keys=True)


def make_analysis(settings: Mapping[str, Any], version: int, arrays: Mapping[str, Any],
                  **attrs: Any) -> dict[str, Any]:
    """An entry of record.analyses: the arrays, and attributes stamped with its settings and version."""
    return {"attrs": {**attrs, "settings": settings_stamp(settings), "version": int(version)},
            "arrays": {key: np.asarray(value) for key, value in arrays.items()}}


def _check_name(name: str) -> None:
    if name not in ANALYSES:
        raise ValueError(f"unknown analysis part {name!r}: one of {', '.join(ANALYSES)}")


def read_analysis(record: RunRecord, name: str) -> dict[str, Any] | None:
    """The analysis part `name` of a run as read ({"attrs", "arrays"}), or None when the file holds none or
    holds a damaged one (named in record.damaged, never used)."""
    _check_name(name)
    return record.analyses.get(name)


def analysis_matches(record: RunRecord, name: str, settings: Mapping[str, Any], *, version: int) -> bool:
    """Whether the run's cached analysis part `name` was computed by this version with exactly these settings
    (same keys, values and types: 1 is not 1.0), so that it may be reused."""
    entry = read_analysis(record, name)
    if entry is None:
        return False
    stored, stored_version = entry["attrs"].get("settings"), entry["attrs"].get("version")
    if type(stored_version) is not int or stored_version != version or not _is_json_text(stored):
        return False
    stamp = json.loads(stored)
    return isinstance(stamp, dict) and settings_stamp(stamp) == settings_stamp(settings)


def _is_json_text(value: Any) -> bool:
    try:
        json.loads(value)
    except (TypeError, ValueError):
        return False
    return isinstance(value, str)


def _storable(name: str, key: str, value: Any) -> np.ndarray:
    """An analysis array as the file stores it: numbers as they are, text as HDF5 strings (object arrays)."""
    array = np.asarray(value)
    if array.dtype.kind == "U" or (array.dtype == object and all(isinstance(v, str) for v in array.ravel())):
        return array.astype(object)
    if array.dtype.kind not in "biufc":
        raise ValueError(f"analysis part {name!r}: array {key!r} of dtype {array.dtype} cannot be stored (numbers "
                         "or text)")
    return array


def _checked_entries(entries: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The entries to write, arrays as numpy arrays; ValueError for an unknown part or a missing stamp."""
    out = {}
    for name, entry in entries.items():
        _check_name(name)
        attrs = stored_attrs(dict(entry["attrs"]))  # as a read gives them back: nulls absent, containers JSON
        missing = [key for key in REQUIRED if key not in attrs]
        if missing:
            raise ValueError(f"analysis part {name!r} lacks attribute {', '.join(missing)} (make_analysis stamps "
                             "them)")
        if not _is_json_text(attrs["settings"]) or not isinstance(attrs["version"], int):
            raise ValueError(f"analysis part {name!r}: settings must be JSON text and version an integer "
                             f"(make_analysis stamps them), got {attrs['settings']!r} and {attrs['version']!r}")
        arrays = {key: _storable(name, key, value) for key, value in entry["arrays"].items()}
        out[name] = {"attrs": attrs, "arrays": arrays}
    return out


def holds_run_lock(path: Path) -> bool:
    """Whether this process holds the run lock of the run file at path (audit.store.locks.run_lock)."""
    try:
        info = json.loads(read_regular_text(path.with_suffix(".lock")))
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("pid") == os.getpid() and info.get("host") == socket.gethostname()


def write_analyses(path: Path, entries: Mapping[str, Mapping[str, Any]]) -> RunRecord:
    """Put analysis parts (name → {"attrs", "arrays"}) into the run file at path, for a caller that holds its
    run lock: the file is read whole (weights, kept points, measures, resume state), the parts set (replacing
    older ones of the same names) and the file replaced atomically (pause point write:analysis). Returns the
    record as written. A run still running, or damaged beyond its caches, is refused (WorkError) and left as
    it is; a damaged cached measure or analysis is dropped (it was never used: its command computes it again)."""
    checked = _checked_entries(entries)
    if not holds_run_lock(path):
        raise RuntimeError(f"write_analyses needs the run lock of {path} (audit.store.locks.run_lock); "
                           "store_analyses takes it")
    record = read_run(path, weights=True, run_id=path.stem)
    lost = {part: why for part, why in record.damaged.items() if not recomputable(part)}
    if lost:
        raise WorkError(f"{path} is damaged: {damage_line(lost)}; `audit run` retrains the run (no analysis "
                        "was written)")
    if record.status == "running":
        raise WorkError(f"{path}: run {record.run_id} is still training, its final weights are not final; "
                        "analyse it once it is complete (no analysis was written)")
    record.analyses.update(checked)
    write_run(path, record, "analysis")
    return record


def store_analyses(path: Path, entries: Mapping[str, Mapping[str, Any]],
                   wait_seconds: float = LOCK_WAIT_SECONDS) -> RunRecord:
    """write_analyses under the run lock, taken here (waiting up to wait_seconds for another live holder;
    audit.store.locks.RunLocked after that)."""
    checked = _checked_entries(entries)  # before the lock: a caller's mistake costs no wait
    with run_lock_waiting(path, wait_seconds, poll_seconds=0.5):
        return write_analyses(path, checked)


def store_analysis(path: Path, name: str, attrs: Mapping[str, Any], arrays: Mapping[str, Any],
                   wait_seconds: float = LOCK_WAIT_SECONDS) -> RunRecord:
    """One analysis part written like store_analyses; attrs must hold `settings` and `version`."""
    return store_analyses(path, {name: {"attrs": attrs, "arrays": arrays}}, wait_seconds)
