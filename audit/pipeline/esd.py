"""The empirical spectral density of each layer of a stored run: the eigenvalues of WᵀW and the power-law fit
that `ww-alpha` makes to them (measures.spectra: same reshaping, batch norm folding, threshold and xmin rule),
computed from the stored weights when drawn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from audit.data.fitted import build_run_data
from audit.errors import WorkError
from audit.models.architecture import loads
from audit.models.registry import build_model
from audit.spec.run import KERNEL_PREFIX, derive_seed
from audit.store.record import RunRecord
from audit.train.state import load_arrays
from measures.layers import prepare, weight_layers
from measures.spectra import MIN_EVALS, eigenvalues, layer_spectra


def layer_esd(model: nn.Module, min_evals: int = MIN_EVALS["min_evals"]) -> list[dict[str, Any]]:
    """One dict per linear or conv layer of a prepared model (eval mode, batch norm folded): what
    measures.spectra.layer_spectra gives (name, shape, num_evals, alpha, xmin, ks, spectral_norm, stable_rank,
    log_norm; alpha, xmin and ks None where no power law is fitted) plus `eigenvalues`, λ_i = σ_i(W)² of the
    weight as a matrix (conv reshaped to (out, in·k·k)), float64, descending."""
    layers = weight_layers(model)
    summaries = layer_spectra(model, min_evals)
    return [{**summary, "eigenvalues": eigenvalues(module.weight)}
            for summary, (_, module) in zip(summaries, layers, strict=True)]


def stored_model(record: RunRecord, at: str | None = None, data_dir: Path | None = None) -> nn.Module:
    """The run's model with its final weights (or those kept at `at`), prepared as measures see it: on the CPU,
    in eval mode, batch norm folded. Built for the input shape and classes its architecture record holds;
    a run written before architectures were recorded rebuilds its data to learn them."""
    if record.spec.model.startswith(KERNEL_PREFIX):
        raise WorkError(f"run {record.run_id} is a kernel fit: it has no layers to take spectra of")
    shape, classes = input_shape_and_classes(record, data_dir)
    model = build_model(record.spec.model, shape, classes, dropout=record.spec.dropout,
                        batchnorm=record.spec.batchnorm, seed=derive_seed(record.spec.seed, "init"))
    weights = record.final if at is None else record.kept[at]["weights"]
    try:
        load_arrays(model, weights)
    except RuntimeError as err:  # a run written before architectures were recorded, its model edited since
        first = str(err).strip().splitlines()[-1].strip()
        raise WorkError(f"{record.path}: the stored weights do not fit model {record.spec.model} as it is now "
                        f"({first}); it changed since the run was trained: `audit run --retrain` trains it "
                        "again") from None
    return prepare(model, torch.device("cpu"))


def input_shape_and_classes(record: RunRecord, data_dir: Path | None = None) -> tuple[tuple[int, ...], int]:
    recorded = loads(record.attrs.get("architecture"))
    if recorded is not None and "input_shape" in recorded:
        return tuple(recorded["input_shape"]), int(recorded["num_classes"])
    data = build_run_data(record.spec, data_dir, stored=record.data)
    return data.input_shape, data.num_classes


def run_esd(record: RunRecord, at: str | None = None, min_evals: int = MIN_EVALS["min_evals"],
            data_dir: Path | None = None) -> list[dict[str, Any]]:
    """Per layer of a stored run: name, eigenvalues (of WᵀW, descending), alpha, xmin, ks and the other
    quantities of layer_esd, from its final weights (or those kept at `at`)."""
    with torch.no_grad():
        return layer_esd(stored_model(record, at, data_dir), min_evals)

