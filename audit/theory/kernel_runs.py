"""Kernel machines as runs of a store: their specs (model kernel-...), fits, records and measures."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import audit
import measures
from audit.data.fitted import build_run_data
from audit.data.sources import load_base
from audit.errors import UsageError, WorkError, unknown_name
from audit.resources import check_memory
from audit.spec.names import parse_variant
from audit.spec.run import KERNEL_PREFIX, RunSpec, derive_seed
from audit.store.directory import Store
from audit.store.files import read_run, write_run
from audit.store.locks import RunLocked, run_lock
from audit.store.record import RunRecord
from audit.theory.kernel import (
    BANDWIDTH_POINTS,
    DISTANCE_KERNELS,
    FEATURES,
    INTERPOLATES,
    KERNELS,
    RANDOM_FILTER_SIZE,
    RANDOM_FILTERS,
    RANDOM_POOL,
    fit,
    kernel_bytes,
    median_bandwidth,
    predict,
    random_features,
)


@dataclass(frozen=True)
class KernelSpec:
    """The kernel machine of a run, written in the run spec's model field as a canonical name:
    kernel-KIND[,features=random-conv][,bandwidth=X][,ridge=X][,degree=K], defaults left out (the median
    heuristic for the bandwidth, ridge 0, raw features, degree 2). One spelling per setting keeps run ids stable."""
    kind: str = "gaussian"
    features: str = "raw"
    bandwidth: float | None = None  # None: the median heuristic on the train points
    ridge: float = 0.0
    degree: int = 2  # polynomial kernel only

    def __post_init__(self) -> None:
        check_options(self.kind, self.features, self.bandwidth, self.ridge, self.degree)
        if self.bandwidth is not None and self.kind not in DISTANCE_KERNELS:
            raise UsageError(f"the {self.kind} kernel has no bandwidth; --bandwidth applies to gaussian and laplace")
        if self.degree != 2 and self.kind != "polynomial":
            raise UsageError(f"the {self.kind} kernel has no degree; --degree applies to polynomial")

    @property
    def name(self) -> str:
        parts = [f"{KERNEL_PREFIX}{self.kind}"]
        if self.features != "raw":
            parts.append(f"features={self.features}")
        if self.bandwidth is not None:
            parts.append(f"bandwidth={number(self.bandwidth)}")
        if self.ridge:
            parts.append(f"ridge={number(self.ridge)}")
        if self.kind == "polynomial" and self.degree != 2:
            parts.append(f"degree={self.degree}")
        return ",".join(parts)


def number(value: float) -> str:
    """The one spelling of a number in a kernel name: Python's shortest repr, without a trailing .0."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def parse_kernel_model(name: str) -> KernelSpec:
    """KernelSpec from a model name kernel-KIND[,key=value...]; a non-canonical spelling is refused with the
    canonical one."""
    head, *options = name.split(",")
    kind = head[len(KERNEL_PREFIX):]
    values: dict[str, Any] = {"kind": kind}
    for option in options:
        key, sep, raw = option.partition("=")
        if not sep or key not in ("features", "bandwidth", "ridge", "degree"):
            raise UsageError(f"kernel model '{name}': options are features=, bandwidth=, ridge=, degree= "
                             f"(e.g. kernel-gaussian,ridge=0.001)")
        try:
            values[key] = raw if key == "features" else int(raw) if key == "degree" else float(raw)
        except ValueError:
            raise UsageError(f"kernel model '{name}': {key} must be a number, got '{raw}'") from None
    spec = KernelSpec(**values)
    if spec.name != name:
        raise UsageError(f"kernel model '{name}' is not in its canonical form: write '{spec.name}'")
    return spec


def check_options(kernel: str, features: str, bandwidth: float | None, ridge: float, degree: int) -> None:
    KERNELS.get(kernel)
    if features not in FEATURES:
        raise unknown_name("feature preprocessing", features, list(FEATURES))
    if bandwidth is not None and not (bandwidth > 0 and np.isfinite(bandwidth)):
        raise UsageError(f"--bandwidth must be a positive number, got {bandwidth}")
    if not (ridge >= 0 and np.isfinite(ridge)):
        raise UsageError(f"--ridge must be zero or positive, got {ridge}")
    if degree < 1:
        raise UsageError(f"--degree must be a positive integer, got {degree}")


def feature_dim(kernel: KernelSpec, input_shape: tuple[int, ...]) -> int:
    if kernel.features == "random-conv":
        side = min(min(input_shape[1:]) - RANDOM_FILTER_SIZE + 1, RANDOM_POOL)
        return RANDOM_FILTERS * side * side
    return int(np.prod(input_shape))


@dataclass
class KernelOutcome:
    summary: dict[str, Any]  # JSON-ready
    alpha: torch.Tensor  # (n, C)
    data: Any  # the RunData fitted


def fit_run(spec: RunSpec, data_dir: Path | None = None, device: str = "cpu", download: bool = False,
            on_stage: Callable[[str], None] | None = None) -> KernelOutcome:
    """Fit the kernel machine of a run spec (model kernel-...) to one-hot labels of the run's train data
    (its variant, subset and preprocessing) and measure it: errors on the fitted and clean test labels, the
    RKHS norm sqrt(Σ_c α_cᵀ K α_c), time and memory. Refuses before allocating when the kernel won't fit."""
    kernel = parse_kernel_model(spec.model)
    stage = on_stage or (lambda text: None)
    started = time.perf_counter()
    target = torch.device(device)
    available = len(load_base(spec.dataset, data_dir, download).y_train)
    if spec.train_size is not None and spec.train_size > available:
        raise UsageError(f"train size {spec.train_size} is larger than the {available} training images of "
                         f"{spec.dataset}")
    n_planned = spec.train_size or available
    base_test = len(load_base(spec.dataset, data_dir, download).y_test)
    base_shape = tuple(load_base(spec.dataset, data_dir, download).x_train.shape[1:])
    needed = kernel_bytes(n_planned, base_test, feature_dim(kernel, base_shape))
    # before the data are built: refusing must not cost the subset and variant of a huge train set
    check_memory("", needed, target, f"lower --train-size (the kernel matrix alone is {n_planned:,}² × 8 bytes = "
                 f"{8 * n_planned ** 2 / 2 ** 30:.3g} GiB)", what=f"the {kernel.kind} kernel on {n_planned:,} train points")
    stage("data")
    data = build_run_data(spec, data_dir, download)
    n, m = len(data.x_train), len(data.x_test)
    if kernel.features == "random-conv":
        stage("random conv features")
        feature_seed = derive_seed(spec.seed, "kernel-features")
        x_train = random_features(data.x_train.to(target), feature_seed)
        x_test = random_features(data.x_test.to(target), feature_seed)
    else:
        x_train = data.x_train.reshape(n, -1).to(target, torch.float64)
        x_test = data.x_test.reshape(m, -1).to(target, torch.float64)
    bandwidth, rule = kernel.bandwidth, None
    if kernel.kind in DISTANCE_KERNELS:
        rule = "given"
        if bandwidth is None:
            bandwidth = median_bandwidth(x_train, derive_seed(spec.seed, "kernel-bandwidth"))
            rule = f"median heuristic (median distance between {min(n, BANDWIDTH_POINTS):,} seeded train points)"
    labels = data.y_train.to(target)
    onehot = F.one_hot(labels, data.num_classes).double()
    stage(f"kernel {n:,}×{n:,} and Cholesky")
    solved_at = time.perf_counter()
    result = fit(x_train, onehot, kernel.kind, bandwidth, kernel.degree, kernel.ridge)
    solve_seconds = time.perf_counter() - solved_at
    stage("test predictions")
    test_outputs = predict(x_test, x_train, result.alpha, kernel.kind, bandwidth, kernel.degree)
    test_labels = data.y_test.to(target)
    norms = result.norms.clamp(min=0)
    residual = float((result.train_outputs - onehot).abs().max())
    summary = {
        "dataset": spec.dataset, "train_size": n, "test_size": m, "variant": spec.variant_label,
        "corrupt": spec.corrupt, "seed": spec.seed, "model": spec.model, "run_id": spec.run_id,
        "kernel": kernel.kind, "formula": KERNELS.get(kernel.kind), "features": kernel.features,
        "feature_dim": int(x_train.shape[1]), "preprocess": spec.preprocess, "bandwidth": bandwidth,
        "bandwidth_rule": rule, "degree": kernel.degree if kernel.kind == "polynomial" else None,
        "ridge": kernel.ridge, "jitter": result.jitter,
        "train_error": float((result.train_outputs.argmax(1) != labels).double().mean()),
        "train_residual": residual, "interpolates": residual < INTERPOLATES,
        "test_error": float((test_outputs.argmax(1) != test_labels).double().mean()),
        "rkhs_norm": float(norms.sum().sqrt()),
        "rkhs_norm_per_class": [float(v) for v in norms.sqrt()],
        "seconds": time.perf_counter() - started, "solve_seconds": solve_seconds,
        "memory_gib": needed / 2 ** 30, "threads": torch.get_num_threads(), "device": str(target),
        "source": str(data.record.get("source", "")),
    }
    return KernelOutcome(summary, result.alpha.cpu(), data)


def kernel_spec(dataset: str = "fashion-mnist", train_size: int | None = 4000, variant: str = "true",
                kernel: str = "gaussian", bandwidth: float | None = None, ridge: float = 0.0,
                features: str = "raw", degree: int = 2, seed: int = 0, preprocess: str = "none") -> RunSpec:
    """The run spec of a kernel fit: the data settings of the audit and the kernel in the model field."""
    name, corrupt = parse_variant(variant)
    machine = KernelSpec(kernel, features, bandwidth, ridge, degree)
    return RunSpec(dataset=dataset, train_size=train_size, variant=name, corrupt=corrupt, seed=seed,
                   preprocess=preprocess, model=machine.name)


def kernel_record(spec: RunSpec, outcome: KernelOutcome) -> Any:
    """The run record of a kernel fit, shaped like a network run: status complete, fitted when the train
    accuracy reaches the fit target, α as its final weights, one evaluation row, rkhs-norm cached."""
    s = outcome.summary
    train_acc, test_acc = 1.0 - s["train_error"], 1.0 - s["test_error"]
    nan = float("nan")
    history = {"epoch": [0.0], "step": [0.0], "lr": [0.0], "train_loss": [nan], "train_acc": [train_acc],
               "test_loss": [nan], "test_acc": [test_acc], "batch_loss_sum": [nan], "seconds": [s["seconds"]]}
    attrs = {"kernel_run": True, "train_acc": train_acc, "test_acc": test_acc, "train_size": s["train_size"],
             "test_size": s["test_size"], "train_seconds": s["seconds"], "solve_seconds": s["solve_seconds"],
             "bandwidth": s["bandwidth"], "bandwidth_rule": s["bandwidth_rule"], "jitter": s["jitter"],
             "train_residual": s["train_residual"], "rkhs_norm_per_class": s["rkhs_norm_per_class"],
             "memory_gib": s["memory_gib"], "feature_dim": s["feature_dim"], "device": s["device"],
             "audit_version": audit.__version__, "torch_version": torch.__version__}
    rkhs = measures.get("rkhs-norm")
    entry = {"value": s["rkhs_norm"], "seconds": s["solve_seconds"], "version": rkhs.version,
             "settings": json.dumps(measures.resolved_settings("rkhs-norm"), sort_keys=True), "reason": None,
             "detail": {"per_class": np.asarray(s["rkhs_norm_per_class"])}}
    return RunRecord(spec=spec, status="complete", fitted=train_acc >= spec.fit_target, attrs=attrs,
                     data=dict(outcome.data.record), init={}, final={"alpha": outcome.alpha.numpy()},
                     history={k: np.asarray(v, dtype=np.float64) for k, v in history.items()},
                     measures={"rkhs-norm": entry})


def train_kernel_run(spec: RunSpec, path: Path, data_dir: Path | None = None, device: str = "cpu",
                     download: bool = False) -> Any:
    """Fit a kernel run into the run file at path (replaced atomically); a complete file is kept as it is."""
    if path.exists():
        record = read_run(path, weights=False)
        if record.status == "complete":
            return record
    outcome = fit_run(spec, data_dir, device, download)
    record = kernel_record(spec, outcome)
    write_run(path, record)
    return read_run(path, weights=False)


def store_kernel_run(store: Store, spec: RunSpec, outcome: KernelOutcome) -> None:
    """Write a kernel fit into a store as a complete run, under its run lock, and list it in experiment.json."""
    path = store.run_path(spec.run_id)
    try:
        with run_lock(path):  # another process may be fitting or scoring the same run
            write_run(path, kernel_record(spec, outcome))
    except RunLocked as err:
        raise WorkError(f"run {spec.run_id} not written to {store.root}: {err}") from None
    store.add_to_experiment("kernel_runs", spec.run_id)
