"""The paper's theory from the command line: Theorem 1's construction (§4, `audit expressivity`) and
minimum-norm kernel interpolation (§5, `audit kernel`), optionally written into a store as a run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from audit.data.sources import load_base
from audit.errors import UsageError
from audit.pipeline.names import check_run
from audit.spec.run import RunSpec
from audit.store.directory import create_store
from audit.theory.expressivity import expressivity
from audit.theory.kernel_runs import fit_run, kernel_spec, store_kernel_run
from audit.train.device import resolve_device


def build_expressivity(n: int | None, d: int | None, dataset: str | None, train_size: int | None, variant: str,
                       targets: str, seed: int, data_dir: Path | None, depth: int) -> dict[str, Any]:
    """Theorem 1's network for n Gaussian points in d dimensions (default 1000 and 50), or for a dataset's
    train inputs (--train-size of them); the document of audit.theory.expressivity."""
    if dataset is None:
        if train_size is not None:
            raise UsageError("--train-size applies to --dataset; for Gaussian points give --n")
        n, d = 1000 if n is None else n, 50 if d is None else d
    elif n is not None or d is not None:
        raise UsageError("--n and --d are for Gaussian points; with --dataset use --train-size (d is the image size)")
    return expressivity(n or 0, d or 0, dataset, train_size, variant, targets, seed, data_dir, depth)


KERNEL_TRAIN_SIZE = 4000


def fit_kernel(dataset: str, train_size: int | None, variant: str, kind: str, bandwidth: float | None,
               ridge: float, degree: int, features: str, seed: int, preprocess: str, *, out: Path | None = None,
               device: str = "cpu", data_dir: Path | None = None, download: bool = False,
               on_stage: Callable[[str], None] | None = None) -> tuple[RunSpec, dict[str, Any]]:
    """Fit the kernel interpolant of one audit variant (train_size 0 or None: the whole train set): its run spec
    and summary; with `out`, also written into that store as a run (the summary then names the store)."""
    if train_size is None:  # the default: 4000 images, or every one of a smaller train set (digits has 1347)
        available = len(load_base(dataset, data_dir, download).y_train)
        train_size = KERNEL_TRAIN_SIZE if available > KERNEL_TRAIN_SIZE else 0
    spec = check_run(kernel_spec(dataset, train_size or None, variant, kind, bandwidth, ridge, features, degree,
                                 seed, preprocess))
    target = str(resolve_device(device))
    store = None
    if out is not None:
        store = create_store(out)
        store.read_experiment()  # a corrupt experiment.json stops this before the fit, the file unchanged
    outcome = fit_run(spec, data_dir, target, download, on_stage=on_stage or (lambda text: None))
    document = dict(outcome.summary)
    if store is not None:
        store_kernel_run(store, spec, outcome)
        document["store"] = str(store.root)
    return spec, document
