"""Names checked where specs enter (the command line, an experiment file): datasets, models (a user's
module:function is imported here), kernels, optimizers, preprocessings. Reading a stored run never comes here."""

from __future__ import annotations

from audit.data.imagenet import image_size
from audit.data.preprocess import PREPROCESSINGS
from audit.data.sources import DATASETS
from audit.data.variants import VARIANTS
from audit.errors import UsageError
from audit.models.registry import MODELS
from audit.spec.experiment import ExperimentSpec
from audit.spec.run import KERNEL_PREFIX, RunSpec
from audit.theory.kernel_runs import parse_kernel_model
from audit.train.state import OPTIMIZERS


def check_run(spec: RunSpec) -> RunSpec:
    """The spec, once every name in it is known; else the UsageError of the first unknown one."""
    DATASETS.get(spec.dataset)
    VARIANTS.get(spec.variant)
    if spec.model.startswith(KERNEL_PREFIX):
        parse_kernel_model(spec.model)
    else:
        MODELS.get(spec.model)
    OPTIMIZERS.get(spec.optimizer)
    PREPROCESSINGS.get(spec.preprocess)
    if (spec.dataset == "imagenet") != (image_size(spec.preprocess) is not None):
        raise UsageError(f"dataset {spec.dataset} with preprocessing '{spec.preprocess}': the imagenet dataset "
                         "takes preprocess imagenet or imagenet:SIZE, and only it does")
    return spec


def check_experiment(experiment: ExperimentSpec) -> ExperimentSpec:
    """The experiment, once the names of every run it expands to are known (each distinct name checked once)."""
    seen: set[tuple[str, ...]] = set()
    for spec in experiment.expand():
        key = (spec.dataset, spec.model, spec.optimizer, spec.preprocess, spec.variant)
        if key not in seen:
            seen.add(key)
            check_run(spec)
    return experiment
