"""Measures on stored runs: rebuild the fitted data, load the weights, compute, cache in the run file."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

import measures
from audit.data.fitted import build_run_data
from audit.data.imagenet import MEASURE_BYTES
from audit.errors import UsageError, WorkError
from audit.models.architecture import loads
from audit.pipeline.changed import changed_runs, refuse_changed
from audit.spec.overrides import check_point, split_setting
from audit.spec.run import KERNEL_PREFIX, RunSpec
from audit.store.digests import damage_line, damage_report
from audit.store.directory import Store, open_store
from audit.store.files import DiskFull, check_writable, read_run, write_run
from audit.store.locks import RunLocked, run_lock_waiting
from audit.store.record import RunRecord, cache_key
from audit.train.device import Operational, resolve_device
from audit.train.loop import fit_labels
from audit.train.refit import fit_labels_group
from audit.train.state import load_arrays, make_model
from measures.layers import prepare


def context_for(record: RunRecord, ops: Operational, at: str | None = None) -> measures.Context:
    """The measure context of a stored run: its exact fitted train data, its init weights and its final
    weights (or the weights kept at the keep point `at`)."""
    device = resolve_device(ops.device)
    data = build_run_data(record.spec, ops.data_dir, ops.download, stored=record.data)
    if data.record["fingerprint_train"] != record.data.get("fingerprint_train"):
        raise WorkError(f"{record.path}: the rebuilt train data do not match the data the run fitted "
                        "(fingerprint mismatch); the dataset files changed since it was trained")
    final, init = make_model(record.spec, data), make_model(record.spec, data)
    try:
        load_arrays(final, record.final if at is None else record.kept[at]["weights"])
        load_arrays(init, record.init)
    except RuntimeError as err:  # a run written before architectures were recorded, its model edited since
        first = str(err).strip().splitlines()[-1].strip()
        raise WorkError(f"{record.path}: the stored weights do not fit model {record.spec.model} as it is now "
                        f"({first}); it changed since the run was trained: `audit run --retrain` trains it "
                        "again") from None
    x = data.x_train
    if hasattr(x, "identity"):  # lazily read images (imagenet): measures take the fitted set as one tensor

        needed = 4 * len(x) * int(np.prod(x.shape[1:]))
        if needed > MEASURE_BYTES:
            raise WorkError(f"{record.path}: measures need the {len(x)} fitted images in memory ({needed / 1e9:.0f} "
                            f"GB as float32, over the {MEASURE_BYTES / 1e9:.0f} GB limit); score a run with a "
                            "smaller --train-size")
        x = x[:]
    return measures.Context(model=prepare(final, device), init=prepare(init, device),
                            x=x.to(device), y=data.y_train.to(device), num_classes=data.num_classes,
                            spec=record.spec, record=record, raw_model=final, device=device,
                            refit=functools.partial(fit_labels, record.spec),
                            refit_many=functools.partial(fit_labels_group, record.spec),
                            shared=Store(record.path.parent.parent) if record.path is not None else None)


def is_cached(record: RunRecord, name: str, settings: dict[str, Any], at: str | None = None) -> bool:
    """A usable cached value: same measure version and settings, and for a plugin's measure the same plugin
    source (a changed plugin recomputes)."""
    entry = record.measures.get(cache_key(name, at))
    if entry is None or entry.get("failed"):
        return False
    measure = measures.get(name)
    return (int(entry.get("version", -1)) == measure.version
            and json.loads(entry.get("settings", "{}")) == settings
            and plugin_sha256(entry) == (measure.plugin or {}).get("source_sha256"))


def plugin_sha256(entry: dict[str, Any]) -> str | None:
    """The source hash of the plugin a cached value came from (None for a built-in's value)."""
    plugin = json.loads(entry.get("plugin") or "null")
    return plugin.get("source_sha256") if plugin else None


def cache_entry(name: str, result: measures.Result, settings: dict[str, Any]) -> dict[str, Any]:
    """A cached value with what judging it needs without the measure loaded: direction, family, log, and for
    a plugin's measure the plugin (module, file, source hash)."""
    measure = measures.get(name)
    return {"value": result.value, "seconds": result.seconds, "version": measure.version,
            "settings": json.dumps(settings, sort_keys=True), "reason": result.reason,
            "failed": True if result.failed else None, "direction": measure.direction, "family": measure.family,
            "log": measure.log, "plugin": json.dumps(measure.plugin, sort_keys=True) if measure.plugin else None,
            "detail": {k: np.asarray(v) for k, v in result.detail.items()}}


@dataclass
class ScoreOutcome:
    records: list[RunRecord]
    errors: list[str]  # one line per run that could not be read or scored
    notices: list[str] = field(default_factory=list)  # damaged cached values that were recomputed


Progress = Callable[[str, int, int], None]


def score_store(store: Store, names: list[str], ops: Operational = Operational(),
                overrides: dict[str, dict[str, Any]] | None = None, recompute: bool = False,
                on_run: Progress | None = None, at: str | None = None, only: set[str] | None = None,
                own: set[str] | None = None) -> ScoreOutcome:
    """Compute the named measures on every complete run of the store that lacks them, caching each value;
    with `at`, on the weights kept at that point of training (runs that never reached it are skipped).
    Damaged runs are named and left out; a damaged cached value is recomputed, never trusted; a store that
    cannot be written is refused before anything is computed."""
    overrides = overrides or {}
    settings = {name: measures.resolved_settings(name, overrides.get(name)) for name in names}
    outcome = ScoreOutcome([], [], [])
    planned = []
    for path in store.run_paths():
        try:
            record = read_run(path, weights=False, run_id=path.stem)
        except WorkError as err:
            outcome.errors.append(str(err))
            continue
        if any(not part.startswith("measures/") for part in record.damaged):
            outcome.errors.append(damage_report(path, record.damaged))
            continue
        todo = [n for n in names if recompute or not is_cached(record, n, settings[n], at)]
        if (only is not None and record.run_id not in only) or record.spec.model.startswith(KERNEL_PREFIX):
            todo = []  # another shard's run (scored by its shard); a kernel run (its measure is written when fitted)
        if record.status != "complete" or (at is not None and at not in record.kept):
            todo = []
        planned.append((path, record, todo))
    # `audit run` refuses its own experiment's changed runs (`own`), or those it is about to score
    mine = [r for _, r, todo in planned if r.status == "complete" and (own is None or r.run_id in own or todo)]
    refuse_changed(changed_runs(mine), "score")
    if any(todo for _, _, todo in planned):
        check_writable(store.runs_dir)
    scored = {}
    for group in scoring_groups(planned):
        if on_run is not None:
            on_run(planned[group[0]][0].stem, group[0], len(planned))
        scored.update(_score_group([planned[i] for i in group], settings, ops, at, recompute, outcome.errors))
    for path, record, _ in planned:
        damaged_measures = dict(record.damaged)
        record = scored.get(path, record)
        for part, why in damaged_measures.items():
            key = part.removeprefix("measures/")
            if key in record.measures:
                outcome.notices.append(f"{path}: the cached measure {key} was damaged ({why}); recomputed")
            else:
                outcome.errors.append(f"{path}: the cached measure {key} is damaged ({why}); left out (`audit "
                                      f"score --measure {key.split('@')[0]}` recomputes it)")
        outcome.records.append(record)
    return outcome


GROUP_RUNS = 8  # complete runs of one architecture scored together: measures with a group form take them at once
GROUP_PARAMETERS = 2_000_000  # runs of larger models are scored one at a time (a group's contexts are held together)


def scoring_groups(planned: list[tuple[Path, RunRecord, list[str]]]) -> list[list[int]]:
    """The planned runs with work to do, by index, in groups of at most GROUP_RUNS runs of one architecture and
    input set (their recorded parameter shapes, module structure and dataset), in store order. Grouping is
    operational: a run's values never depend on its group."""
    keyed: dict[str, list[int]] = {}
    for index, (_, record, todo) in enumerate(planned):
        if todo:
            keyed.setdefault(group_key(record) or f"alone:{index}", []).append(index)
    groups = [members[i:i + GROUP_RUNS] for members in keyed.values() for i in range(0, len(members), GROUP_RUNS)]
    return sorted(groups)


def group_key(record: RunRecord) -> str | None:
    architecture = loads(record.attrs.get("architecture"))
    if architecture is None:
        return None
    if sum(math.prod(shape) for shape in architecture["parameters"].values()) > GROUP_PARAMETERS:
        return None
    return json.dumps([architecture["parameters"], architecture["structure"], record.spec.dataset,
                       record.spec.preprocess], sort_keys=True)


LOCK_WAIT_SECONDS = 300.0  # scoring a run is short: wait this long for another process that holds it


def _score_group(members: list[tuple[Path, RunRecord, list[str]]], settings: dict[str, dict[str, Any]],
                 ops: Operational, at: str | None, recompute: bool, errors: list[str]) -> dict[Path, RunRecord]:
    """Score a group's runs, each under its own lock (taken in path order), and write each; a run that cannot
    be scored gets its line in errors and keeps the record as read."""
    done: dict[Path, RunRecord] = {}
    with ExitStack() as held:
        ready = []  # (path, record, todo, context)
        locks: dict[Path, ExitStack] = {}  # each run's lock, let go as soon as its file is written
        for path, record, todo in sorted(members, key=lambda member: str(member[0])):
            locks[path] = held.enter_context(ExitStack())
            try:
                locks[path].enter_context(run_lock_waiting(path, LOCK_WAIT_SECONDS, poll_seconds=0.5))
                fresh, todo = _read_for_scoring(path, todo, settings, at, recompute)
                done[path] = fresh
                if todo:
                    ready.append((path, fresh, todo, context_for(fresh, ops, at)))
                else:
                    locks[path].close()
            except (RunLocked, WorkError, UsageError) as err:
                locks[path].close()
                _say(err, path, record, errors)
        for name in dict.fromkeys(name for *_, todo, _ in ready for name in todo):
            needing = [(record, ctx) for _, record, todo, ctx in ready if name in todo]
            results = measures.evaluate_group([ctx for _, ctx in needing], name, settings[name])
            for (record, _), result in zip(needing, results):
                record.measures[cache_key(name, at)] = cache_entry(name, result, settings[name])
        for path, record, todo, _ in ready:
            try:
                write_run(path, record, "measures")
            except DiskFull:
                raise
            except WorkError as err:
                _say(err, path, record, errors)
            locks[path].close()
            errors += [f"{path}: measure {key}: {entry['reason']}" for key, entry in record.measures.items()
                       if entry.get("failed") and key.split("@")[0] in todo]
    return done


def _say(err: Exception, path: Path, record: RunRecord, errors: list[str]) -> None:
    if isinstance(err, RunLocked):
        errors.append(f"{path}: not scored now, {err}")
    elif isinstance(err, UsageError):  # its model cannot be built here (a user's module not importable, say)
        errors.append(f"{path}: run {record.run_id} not scored: {err}")
    else:
        errors.append(str(err) if str(path) in str(err) else f"{path}: {err}")


def _read_for_scoring(path: Path, todo: list[str], settings: dict[str, dict[str, Any]], at: str | None,
                      recompute: bool) -> tuple[RunRecord, list[str]]:
    """The run read whole under its lock, and what is still to compute (another process may have scored it
    while we waited)."""
    record = read_run(path, run_id=path.stem)
    if any(not part.startswith("measures/") for part in record.damaged):
        raise WorkError(f"{path} is damaged: {damage_line(record.damaged)}; `audit run` retrains the run")
    if not recompute:
        todo = [n for n in todo if not is_cached(record, n, settings[n], at)]
    return record, todo


class Tracker(Protocol):
    """Progress of a command's work (audit.render.progress.Reporter): entered around the work, told of each run."""

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: Any) -> Any: ...

    def on_run(self, index: int, total: int, spec: RunSpec, state: str) -> None: ...

    def on_epoch(self, epoch: int, epochs: int, train_acc: float) -> None: ...

    def on_score(self, run_id: str, index: int, total: int) -> None: ...


class Silent:
    """A Tracker that reports nothing."""

    def __enter__(self) -> Silent:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def on_run(self, index: int, total: int, spec: RunSpec, state: str) -> None:
        return None

    def on_epoch(self, epoch: int, epochs: int, train_acc: float) -> None:
        return None

    def on_score(self, run_id: str, index: int, total: int) -> None:
        return None


@dataclass
class Scored:
    """What a report of a store needs: its root, the run records, the measures and what judging needs of each
    (measures.judged), one line per failure, the keep point judged at, and notices printed before the errors."""

    root: Path
    records: list[RunRecord]
    names: list[str]
    judged: dict[str, dict[str, Any]]
    errors: list[str]
    at: str | None = None
    notices: list[str] = field(default_factory=list)
    family: list[str] = field(default_factory=list)  # the correction family (judged holds each); [] = names


def measure_names(measure: list[str], all_: bool) -> list[str]:
    """--all: every registered measure; --measure NAME...: those, checked, in order; else the default set."""
    if all_:
        return measures.names()
    if measure:
        for name in measure:
            measures.get(name)
        return list(dict.fromkeys(measure))
    return measures.names(default_only=True)


def parse_settings(values: list[str]) -> dict[str, dict[str, Any]]:
    """--set NAME.KEY=VALUE (repeatable) → {NAME: {KEY: VALUE}}, every measure and setting checked."""
    out: dict[str, dict[str, Any]] = {}
    for text in values:
        name, key, value = split_setting(text)
        measures.get(name)
        out.setdefault(name, {})[key] = value
    for name, overrides in out.items():
        measures.resolved_settings(name, overrides)
    return out


def check_reached(records: list[RunRecord], at: str | None, root: Path) -> list[str]:
    """Judging at a keep point that no run of the store kept is refused (it would be a table of dashes); the
    notice of how many runs never reached it when some did."""
    complete = [r for r in records if r.status == "complete"]
    missing = [r for r in complete if at not in r.kept]
    if at is None or not missing:
        return []
    if len(missing) < len(complete):
        return [f"{len(missing)} of {len(complete)} complete runs never reached {at}: they have no values there"]
    kept = sorted({tag for r in records for tag in r.kept})
    raise UsageError(f"no run of {root} kept the point {at} (kept: {', '.join(kept) or 'none'}); train with "
                     f"`audit run ... --keep {at}` into a new store (--out) to judge there")


def score_runs(store: Path | None, measure: list[str], all_measures: bool, setting: list[str], *,
               recompute: bool = False, device: str = "auto", data_dir: Path | None = None, at: str | None = None,
               tracker: Tracker | None = None) -> Scored:
    """`audit score`: the measures named (or the default set) with their --set settings, computed on every
    complete run of the store (the latest under ./audit-runs when None) and cached; at a keep point with `at`."""
    names = measure_names(measure, all_measures)
    settings = parse_settings(setting)
    resolve_device(device)
    target = open_store(store)
    ops = Operational(device=device, data_dir=data_dir)
    tracker = tracker or Silent()
    with tracker:
        outcome = score_store(target, names, ops, settings, recompute=recompute, on_run=tracker.on_score,
                              at=check_point(at))
    reached = check_reached(outcome.records, at, target.root)
    return Scored(target.root, outcome.records, names, measures.judged(names), outcome.errors, at,
                  notices=outcome.notices + reached)
