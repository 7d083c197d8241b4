"""How cost grows: the power laws bench/scaling.py fits (seconds = c · size^k, least squares on log-log, per
quantity and axis) and the time estimates `audit run --plan` and `audit score --plan` make from them.

The fits live in scaling.json beside this module, with the matmul rate measured in the same run; on another
machine (or the same one, loaded differently) an estimate is scaled by the ratio of that rate to this
machine's rate now (`probe_rate`, a one-second probe of the same 1024³ product). A model the fits cover is a
one-hidden-layer MLP (`mlp-1xW`) or a model measured on its own (alexnet-small) at the input shape measured;
estimates within the measured parameter counts and train sizes are `fit`, outside them `extrapolated`."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

import measures
from audit.models.flops import matmul_rate
from audit.models.registry import build_model
from audit.pipeline.cost import TRAIN_FRACTION, run_flops, run_shape
from audit.spec.run import KERNEL_PREFIX, RunSpec

DATA = Path(__file__).with_name("scaling.json")
FROM_FITS, FROM_FLOPS = "bench/scaling.py fits", "FLOPs"  # which estimate a plan's time is
FLOOR_SECONDS = 1e-5  # timings below this (a measure that is a lookup) count as this, so that logs exist
MLP = re.compile(r"mlp-1x(\d+)$")
TRAIN = "train"  # the quantity of training: seconds per epoch of audit's trainer (steps and evaluations)


@dataclass(frozen=True)
class Fit:
    """seconds = c · size^k, fitted to `points` (size, seconds) pairs."""

    c: float
    k: float

    def at(self, size: float) -> float:
        return self.c * size ** self.k


def fit_power(sizes: Iterable[float], seconds: Iterable[float]) -> Fit:
    """The least-squares line through (log size, log seconds): exact on noise-free c · size^k. Needs two or more
    distinct sizes; seconds under FLOOR_SECONDS count as FLOOR_SECONDS."""
    x = np.log(np.asarray(list(sizes), dtype=float))
    y = np.log(np.maximum(np.asarray(list(seconds), dtype=float), FLOOR_SECONDS))
    if len(set(x.tolist())) < 2:
        raise ValueError("a power-law fit needs timings at two or more distinct sizes")
    k, log_c = np.polyfit(x, y, 1)
    return Fit(float(math.exp(log_c)), float(k))


def worst_factor(fit: Fit, sizes: Iterable[float], seconds: Iterable[float]) -> float:
    """The largest factor between a measured time and the fit's, either way (1.0: every point on the line)."""
    ratios = [max(s, FLOOR_SECONDS) / fit.at(n) for n, s in zip(sizes, seconds)]
    return float(max(max(r, 1 / r) for r in ratios)) if ratios else 1.0


def along(fit: Fit, size: float, fitted: list[float]) -> float:
    """The fit at `size` within the sizes it was made on; below them its value at the smallest (a smaller run
    costs no more); above them grown from the largest by its exponent, never shrinking (k < 0 counts as 0)."""
    low, high = min(fitted), max(fitted)
    if size < low:
        return fit.at(low)
    if size > high:
        return fit.at(high) * (size / high) ** max(fit.k, 0.0)
    return fit.at(size)


def probe_rate(seconds: float = 1.0) -> float:
    """This machine's fp32 matmul rate now, in FLOP/s: the best 1024³ product (audit.models.flops.matmul_rate,
    the rate bench/scaling.py records with its fits) over about `seconds`."""
    best, start = 0.0, time.perf_counter()
    while True:
        best = max(best, matmul_rate(repeats=3))
        if time.perf_counter() - start >= seconds:
            return best


def load(path: Path | None = None) -> dict[str, Any] | None:
    """The fits as bench/scaling.py --write left them (in DATA); None when there are none."""
    try:
        return json.loads((path or DATA).read_text())
    except (OSError, ValueError):
        return None


@lru_cache(maxsize=64)
def parameter_count(model: str, input_shape: tuple[int, ...], classes: int) -> int:
    """Trainable parameters of a built-in model at this input shape and class count."""
    return sum(p.numel() for p in build_model(model, input_shape, classes).parameters() if p.requires_grad)


class Scaling:
    """The fits of one scaling.json (None: there are none) scaled to a matmul rate: what a run costs here."""

    def __init__(self, data: dict[str, Any] | None, rate: float) -> None:
        self.data, self.rate = data, rate
        self.ratio = float(data["matmul_rate"]) / rate if data else 1.0  # > 1: slower here than the fits' machine
        self.flops: dict[tuple[str, tuple[int, ...], int], int] = {}

    @classmethod
    def here(cls, path: Path | None = None) -> Scaling:
        """The fits (DATA unless `path`) at this machine's matmul rate, probed now for a second."""
        return cls(load(path), probe_rate())

    def describe(self) -> dict[str, Any]:
        """The rates behind the estimates, for a plan's document."""
        fits = None if self.data is None else {"date": self.data["date"], "quick": self.data["quick"],
                                               "matmul_gflops": round(self.data["matmul_rate"] / 1e9, 1)}
        return {"matmul_gflops": round(self.rate / 1e9, 1), "fits": fits}

    def fit(self, quantity: str, axis: str) -> Fit | None:
        entry = None if self.data is None else self.data["fits"].get(quantity, {}).get(axis)
        return None if entry is None else Fit(entry["c"], entry["k"])

    def covers(self, model: str, input_shape: tuple[int, ...], classes: int, train_size: int) -> str | None:
        """'fit' when the fits timed this kind of model within its parameter count and train size, else
        'extrapolated' when they timed its kind at all; None for a model they do not cover."""
        if self.data is None or model.startswith(KERNEL_PREFIX):
            return None
        sizes = self.data["axes"]["size"]["sizes"]
        in_sizes = min(sizes) <= train_size <= max(sizes)
        if model in self.data["models"]:
            entry = self.data["models"][model]
            if tuple(entry["input_shape"]) != tuple(input_shape) or int(entry["classes"]) != classes:
                return None
            return "fit" if in_sizes else "extrapolated"
        if not MLP.match(model):
            return None
        params = self.data["axes"]["params"]["params"]
        count = parameter_count(model, tuple(input_shape), classes)
        return "fit" if in_sizes and min(params) <= count <= max(params) else "extrapolated"

    def seconds(self, quantity: str, model: str, params: int, train_size: int) -> float | None:
        """Seconds here of a quantity (TRAIN: one epoch; a family: its measures at the settings timed) for a run
        of `params` parameters on `train_size` images: c · params^k_params · (train_size / the reference train
        size)^k_size × (the fits' matmul rate / the rate here); a model timed on its own starts from its
        seconds at the reference train size. Outside the sizes a fit was made on, see `along`. None where the
        fits lack the quantity."""
        size_fit = self.fit(quantity, "size")
        if size_fit is None or self.data is None:
            return None
        sizes = self.data["fits"][quantity]["size"]["sizes"]
        growth = along(size_fit, train_size, sizes) / along(size_fit, self.data["reference"]["train_size"], sizes)
        own = self.data["models"].get(model)
        if own is not None:
            measured = own["seconds"].get(quantity)
            return None if measured is None else measured * growth * self.ratio
        params_fit = self.fit(quantity, "params")
        if params_fit is None:
            return None
        return along(params_fit, params, self.data["fits"][quantity]["params"]["sizes"]) * growth * self.ratio

    def measure_seconds(self, names: list[str], model: str, params: int, train_size: int
                        ) -> tuple[dict[str, float], list[str]]:
        """Seconds per family of computing `names` on one run, and the names the fits cannot estimate (a
        measure or family they never timed). A family's fit is for all of its measures as timed; a subset
        takes the share its measures took at the reference run."""
        share = self.data["measure_seconds"] if self.data else {}
        by_family: dict[str, list[str]] = {}
        unknown: list[str] = []
        for name in names:
            family = measures.get(name).family
            (by_family.setdefault(family, []) if name in share else unknown).append(name)
        out: dict[str, float] = {}
        for family, members in by_family.items():
            total = self.seconds(family, model, params, train_size)
            if total is None:
                unknown += members
                continue
            timed = [n for n in share if self.data["measure_family"].get(n) == family]
            whole = sum(share[n] for n in timed)
            out[family] = total * (sum(share[n] for n in members) / whole if whole > 0 else len(members) / len(timed))
        return out, unknown

    def training(self, spec: RunSpec) -> tuple[float, str]:
        """The most seconds a run's training takes here (its whole epoch budget), and which estimate it is:
        FROM_FITS for a model the fits cover within their range, FROM_FLOPS (its training FLOPs at
        TRAIN_FRACTION of the matmul rate) for any other."""
        size, shape, classes = run_shape(spec)
        if self.covers(spec.model, shape, classes, size) == "fit":
            seconds = self.seconds(TRAIN, spec.model, self.params(spec.model, shape, classes), size)
            if seconds is not None:
                return spec.epochs * seconds, FROM_FITS
        return run_flops(spec, self.flops) / (self.rate * TRAIN_FRACTION), FROM_FLOPS

    def coverage(self, spec: RunSpec) -> str | None:
        """How the fits cover a run: 'fit', 'extrapolated' or None (see covers)."""
        size, shape, classes = run_shape(spec)
        return self.covers(spec.model, shape, classes, size)

    def scoring(self, spec: RunSpec, names: list[str]) -> tuple[dict[str, float], list[str]]:
        """Seconds per family of scoring `names` on a run here, and the names not estimated (every one for a
        model the fits do not cover; beyond their range the fits are extrapolated)."""
        size, shape, classes = run_shape(spec)
        if not names or self.covers(spec.model, shape, classes, size) is None:
            return {}, list(names)
        return self.measure_seconds(names, spec.model, self.params(spec.model, shape, classes), size)

    def params(self, model: str, shape: tuple[int, ...], classes: int) -> int:
        own = self.data["models"].get(model) if self.data else None
        return int(own["params"]) if own is not None else parameter_count(model, tuple(shape), classes)
