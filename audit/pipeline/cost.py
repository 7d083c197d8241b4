"""A rough, upper-bound cost of an experiment before running it: every run trains for its full epoch budget."""

from __future__ import annotations

import math
from typing import Any

from audit.data.imagenet import image_size
from audit.models.flops import training_flops
from audit.models.registry import build_model
from audit.spec.experiment import ExperimentSpec
from audit.spec.run import KERNEL_PREFIX, RunSpec

# train size, input shape before preprocessing, classes
SIZES = {"digits": (1347, (1, 8, 8), 10), "mnist": (60000, (1, 28, 28), 10),
         "fashion-mnist": (60000, (1, 28, 28), 10), "cifar10": (50000, (3, 32, 32), 10),
         "cifar100": (50000, (3, 32, 32), 100), "svhn": (73257, (3, 32, 32), 10),
         "imagenet": (1281167, (3, 299, 299), 1000)}
CPU_RATE = 30e9  # training FLOP/s reached on 2 CPU cores (measured: 0.3-0.5 of a 60-120 GFLOP/s matmul rate)
GPU_RATE = 100e12  # a current data-centre GPU in bf16 at a realistic fraction of peak


def run_shape(spec: RunSpec) -> tuple[int, tuple[int, ...], int]:
    """The train size, the input shape after preprocessing and the class count of a run (a dataset audit does
    not know: 10,000 images of 3×32×32 in 10 classes)."""
    n, shape, classes = SIZES.get(spec.dataset, (10000, (3, 32, 32), 10))
    if spec.preprocess == "paper" and shape[1] > 28:
        shape = (shape[0], 28, 28)
    if spec.preprocess.startswith("imagenet"):
        size = image_size(spec.preprocess)
        shape = (shape[0], size, size)
    return min(n, spec.train_size or n), shape, classes


def run_flops(spec: RunSpec, cache: dict[tuple[str, tuple[int, ...], int], int] | None = None) -> float:
    """The most training FLOPs one run can take: its whole epoch budget over its train set."""
    cache = {} if cache is None else cache
    size, shape, classes = run_shape(spec)
    if spec.model.startswith(KERNEL_PREFIX):  # kernel rows and Cholesky (n³/3) for n = train size
        return 2.0 * size * size * math.prod(shape) + size ** 3 / 3
    key = (spec.model, shape, classes)
    if key not in cache:
        cache[key] = training_flops(build_model(spec.model, shape, classes), shape)
    return float(cache[key] * size * spec.epochs)


def estimate(experiment: ExperimentSpec) -> dict[str, Any]:
    """Runs, the most training FLOPs they can take, and that work in hours on 2 CPU cores and on one GPU."""
    cache: dict[tuple[str, tuple[int, ...], int], int] = {}
    specs = experiment.expand()
    total = sum(run_flops(spec, cache) for spec in specs)
    return {"runs": len(specs), "max_pflop": total / 1e15, "cpu_hours": total / CPU_RATE / 3600,
            "gpu_hours": total / GPU_RATE / 3600}


TRAIN_FRACTION = 0.4  # training reaches about this fraction of the fp32 matmul rate on CPU (bench/train.py: 0.48)
