"""The small runs `audit check` checks measures on: trained on first use into cache_dir("check") (AUDIT_CACHE_DIR,
default ~/.cache/audit) by the ordinary grid, so resumable and kill-safe like any store, and the contexts built
from them: fresh, restricted to a measure's declared needs, or with one ReLU pair of layers rescaled."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import measures
from audit.errors import WorkError
from audit.pipeline.grid import run_grid
from audit.pipeline.names import check_experiment
from audit.pipeline.plugins import load_plugins
from audit.pipeline.score import context_for
from audit.resources import cache_dir
from audit.spec.experiment import ExperimentSpec
from audit.spec.names import parse_variant
from audit.store.directory import Store
from audit.store.files import read_run
from audit.store.locks import RunLocked, run_lock_waiting
from audit.store.record import RunRecord
from audit.train.device import Operational, resolve_device
from measures.layers import weight_layers


def bn_net(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The check's batch-norm model: conv 3×3 16 (no bias) → batch norm → ReLU → conv 3×3/2 32 (no bias) →
    batch norm → ReLU → global mean pool → FC."""
    return nn.Sequential(nn.Conv2d(input_shape[0], 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))


KINDS = {"mlp": "mlp-1x64", "conv": "alexnet-small", "bn": f"{__name__}:bn_net"}
RUNS = (("mlp", "true"), ("mlp", "random-labels"), ("conv", "true"), ("conv", "random-labels"), ("bn", "true"))
BASE = {"dataset": "digits", "train_size": 256, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9,
        "batch_size": 64, "epochs": 30}  # random-label runs stop at 30 epochs unfitted: they need not fit
LOCK_WAIT_SECONDS = 600.0  # another `audit check` training the same run: wait this long for it


def experiment() -> ExperimentSpec:
    rows = []
    for kind, variant in RUNS:
        name, corrupt = parse_variant(variant)
        rows.append({"model": KINDS[kind], "variant": name, "corrupt": corrupt})
    return ExperimentSpec(name="check", description="audit check: the runs measures are checked on",
                          store="check", base=dict(BASE), runs=tuple(rows))


@dataclass(frozen=True)
class CheckRun:
    kind: str  # mlp, conv or bn
    labels: str  # true or random
    record: RunRecord
    forward_seconds: float  # one forward pass over its train set (median of a few, one CPU thread)

    @property
    def name(self) -> str:
        return f"{self.kind}/{self.labels}"

    def summary(self) -> dict[str, Any]:
        spec = self.record.spec
        return {"run": self.name, "run_id": self.record.run_id, "model": spec.model, "variant": spec.variant_label,
                "train_size": spec.train_size, "train_acc": self.record.attrs.get("train_acc"),
                "forward_seconds": self.forward_seconds}


def store_root() -> Path:
    return cache_dir("check")


def train_runs(device: str, tracker: Any) -> list[RunRecord]:
    """The check runs, trained now where missing or incomplete (another process training one is waited for)."""
    spec = check_experiment(experiment())
    root, ops = store_root(), Operational(device=device)
    for _ in range(3):
        outcome = run_grid(spec, root, ops, on_run=tracker.on_run, on_epoch=tracker.on_epoch)
        if outcome.errors:
            raise WorkError(f"the check runs in {root} could not be trained: {outcome.errors[0]}")
        if not outcome.skipped:
            break
        for run in spec.expand():  # held by another process: wait for it to finish, then look again
            with contextlib.suppress(RunLocked), run_lock_waiting(Store(root).run_path(run.run_id), LOCK_WAIT_SECONDS):
                pass
    records = []
    for run in spec.expand():
        record = read_run(Store(root).run_path(run.run_id), run_id=run.run_id)
        if record.status != "complete" or record.damaged:
            raise WorkError(f"check run {run.run_id} in {root} is {record.status or 'unreadable'}"
                            f"{'; damaged: ' + ', '.join(record.damaged) if record.damaged else ''}: delete it "
                            "and `audit check` retrains it")
        records.append(record)
    return records


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """One intra-op CPU thread: timings then measure the work, not other processes' contention for the cores
    (the fresh process of the determinism check uses the same)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class MemoryShared:
    """A fresh, empty stand-in for the store's shared values: nothing an earlier check cached is read back."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], dict[str, Any]] = {}

    def get_shared(self, kind: str, key: str) -> dict[str, Any] | None:
        value = self.values.get((kind, key))
        return json.loads(json.dumps(value)) if value is not None else None

    def put_shared(self, kind: str, key: str, value: dict[str, Any]) -> None:
        self.values[(kind, key)] = json.loads(json.dumps(value))


def fresh_context(record: RunRecord, device: str) -> measures.Context:
    """The run's measure context as `audit score` builds it, with nothing cached and its own empty shared values."""
    ctx = context_for(record, Operational(device=device))
    ctx.shared = MemoryShared()
    return ctx


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward(record: RunRecord, device: str, repeats: int = 5) -> float:
    """The median time of one forward pass (eval mode, no autograd) over the run's whole train set."""
    ctx = fresh_context(record, device)
    times = []
    with torch.inference_mode():
        ctx.model(ctx.x[:2])
        for _ in range(repeats):
            sync(ctx.device)
            start = time.perf_counter()
            ctx.model(ctx.x)
            sync(ctx.device)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def check_runs(device: str, tracker: Any) -> list[CheckRun]:
    """The check runs, trained on first use, with the time of one forward pass over each train set."""
    resolve_device(device)
    runs = []
    with one_thread():  # these small models train faster on one thread (10× on 2 busy cores, measured)
        records = train_runs(device, tracker)
        for (kind, variant), record in zip(RUNS, records):
            labels = "true" if variant == "true" else "random"
            runs.append(CheckRun(kind, labels, record, time_forward(record, device)))
    return runs


# ---------------------------------------------------------------- restricted and rescaled contexts

NEED_FIELDS = {"weights": ("model", "raw_model"), "init": ("init",), "train": ("x", "y"), "history": ("record",),
               "procedure": ("spec", "refit")}
FIELD_WORDS = {"model": "the weights (ctx.model)", "raw_model": "the weights (ctx.raw_model)",
               "init": "init weights (ctx.init)", "x": "the train data (ctx.x)", "y": "the train labels (ctx.y)",
               "record": "the run's history (ctx.record)", "spec": "the run's procedure (ctx.spec)",
               "refit": "the run's procedure (ctx.refit)"}


class Watched(measures.Context):
    """A context with some fields withheld (None) that notes which of them a measure reads."""

    def __getattribute__(self, name: str) -> Any:
        state = object.__getattribute__(self, "__dict__")
        if name in state.get("_withheld", ()) and name not in state["_read"]:
            state["_read"].append(name)
        return object.__getattribute__(self, name)


def restricted_context(record: RunRecord, device: str, needs: tuple[str, ...]) -> Watched:
    """A fresh context holding exactly what the needs declare: the fields of every other need are None."""
    full = fresh_context(record, device)
    withheld = [f for need, fields in NEED_FIELDS.items() if need not in needs for f in fields]
    values = {f.name: (None if f.name in withheld else getattr(full, f.name))
              for f in dataclasses.fields(measures.Context)}
    ctx = Watched(**values)
    ctx.__dict__.update(_withheld=set(withheld), _read=[])
    return ctx


def reads(ctx: Watched) -> list[tuple[str, str]]:
    """(need, what) for every withheld field the measure read, in the order it read them."""
    need_of = {f: need for need, fields in NEED_FIELDS.items() for f in fields}
    return [(need_of[f], FIELD_WORDS[f]) for f in ctx.__dict__["_read"]]


def rescale(model: nn.Module, pair: int, c: float) -> None:
    """Weight and bias of weight layer `pair` times c, the weight of the next one divided by c (in place)."""
    layers = [m for _, m in weight_layers(model)]
    with torch.no_grad():
        layers[pair].weight.mul_(c)
        if layers[pair].bias is not None:
            layers[pair].bias.mul_(c)
        layers[pair + 1].weight.div_(c)


def symmetric_pair(ctx: measures.Context, c: float, tolerance: float) -> int | None:
    """The first pair of consecutive weight layers whose rescaling by c leaves the logits unchanged (a ReLU or a
    max pool between them, not a local response norm), or None."""
    if ctx.x is None:
        return None
    x = ctx.x[:64]
    with torch.inference_mode():
        reference = ctx.model(x).double()
        for pair in range(len(weight_layers(ctx.model)) - 1):
            model = copy.deepcopy(ctx.model)
            rescale(model, pair, c)
            change = float((model(x).double() - reference).abs().max())
            if change <= tolerance * max(float(reference.abs().max()), 1e-12):
                return pair
    return None


# ---------------------------------------------------------------- the fresh process of the determinism check


def child_main() -> None:
    """Run in a fresh Python process: read {"plugins", "device", "jobs": [[measure, run file]], "out"} from
    stdin, evaluate each measure once on a fresh context of its run, and write {measure: [value, reason]}."""
    request = json.loads(sys.stdin.read())
    load_plugins(request["plugins"])
    results: dict[str, Any] = {}
    records: dict[str, RunRecord] = {}
    with one_thread():
        for name, path in request["jobs"]:
            if name not in measures.MEASURES:
                results[name] = [None, "not registered in a fresh process (register it from a plugin)"]
                continue
            if path not in records:
                records[path] = read_run(Path(path), run_id=Path(path).stem)
            result = measures.evaluate(fresh_context(records[path], request["device"]), name)
            results[name] = [result.value, result.reason]
    Path(request["out"]).write_text(json.dumps(results))
