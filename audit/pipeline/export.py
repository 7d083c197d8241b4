"""`audit export-data`: the exact data a run of a spec fits, written as arrays for training elsewhere."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

import numpy as np

from audit.data.fitted import build_run_data
from audit.errors import UsageError, WorkError
from audit.pipeline.names import check_run
from audit.spec.names import parse_variant
from audit.spec.run import RunSpec


def import_options(spec: RunSpec, data_dir: Path | None) -> str:
    """The `audit import` options that rebuild the data of spec (the variant and seed always written out)."""
    options = ["--dataset", spec.dataset, "--variant", spec.variant_label, "--seed", str(spec.seed)]
    if spec.train_size is not None:
        options += ["--train-size", str(spec.train_size)]
    if spec.preprocess != "standard":
        options += ["--preprocess", spec.preprocess]
    if data_dir is not None:
        options += ["--data-dir", str(data_dir)]
    return shlex.join(options)


def export_data(out: Path, *, dataset: str = "digits", variant: str = "true", seed: int = 0,
                train_size: int | None = None, preprocess: str = "standard", data_dir: Path | None = None,
                download: bool = False) -> dict[str, Any]:
    """Write x_train, y_train, x_test, y_test of the spec's run data to `out` (.npz, atomically; an existing
    file is refused): inputs as the model sees them (float32), labels as fitted (int64). A document: the
    path, the spec, the arrays' shapes and the matching `audit import` options."""
    if out.exists():
        raise UsageError(f"--out {out} exists already; remove it or choose another path")
    name, p = parse_variant(variant)
    spec = check_run(RunSpec(dataset=dataset, variant=name, corrupt=p, seed=seed, train_size=train_size,
                             preprocess=preprocess))
    data = build_run_data(spec, data_dir, download)
    if hasattr(data.x_train, "identity"):
        raise UsageError(f"{dataset} is read lazily from its image files; export-data writes arrays held in "
                         "memory: choose a smaller dataset")
    arrays = {"x_train": data.x_train.numpy().astype(np.float32), "y_train": data.y_train.numpy().astype(np.int64),
              "x_test": data.x_test.numpy().astype(np.float32), "y_test": data.y_test.numpy().astype(np.int64)}
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as file:
            np.savez(file, **arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, out)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise WorkError(f"cannot write {out}: {err.strerror or err}") from None
    return {"out": str(out), "dataset": spec.dataset, "variant": spec.variant_label, "seed": spec.seed,
            "train_size": spec.train_size, "preprocess": spec.preprocess, "num_classes": data.num_classes,
            "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()},
            "import_options": import_options(spec, data_dir)}
