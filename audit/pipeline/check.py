"""`audit check MEASURE`: a measure's contract, checked on small cached runs (audit.pipeline.check_runs).

Six checks, each pass, fail or n/a with its numbers:

- value: on every check run the value is a finite float, or null with the reason (Undefined); a measure that
  raises or returns NaN or ±inf fails, naming the run and the message.
- determinism: two evaluations on fresh contexts of one run in one process, no global generator reseeded in
  between, and one in a fresh Python process (the same plugins loaded) give the same value, bit for bit.
- needs: on a context holding only what `needs` declares (no init weights without "init", no train data without
  "train", no run record without "history", no spec or refit without "procedure", no model without "weights")
  the measure gives the same value; else it fails naming what it read.
- invariance (where declared): the MLP's and the conv net's first pair of weight layers whose rescaling keeps
  the logits (layer i × c, its bias × c, layer i+1 ÷ c, across a ReLU) leaves the value unchanged.
- cost: its time over one forward pass of the train set on the check run with the longest forward pass where it
  has a value fits its declared class (COST_LIMITS); a class is an upper bound, so a faster measure passes.
- kinds: it works on the MLP, the conv net and the batch-norm model, or says why not (null with a reason).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

import measures
from audit.errors import UsageError
from audit.pipeline import plugins
from audit.pipeline.check_runs import (
    CheckRun,
    check_runs,
    fresh_context,
    one_thread,
    reads,
    rescale,
    restricted_context,
    store_root,
    symmetric_pair,
)

COST_LIMITS = {"instant": 10.0, "pass": 100.0, "heavy": None}  # most forward passes over the train set
CLASSES = {"instant": "at most 10 times one forward pass over the train set (norms and spectra of the weights)",
           "pass": "at most 100 times (a few passes over the train set, with gradients)",
           "heavy": "no bound (searches, refits, many perturbed passes)"}
RESCALE = 3.0  # c of the invariance check
RTOL, ATOL = 1e-4, 1e-6  # invariance: |a − b| ≤ ATOL + RTOL·max(|a|, |b|), float32 arithmetic
FUNCTION_RTOL = 1e-5  # a pair of layers is rescalable when the logits move by at most this, relative
FAST_SECONDS = 0.1  # a measure faster than this is timed 5 times on fresh contexts, the median kept
TOLERANCES = {"invariance_rtol": RTOL, "invariance_atol": ATOL, "function_rtol": FUNCTION_RTOL, "c": RESCALE,
              "determinism": "bit for bit"}
INVARIANCE_KINDS = ("mlp", "conv")
CHILD = "from audit.pipeline.check_runs import child_main; child_main()"


class CheckTracker(Protocol):
    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: Any) -> Any: ...

    def on_run(self, index: int, total: int, spec: Any, state: str) -> None: ...

    def on_epoch(self, epoch: int, epochs: int, train_acc: float) -> None: ...

    def on_check(self, label: str, index: int, total: int) -> None: ...


class Quiet:
    def __enter__(self) -> Quiet:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def on_run(self, index: int, total: int, spec: Any, state: str) -> None:
        return None

    def on_epoch(self, epoch: int, epochs: int, train_acc: float) -> None:
        return None

    def on_check(self, label: str, index: int, total: int) -> None:
        return None


def chosen(names: list[str], all_measures: bool) -> list[str]:
    if all_measures and names:
        raise UsageError("name measures to check or give --all for every registered one, not both")
    if not all_measures and not names:
        raise UsageError("name a measure to check (see `audit list measures`), or --all for every registered one")
    for name in names:
        measures.get(name)  # an unknown name: the registry's line with suggestions
    return measures.names() if all_measures else list(dict.fromkeys(names))


def item(check: str, passed: bool | None, detail: str, **numbers: Any) -> dict[str, Any]:
    return {"check": check, "passed": passed, "detail": detail, **numbers}


def shown(result: measures.Result) -> str:
    return f"{result.value:.6g}" if result.value is not None else f"null ({result.reason})"


def bad(result: measures.Result) -> bool:
    """Raised (not Undefined), or returned NaN or ±inf."""
    return result.failed or (result.value is None and (result.reason or "").startswith("not finite ("))


def same(a: measures.Result, b: measures.Result) -> bool:
    return a.value == b.value and (a.value is not None or a.reason == b.reason)


def difference(a: measures.Result, b: measures.Result) -> float | None:
    if a.value is None or b.value is None:
        return None
    return abs(a.value - b.value) / max(abs(a.value), abs(b.value), 1e-300)


# ---------------------------------------------------------------- the checks


def value_check(results: dict[str, measures.Result]) -> dict[str, Any]:
    numbers = {"values": {run: r.value for run, r in results.items()},
               "reasons": {run: r.reason for run, r in results.items() if r.value is None}}
    failures = [f"{run}: {r.reason}" for run, r in results.items() if bad(r)]
    if failures:
        return item("value", False, "; ".join(failures), **numbers)
    finite = sum(r.value is not None for r in results.values())
    nulls = [f"{run}: {r.reason}" for run, r in results.items() if r.value is None]
    detail = f"finite on {finite} of {len(results)} runs" + (f"; null with a reason on {'; '.join(nulls)}"
                                                            if nulls else "")
    return item("value", True, detail, **numbers)


def needs_check(name: str, run: CheckRun, first: measures.Result, device: str) -> dict[str, Any]:
    declared = measures.get(name).needs
    if bad(first):
        return item("needs", None, f"not judged: it fails on {run.name}")
    ctx = restricted_context(run.record, device, declared)
    result = measures.evaluate(ctx, name)
    read = reads(ctx)
    said = "; ".join(f"reads {what} without declaring '{need}'" for need, what in dict.fromkeys(read))
    numbers = {"run": run.name, "declared": list(declared), "value": result.value, "expected": first.value,
               "read": sorted({need for need, _ in read})}
    if result.failed or not same(result, first):
        got = result.reason if result.failed else shown(result)
        return item("needs", False, f"{said or 'changes with only its declared needs'}: on {run.name} with only "
                                    f"{', '.join(declared) or 'nothing'} it gives {got}, not {shown(first)}",
                    **numbers)
    extra = f" (it reads {', '.join(w for _, w in read)}, which changes nothing here)" if read else ""
    return item("needs", True, f"the same value on {run.name} with only {', '.join(declared) or 'nothing'}"
                               f"{extra}", **numbers)


def invariance_check(name: str, runs: list[CheckRun], results: dict[str, measures.Result],
                     pairs: dict[str, int | None], device: str) -> dict[str, Any]:
    if not measures.get(name).invariant:
        return item("invariance", None, "not declared")
    judged, failures, diffs = [], [], {}
    for run in runs:
        if pairs.get(run.name) is None:
            continue
        ctx = fresh_context(run.record, device)
        rescale(ctx.model, pairs[run.name], RESCALE)
        after, before = measures.evaluate(ctx, name), results[run.name]
        if before.value is None and after.value is None:
            continue
        diff = difference(before, after)
        diffs[run.name] = diff
        judged.append(run.name)
        close = diff is not None and abs(before.value - after.value) <= ATOL + RTOL * max(abs(before.value),
                                                                                         abs(after.value))
        if not close:
            failures.append(f"{run.name} layers {pairs[run.name]}, {pairs[run.name] + 1} × {RESCALE:g}, ÷ "
                            f"{RESCALE:g}: {shown(before)} becomes {shown(after)}"
                            + (f" (relative difference {diff:.2g})" if diff is not None else ""))
    numbers = {"relative_difference": diffs, "pairs": {k: v for k, v in pairs.items() if v is not None}}
    if failures:
        return item("invariance", False, f"not invariant to ReLU rescaling: {'; '.join(failures)}", **numbers)
    if not judged:
        return item("invariance", None, "null on every rescaled run", **numbers)
    worst = max((d for d in diffs.values() if d is not None), default=0.0)
    return item("invariance", True, f"unchanged on {', '.join(judged)} (largest relative difference {worst:.1g}, "
                                    f"tolerance {RTOL:g})", **numbers)


def timed(name: str, run: CheckRun, first: float, device: str, limit: float | None) -> float:
    """The measure's time on the run: the median of 5 for a fast one; one more try for one over its limit (a
    first call may pay one-time costs: imports, kernel compilation), the faster kept."""
    if first < FAST_SECONDS:
        times = [first] + [measures.evaluate(fresh_context(run.record, device), name).seconds for _ in range(4)]
        return statistics.median(times)
    if limit is not None and first > limit * run.forward_seconds:
        return min(first, measures.evaluate(fresh_context(run.record, device), name).seconds)
    return first


def cost_check(name: str, runs: list[CheckRun], results: dict[str, measures.Result], device: str) -> dict[str, Any]:
    cost = measures.get(name).cost
    slowest = {run.kind: max(r.forward_seconds for r in runs if r.kind == run.kind) for run in runs}
    defined = sorted((run for run in runs if results[run.name].value is not None),
                     key=lambda r: (-slowest[r.kind], r.labels != "true"))  # the kind of the slowest pass first
    if not defined:
        return item("cost", None, "not timed: null on every run")
    run = defined[0]
    limit = COST_LIMITS[cost]
    seconds = timed(name, run, results[run.name].seconds, device, limit)
    ratio = seconds / run.forward_seconds
    numbers = {"run": run.name, "seconds": seconds, "forward_seconds": run.forward_seconds, "ratio": ratio,
               "limit": limit}
    within = next(c for c, bound in COST_LIMITS.items() if bound is None or ratio <= bound)
    said = (f"{seconds * 1e3:.3g} ms = {ratio:.3g} forward passes of {run.name} ({run.forward_seconds * 1e3:.3g} "
            f"ms); {cost} ≤ {limit:g}" if limit is not None else
            f"{seconds * 1e3:.3g} ms = {ratio:.3g} forward passes of {run.name} ({run.forward_seconds * 1e3:.3g} ms);"
            " heavy: no bound")
    if limit is not None and ratio > limit:
        return item("cost", False, f"slower than its class: {said}; declare cost='{within}'", **numbers)
    note = f" (within '{within}' here: the class is an upper bound)" if within != cost else ""
    return item("cost", True, said + note, **numbers)


def kinds_check(runs: list[CheckRun], results: dict[str, measures.Result]) -> dict[str, Any]:
    kinds: dict[str, list[CheckRun]] = {}
    for run in runs:
        kinds.setdefault(run.kind, []).append(run)
    failures, said = [], []
    for kind, members in kinds.items():
        broken = [run for run in members if bad(results[run.name])]
        if broken:
            failures.append(f"{kind}: {results[broken[0].name].reason}")
        else:
            said.append(f"{kind} {shown(results[members[0].name])}")
    numbers = {"kinds": {kind: members[0].record.spec.model for kind, members in kinds.items()}}
    if failures:
        return item("kinds", False, "; ".join(failures), **numbers)
    return item("kinds", True, "; ".join(said), **numbers)


def determinism_check(name: str, probe: CheckRun, first: measures.Result, second: measures.Result,
                      fresh: dict[str, Any] | str) -> dict[str, Any]:
    numbers = {"run": probe.name, "first": first.value, "second": second.value}
    if bad(first):
        return item("determinism", None, f"not judged: it fails on {probe.name}", **numbers)
    if not same(first, second):
        diff = difference(first, second)
        return item("determinism", False, f"determinism: two evaluations on fresh contexts of {probe.name} in one "
                                          f"process (no generator reseeded between) give {shown(first)} and "
                                          f"{shown(second)}" + (f" (relative difference {diff:.2g})" if diff else ""),
                    relative_difference=diff, **numbers)
    if isinstance(fresh, str):
        return item("determinism", False, f"determinism: the fresh process failed ({fresh})", **numbers)
    value, reason = fresh.get(name, [None, "not computed in the fresh process"])
    other = measures.Result(value, 0.0, reason)
    numbers["fresh_process"] = value
    if not same(first, other):
        return item("determinism", False, f"determinism: a fresh process gives {shown(other)} on {probe.name}, this "
                                          f"one {shown(first)}", relative_difference=difference(first, other),
                    **numbers)
    return item("determinism", True, f"{shown(first)} on {probe.name}, twice in this process and once in a fresh "
                                     "one", **numbers)


def probe_of(runs: list[CheckRun], results: dict[str, measures.Result]) -> CheckRun:
    """The run the determinism and needs checks use: the cheapest true-label run where the measure has a value."""
    ordered = sorted(runs, key=lambda r: (r.labels != "true", r.forward_seconds))
    return next((run for run in ordered if results[run.name].value is not None), ordered[0])


def check_one(name: str, runs: list[CheckRun], pairs: dict[str, int | None], device: str) -> dict[str, Any]:
    """Every in-process check of one measure; the determinism check waits for the fresh process."""
    results = {run.name: measures.evaluate(fresh_context(run.record, device), name) for run in runs}
    probe = probe_of(runs, results)
    second = measures.evaluate(fresh_context(probe.record, device), name)  # no generator reseeded in between
    steady = same(results[probe.name], second)
    shaky = item("needs", None, "not judged: the measure is not deterministic")
    checks = {"value": value_check(results),
              "needs": needs_check(name, probe, results[probe.name], device) if steady else shaky,
              "invariance": (invariance_check(name, [r for r in runs if r.name in pairs], results, pairs, device)
                             if steady or not measures.get(name).invariant else dict(shaky, check="invariance")),
              "cost": cost_check(name, runs, results, device),
              "kinds": kinds_check(runs, results)}
    return {"name": name, "probe": probe, "first": results[probe.name], "second": second, "checks": checks}


def fresh_values(jobs: list[list[str]], device: str) -> dict[str, Any] | str:
    """{measure: [value, reason]} from one fresh Python process that loads the same plugins, or why it failed."""
    if not jobs:
        return {}
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "values.json"
        request = {"plugins": list(plugins.LOADED), "device": device, "jobs": jobs, "out": str(out)}
        done = subprocess.run([sys.executable, "-c", CHILD], input=json.dumps(request), capture_output=True,
                              text=True, check=False)
        if done.returncode != 0 or not out.exists():
            lines = done.stderr.strip().splitlines() or ["no message"]
            return f"exit code {done.returncode}: {lines[-1]}"
        return json.loads(out.read_text())


def rescalable_pairs(runs: list[CheckRun], device: str) -> dict[str, int | None]:
    """For the true-label MLP and conv runs: the layer pair the invariance check rescales (None: no such pair)."""
    return {run.name: symmetric_pair(fresh_context(run.record, device), RESCALE, FUNCTION_RTOL)
            for run in runs if run.kind in INVARIANCE_KINDS and run.labels == "true"}


def report(pending: dict[str, Any], fresh: dict[str, Any] | str) -> dict[str, Any]:
    name, checks = pending["name"], pending["checks"]
    determinism = determinism_check(name, pending["probe"], pending["first"], pending["second"], fresh)
    ordered = [checks["value"], determinism, checks["needs"], checks["invariance"], checks["cost"], checks["kinds"]]
    entry = measures.get(name)
    return {"measure": name, "cost": entry.cost, "needs": list(entry.needs), "invariant": entry.invariant,
            "passed": all(c["passed"] is not False for c in ordered), "checks": ordered}


def check_measures(names: list[str], all_measures: bool = False, device: str = "cpu",
                   tracker: CheckTracker | None = None) -> dict[str, Any]:
    """`audit check`: every check of each measure named (or of every registered one) on the check runs, trained
    on first use into cache_dir("check"); one document: measures, their checks, the failure count."""
    todo = chosen(names, all_measures)
    tracker = tracker or Quiet()
    start = time.perf_counter()
    with tracker:
        runs = check_runs(device, tracker)
        with one_thread():
            pairs = rescalable_pairs(runs, device)
            pending = []
            for index, name in enumerate(todo):
                tracker.on_check(name, index, len(todo) + 1)
                pending.append(check_one(name, runs, pairs, device))
        tracker.on_check("a fresh process", len(todo), len(todo) + 1)
        fresh = fresh_values([[p["name"], str(p["probe"].record.path)] for p in pending], device)
    reports = [report(p, fresh) for p in pending]
    return {"measures": reports, "failures": sum(c["passed"] is False for r in reports for c in r["checks"]),
            "classes": CLASSES, "limits": COST_LIMITS, "tolerances": TOLERANCES,
            "runs": [run.summary() for run in runs], "store": str(store_root()),
            "seconds": round(time.perf_counter() - start, 3)}
