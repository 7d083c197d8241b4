"""Minimum-norm kernel interpolation (Zhang et al. §5): solve K α = Y exactly, report errors and the RKHS norm.

Everything is float64 torch: the kernel matrix is built in row chunks straight into one n×n buffer and
factored in place by Cholesky (torch writes the factor into a column-major view of the same storage, so
no second n×n copy is made). NumPy's OpenBLAS crashed on large systems here, so no NumPy solve is used.
"""

from __future__ import annotations

import difflib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from audit.errors import UsageError
from audit.spec import KERNEL_PREFIX, RunSpec, derive_seed, parse_variant

KERNELS = {
    "gaussian": "exp(−‖x−x'‖²/(2σ²))",
    "laplace": "exp(−‖x−x'‖/σ)",
    "linear": "x·x'",
    "polynomial": "(x·x'/d + 1)^degree",
}
DISTANCE_KERNELS = ("gaussian", "laplace")
FEATURES = ("raw", "random-conv")  # raw pixels, flattened; a random conv layer with ReLU and pooling
BANDWIDTH_POINTS = 2000  # the median heuristic looks at a seeded subset of at most this many train points
BLOCK_BYTES = 2 ** 28  # size of one chunk of kernel rows (train build and test prediction)
INTERPOLATES = 1e-6  # largest |K α − y| of an interpolating fit (one-hot targets)
JITTERS = (0.0, *(10.0 ** k for k in range(-10, -3)))  # jitters tried, relative to the mean diagonal
RANDOM_FILTERS, RANDOM_FILTER_SIZE, RANDOM_POOL = 64, 5, 6  # random conv layer: 64 filters 5×5, pooled to ≤ 6×6


# ---------------------------------------------------------------- memory

def require_memory(what: str, needed: int, device: torch.device, hint: str) -> None:
    """measures.check_memory for the kernel command: one line, TooLarge (exit 1), before allocating."""
    from measures import check_memory

    check_memory("", needed, device, hint, what=what)


def rows_per_block(columns: int) -> int:
    return max(1, BLOCK_BYTES // (8 * max(columns, 1)))


def kernel_bytes(n: int, m: int, features: int) -> int:
    """Peak memory of a fit: the n×n kernel (factored in place), one block of kernel rows, the features of the
    train and test points, targets, coefficients and predictions (10 columns each, generously)."""
    block = min(max(n, m), rows_per_block(n)) * n
    return 8 * (n * n + block + (n + m) * features + 4 * (n + m) * 10)


# ---------------------------------------------------------------- kernels

def squared_distances(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """‖a_i − b_j‖² by ‖a‖² + ‖b‖² − 2 a·b, clamped at 0 (written into `out` when given)."""
    out = torch.mm(a, b.T, out=out) if out is not None else a @ b.T
    out.mul_(-2).add_(a.pow(2).sum(1, keepdim=True)).add_(b.pow(2).sum(1))
    return out.clamp_(min=0)


def kernel_block(kind: str, a: torch.Tensor, b: torch.Tensor, bandwidth: float | None = None, degree: int = 2,
                 out: torch.Tensor | None = None, diagonal: int | None = None) -> torch.Tensor:
    """k(a_i, b_j) for every pair. `diagonal`: offset where a_i = b_i (a chunk of the train rows), made exact."""
    if kind in DISTANCE_KERNELS:
        if bandwidth is None or not bandwidth > 0:
            raise UsageError(f"the {kind} kernel needs a positive bandwidth, got {bandwidth}")
        block = squared_distances(a, b, out)
        if diagonal is not None:
            block.diagonal(offset=diagonal).zero_()
        if kind == "gaussian":
            return block.div_(-2.0 * bandwidth ** 2).exp_()
        return block.sqrt_().div_(-bandwidth).exp_()
    block = torch.mm(a, b.T, out=out) if out is not None else a @ b.T
    if kind == "linear":
        return block
    if kind == "polynomial":
        return block.div_(a.shape[1]).add_(1.0).pow_(degree)
    raise UsageError(f"unknown kernel '{kind}': one of {', '.join(KERNELS)}")


def median_bandwidth(x: torch.Tensor, seed: int, limit: int = BANDWIDTH_POINTS) -> float:
    """The median pairwise distance between distinct points of a seeded subset of at most `limit` rows."""
    n = len(x)
    index = np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False)) if n > limit else np.arange(n)
    points = x[torch.from_numpy(index)].double()
    distances = squared_distances(points, points).sqrt_()
    upper = torch.triu_indices(len(points), len(points), offset=1)
    median = float(np.median(distances[upper[0], upper[1]].cpu().numpy()))
    if not median > 0:
        raise UsageError("the median pairwise distance of the train points is 0 (most points coincide); "
                         "give --bandwidth")
    return median


def random_features(x: torch.Tensor, seed: int) -> torch.Tensor:
    """A seeded random conv layer (64 filters 5×5, stride 1, no padding, weights N(0, 1/fan-in)), ReLU, and
    average pooling to at most 6×6 positions: 2,304 features for 28×28 images, 1,024 for 8×8 digits."""
    if x.dim() != 4 or min(x.shape[2:]) < RANDOM_FILTER_SIZE:
        raise UsageError(f"random-conv features need images of at least {RANDOM_FILTER_SIZE}×{RANDOM_FILTER_SIZE}, got "
                         f"inputs of shape {tuple(x.shape[1:])}")
    channels = x.shape[1]
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn((RANDOM_FILTERS, channels, RANDOM_FILTER_SIZE, RANDOM_FILTER_SIZE),
                         generator=generator) / (channels * RANDOM_FILTER_SIZE ** 2) ** 0.5
    side = min(x.shape[2] - RANDOM_FILTER_SIZE + 1, x.shape[3] - RANDOM_FILTER_SIZE + 1, RANDOM_POOL)
    per_image = RANDOM_FILTERS * (x.shape[2] - RANDOM_FILTER_SIZE + 1) * (x.shape[3] - RANDOM_FILTER_SIZE + 1)
    chunk = rows_per_block(per_image)
    # float32 convolution (float64 has no fast CPU path, 10× slower); the kernel is then built in float64
    blocks = [F.adaptive_avg_pool2d(F.relu(F.conv2d(x[i:i + chunk].float(), weight.to(x.device))), side)
              for i in range(0, len(x), chunk)]
    return torch.cat(blocks).reshape(len(x), -1).double()


# ---------------------------------------------------------------- solving

def cholesky_with_jitter(build: Callable[[], torch.Tensor], shift: float = 0.0) -> tuple[torch.Tensor, float]:
    """The lower Cholesky factor L of build() + (shift + jitter)·I, factored in place, and the jitter used.

    `build` returns a fresh symmetric float64 matrix each call (it is overwritten). A factorization that fails,
    or that succeeds only by rounding (a pivot L_ii² below n·ε of the mean diagonal: duplicate points, a
    rank-deficient kernel, whose solution would be noise of size 1/ε), is retried with a jitter of 1e-10 × the
    mean of the diagonal, growing ×10 up to 1e-4 × it; the matrix is rebuilt for every try."""
    jitter = 0.0
    for relative in JITTERS:
        matrix = build()
        mean = float(matrix.diagonal().mean())
        jitter = relative * mean
        matrix.diagonal().add_(shift + jitter)
        # The transposed view is column-major: LAPACK factors it where it lies, without a copy (symmetric input).
        view = matrix.mT
        info = torch.empty((), dtype=torch.int32, device=matrix.device)
        torch.linalg.cholesky_ex(view, out=(view, info))
        if int(info) == 0:
            smallest = float(view.diagonal().min()) ** 2
            if smallest >= len(view) * torch.finfo(torch.float64).eps * (mean + shift + jitter):
                return view, jitter
        del matrix, view
    raise UsageError(f"the kernel matrix is not positive definite even with a jitter of {jitter:.3g} "
                     f"({JITTERS[-1]:g} × its mean diagonal); add a ridge (--ridge) or choose another kernel")


def cholesky_solve(factor: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """α with L Lᵀ α = targets, by two triangular solves (torch.cholesky_solve would copy L)."""
    inner = torch.linalg.solve_triangular(factor, targets, upper=False)
    return torch.linalg.solve_triangular(factor.mT, inner, upper=True)


@dataclass
class KernelFit:
    alpha: torch.Tensor  # (n, C) coefficients
    train_outputs: torch.Tensor  # K α on the train points
    norms: torch.Tensor  # α_cᵀ K α_c per output column
    jitter: float


def fit(x: torch.Tensor, targets: torch.Tensor, kind: str, bandwidth: float | None = None, degree: int = 2,
        ridge: float = 0.0) -> KernelFit:
    """Solve (K + ridge·I) α = targets, K = k(x, x), by an in-place float64 Cholesky (with jitter if needed)."""
    x = x.double()
    n = len(x)
    chunk = rows_per_block(n)

    def build() -> torch.Tensor:
        matrix = torch.empty((n, n), dtype=torch.float64, device=x.device)
        for start in range(0, n, chunk):
            kernel_block(kind, x[start:start + chunk], x, bandwidth, degree, out=matrix[start:start + chunk],
                         diagonal=start)
        return matrix

    factor, jitter = cholesky_with_jitter(build, ridge)
    targets = targets.double()
    alpha = cholesky_solve(factor, targets)
    shift = ridge + jitter
    # K = L Lᵀ − shift·I, so K α and αᵀ K α come from the factor without the overwritten K.
    half = factor.mT @ alpha
    outputs = factor @ half - shift * alpha
    norms = half.pow(2).sum(0) - shift * alpha.pow(2).sum(0)
    return KernelFit(alpha, outputs, norms, jitter)


def predict(x_new: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor, kind: str, bandwidth: float | None = None,
            degree: int = 2) -> torch.Tensor:
    """k(x_new, x) α, the kernel block computed a chunk of rows at a time."""
    x_new, x = x_new.double(), x.double()
    chunk = rows_per_block(len(x))
    return torch.cat([kernel_block(kind, x_new[i:i + chunk], x, bandwidth, degree) @ alpha
                      for i in range(0, len(x_new), chunk)])


# ---------------------------------------------------------------- kernel runs

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


def is_kernel_run(spec: RunSpec) -> bool:
    return spec.model.startswith(KERNEL_PREFIX)


def check_options(kernel: str, features: str, bandwidth: float | None, ridge: float, degree: int) -> None:
    for kind, name, known in (("kernel", kernel, KERNELS), ("feature preprocessing", features, FEATURES)):
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
            hint = f"did you mean '{close[0]}'?" if close else "known:"
            raise UsageError(f"unknown {kind} '{name}': {hint} (one of {', '.join(known)})")
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
    from audit.data import build_run_data, load_base

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
    require_memory(f"the {kernel.kind} kernel on {n_planned:,} train points", needed, target,
                   f"lower --train-size (the kernel matrix alone is {n_planned:,}² × 8 bytes = "
                   f"{8 * n_planned ** 2 / 2 ** 30:.3g} GiB)")
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
        "kernel": kernel.kind, "formula": KERNELS[kernel.kind], "features": kernel.features,
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


def kernel_interpolation(dataset: str = "fashion-mnist", train_size: int | None = 4000, variant: str = "true",
                         kernel: str = "gaussian", bandwidth: float | None = None, ridge: float = 0.0,
                         features: str = "raw", degree: int = 2, seed: int = 0, data_dir: Path | None = None,
                         preprocess: str = "none", device: str = "cpu") -> dict[str, Any]:
    """Fit a kernel interpolant to one-hot train labels of an audit variant and report (a JSON-ready dict).
    Inputs: raw pixels in [0, 1] by default (preprocess "none", as the paper), or random conv features."""
    spec = kernel_spec(dataset, train_size, variant, kernel, bandwidth, ridge, features, degree, seed, preprocess)
    return fit_run(spec, data_dir, device).summary


def kernel_record(spec: RunSpec, outcome: KernelOutcome) -> Any:
    """The run record of a kernel fit, shaped like a network run: status complete, fitted when the train
    accuracy reaches the fit target, α as its final weights, one evaluation row, rkhs-norm cached."""
    import measures
    from audit.store import RunRecord

    import audit

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
    from audit.store import read_run, write_run

    if path.exists():
        record = read_run(path, weights=False)
        if record.status == "complete":
            return record
    outcome = fit_run(spec, data_dir, device, download)
    record = kernel_record(spec, outcome)
    write_run(path, record)
    return read_run(path, weights=False)
