"""Adding a user's own trained model to a store as a run, so that it is scored and judged like ours."""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

import audit
from audit.data.fitted import (
    RunData,
    array_sha256,
    build_run_data,
    check_labels,
    check_user_data,
    with_labels,
)
from audit.errors import UsageError, WorkError
from audit.models.architecture import dumps
from audit.models.registry import architecture
from audit.pipeline.names import check_run
from audit.spec.names import parse_variant
from audit.spec.run import USER_DATASET, RunSpec
from audit.store.directory import Store, create_store
from audit.store.files import read_run, write_run
from audit.store.locks import RunLocked, run_lock
from audit.store.record import RunRecord
from audit.train.evaluate import evaluate
from audit.train.state import load_arrays, make_model, state_arrays


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UsageError(f"state_dict file {path} does not exist") from None
    except Exception as err:  # torch.load raises many types for foreign files
        raise UsageError(f"cannot read {path} as a state_dict saved with torch.save: {err}") from None
    if hasattr(state, "state_dict"):
        state = state.state_dict()
    if not isinstance(state, dict):
        raise UsageError(f"{path} holds a {type(state).__name__}, not a state_dict")
    return state


def import_run(store: Store, spec: RunSpec, init_path: Path, final_path: Path, data: RunData | None = None,
               sources: dict[str, str] | None = None) -> RunRecord:
    """Write a complete run for a model trained elsewhere: its spec, data (rebuilt from the spec unless given),
    init and final weights, and one evaluation row. Measures that need a training history are undefined for it.
    `sources` names the files the user's labels or data came from (kept as attributes)."""
    store.read_experiment()  # a corrupt experiment.json stops the import before any work, the file unchanged
    path = store.run_path(spec.run_id)
    if path.exists():
        raise UsageError(f"the store already holds run {spec.run_id} for this spec; change --seed or the store")
    data = build_run_data(spec) if data is None else data
    model = make_model(spec, data)
    for label, state_path in (("init", init_path), ("final", final_path)):
        try:
            model.load_state_dict(load_state_dict(state_path))
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0]
            raise UsageError(f"the {label} state_dict does not fit model {spec.model}: {first}") from None
    init = {k: v.numpy().copy() for k, v in load_state_dict(init_path).items()}
    load_arrays(model, {k: v.numpy() for k, v in load_state_dict(final_path).items()})
    train_loss, train_acc = evaluate(model, data.x_train, data.y_train)
    test_loss, test_acc = evaluate(model, data.x_test, data.y_test)
    fitted = train_acc >= spec.fit_target
    history = {"epoch": [0.0], "step": [0.0], "lr": [0.0], "train_loss": [train_loss], "train_acc": [train_acc],
               "test_loss": [test_loss], "test_acc": [test_acc], "batch_loss_sum": [float("nan")], "seconds": [0.0]}
    record = RunRecord(
        spec=spec, status="complete", fitted=fitted, data=dict(data.record), init=init, final=state_arrays(model),
        history={k: np.asarray(v, dtype=np.float64) for k, v in history.items()},
        attrs={"imported": True, "train_acc": train_acc, "test_acc": test_acc, "train_loss": train_loss,
               "test_loss": test_loss, "train_size": len(data.x_train), "test_size": len(data.x_test),
               "audit_version": audit.__version__, "torch_version": torch.__version__,
               "init_file": str(init_path), "final_file": str(final_path), **(sources or {}),
               "architecture": dumps(architecture(spec.model, model, data.input_shape, data.num_classes))})
    try:
        with run_lock(path):
            write_run(path, record)
    except RunLocked as err:
        raise WorkError(f"run {spec.run_id} not imported into {store.root}: {err}") from None
    store.add_to_experiment("imported", spec.run_id)
    return read_run(path)


def load_array_file(path: Path, what: str) -> Any:
    """The arrays of a .npy (an ndarray) or .npz file (a mapping of them), read without pickles."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise UsageError(f"{what} {path} cannot be read with numpy.load: {err}") from None


def read_labels(path: Path) -> np.ndarray:
    loaded = load_array_file(path, "--labels")
    if not isinstance(loaded, np.ndarray):
        raise UsageError(f"--labels {path} is an .npz archive; expected one array saved with numpy.save (.npy)")
    return loaded


def read_user_data(path: Path) -> dict[str, np.ndarray]:
    loaded = load_array_file(path, "--data")
    if isinstance(loaded, np.ndarray):
        raise UsageError(f"--data {path} holds one array; expected an .npz with x_train, y_train, x_test, y_test")
    try:
        with loaded:
            arrays = {name: loaded[name] for name in loaded.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise UsageError(f"--data {path} cannot be read with numpy.load: {err}") from None
    return check_user_data(arrays, f"--data {path}")


def import_data(spec: RunSpec, labels: Path | None, data: Path | None, data_dir: Path | None,
                download: bool) -> tuple[RunSpec, RunData, dict[str, str]]:
    """The spec and data of an import: rebuilt from the spec, with the user's fitted labels (--labels) or
    the user's own arrays (--data), whose SHA-256 then enters the spec and so the run id."""
    if data is not None:
        arrays = read_user_data(data)
        spec = dataclasses.replace(spec, dataset=USER_DATASET, preprocess="none", data_sha256=array_sha256(*arrays.values()))
        return spec, build_run_data(spec, stored=arrays), {"data_file": str(data)}
    run_data = build_run_data(spec, data_dir, download)
    if labels is None:
        return spec, run_data, {}
    given = check_labels(read_labels(labels), len(run_data.y_train), run_data.num_classes, f"--labels {labels}")
    if np.array_equal(given, run_data.y_train.numpy()):
        return spec, run_data, {"labels_file": str(labels)}  # the labels audit regenerates: the same run
    spec = dataclasses.replace(spec, labels_sha256=array_sha256(given))
    return spec, with_labels(run_data, given), {"labels_file": str(labels)}


def import_model(store: Path, model: str, init: Path, final: Path, *, dataset: str | None = None,
                 variant: str = "true", seed: int = 0, train_size: int | None = None,
                 preprocess: str | None = None, labels: Path | None = None, data: Path | None = None,
                 data_dir: Path | None = None, download: bool = False) -> dict[str, Any]:
    """`audit import`: the run of a model trained elsewhere added to the store (created if missing), its data
    rebuilt from the dataset (default digits), variant and seed, with its fitted train labels from `labels`
    (.npy), or its data the arrays of `data` (.npz, dataset "npz"); a summary (store, run_id, train_acc,
    test_acc, fitted). Nothing is written when an input is wrong."""
    if data is not None:
        given = [name for name, value in (("--labels", labels), ("--dataset", dataset), ("--train-size", train_size))
                 if value is not None] + (["--preprocess"] if preprocess not in (None, "none") else [])
        if given:
            raise UsageError(f"--data {data} holds the whole data as the model sees them: drop {', '.join(given)}")
    name, p = parse_variant(variant)
    spec = check_run(RunSpec(dataset=dataset or "digits", model=model, variant=name, corrupt=p, seed=seed,
                             train_size=train_size, preprocess=preprocess or "standard"))
    for path in (init, final):
        if not path.is_file():
            raise UsageError(f"state_dict file {path} does not exist")
    spec, run_data, sources = import_data(spec, labels, data, data_dir, download)
    target = create_store(store)
    record = import_run(target, spec, init, final, run_data, sources)
    return {"store": str(target.root), "run_id": record.run_id, "train_acc": record.attrs["train_acc"],
            "test_acc": record.attrs["test_acc"], "fitted": record.fitted}
