"""Reading a store for reports, figures and `audit show`: cached measures only, nothing computed or written."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import measures
from audit.errors import UsageError
from audit.models.architecture import loads, source_state
from audit.pipeline.changed import source_notices
from audit.pipeline.grid import open_for_report
from audit.pipeline.score import Scored, check_reached
from audit.store.digests import damage_line
from audit.store.directory import Store, open_store
from audit.store.files import read_run
from audit.store.record import RunRecord


def cached_names(records: list[RunRecord], at: str | None = None) -> list[str]:
    """The measures cached in any of the records (at the keep point `at`): the registered ones in registry
    order, then those no loaded plugin registers, by name."""
    stored = {key.split("@")[0] for r in records for key in r.measures if key.partition("@")[2] == (at or "")}
    registered = [n for n in measures.names() if n in stored]
    return registered + sorted(stored - set(registered))


def cached_meta(records: list[RunRecord], name: str) -> dict[str, Any]:
    """What a cached value recorded of its measure: direction, family, log, plugin (from the first run that
    recorded them; values written before they were recorded give {})."""
    for record in records:
        for key, entry in record.measures.items():
            if key.split("@")[0] == name and entry.get("direction") in (1, -1):
                return {"direction": int(entry["direction"]), "family": str(entry.get("family", "?")),
                        "log": bool(entry.get("log", False)), "plugin": json.loads(entry.get("plugin") or "null")}
    return {}


def judged_cached(records: list[RunRecord], names: list[str]) -> tuple[list[str], dict[str, dict[str, Any]],
                                                                          list[str]]:
    """The names that can be judged, what judging needs of each and one notice per measure judged without its
    plugin loaded (by its cached direction), from a changed plugin, or left out for lack of a direction."""
    kept, judged, notices = [], {}, []
    for name in names:
        meta = cached_meta(records, name)
        if name in measures.MEASURES:
            kept.append(name)
            judged.update(measures.judged([name]))
            current = (measures.get(name).plugin or {}).get("source_sha256")
            if meta.get("plugin") and meta["plugin"].get("source_sha256") != current:
                notices.append(f"measure {name}: cached values come from another version of its plugin "
                               f"({meta['plugin']['file']}); `audit score --measure {name}` recomputes them")
        elif meta:
            kept.append(name)
            judged[name] = {k: meta[k] for k in ("direction", "family", "log")}
            source = f"plugin {meta['plugin']['file']}" if meta["plugin"] else "a measure"
            notices.append(f"measure {name}: from {source}, which is not loaded; judged from its cached values and "
                           f"their recorded direction ({meta['direction']:+d}); --plugin loads it")
        else:
            notices.append(f"measure {name}: cached values without a recorded direction and no loaded measure of "
                           f"that name; left out (load its plugin with --plugin)")
    return kept, judged, notices


def load_report(store: Path | None, measure: list[str], at: str | None = None) -> Scored:
    """Every readable run of the store (the latest under ./audit-runs when None) with the measures named, or
    every cached one; one error line per unreadable run file, one notice per measure judged without its plugin."""
    target = open_store(store)
    records, errors = open_for_report(target)
    cached = cached_names(records, at)
    for name in measure:
        if name not in cached:
            measures.get(name)  # an unknown name: one line with the closest ones
    asked = list(dict.fromkeys(measure)) or cached
    reached = check_reached(records, at, target.root)
    return fixed_family(Scored(target.root, records, asked, {}, errors, at,
                               notices=reached + source_notices(records)))


def fixed_family(scored: Scored) -> Scored:
    """The scored store with its correction family fixed, whatever was asked: every measure cached in the store
    (a plugin's not loaded counts, by its cached direction) and the measures asked; judged holds each."""
    family, judged, notices = judged_cached(scored.records,
                                            list(dict.fromkeys(cached_names(scored.records, scored.at) + scored.names)))
    names = [n for n in scored.names if n in judged]
    return dataclasses.replace(scored, names=names, judged=judged, family=family, notices=scored.notices + notices)


def classes_of(records: list[RunRecord]) -> int:
    """The most classes of any run's dataset (10 for an empty store): the chance level of the figures."""
    return max((int(r.data.get("num_classes", 100 if r.spec.dataset == "cifar100" else 10)) for r in records),
               default=10)  # files written before num_classes was recorded: the registered datasets' count


def find_run(store: Store, prefix: str) -> Path:
    """The one run file of the store whose id starts with prefix; else a UsageError saying how many matched."""
    matches = [p for p in store.run_paths() if p.stem.startswith(prefix)]
    if len(matches) != 1:
        what = "no run" if not matches else f"{len(matches)} runs"
        raise UsageError(f"{what} in {store.root} matching '{prefix}'; see `audit report {store.root}`")
    return matches[0]


def run_document(path: Path) -> dict[str, Any]:
    """One run file as a plain document: spec, status, attributes, data record, history and cached measures."""
    record = read_run(path, weights=False, run_id=path.stem)
    return {"run_id": record.run_id, "path": str(path), "spec": record.spec.to_dict(),
            "status": record.status, "fitted": record.fitted, "integrity": integrity(record),
            "verified": record.verified, "damaged": record.damaged, "attrs": record.attrs,
            "model_source": source_state(loads(record.attrs.get("architecture"))),
            "data": {k: v for k, v in record.data.items() if not hasattr(v, "shape")},
            "history": {k: v.tolist() for k, v in record.history.items()},
            "measures": {k: {kk: vv for kk, vv in v.items() if kk != "detail"} for k, v in record.measures.items()}}


def integrity(record: RunRecord) -> str:
    """How far the run's file was checked: every part verified, unverified (written before digests), or which
    parts are damaged (those are left out of the document)."""
    if record.damaged:
        return f"damaged: {damage_line(record.damaged)}"
    if not record.verified:
        return "unverified (written before digests; `audit verify --upgrade` adds them)"
    return "verified (every part matches its digest)"


def show_run(store: Path | None, prefix: str) -> dict[str, Any]:
    """`audit show`: the document of the run whose id starts with prefix, in the store (or the latest one)."""
    return run_document(find_run(open_store(store), prefix))
