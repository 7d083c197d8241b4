"""Adding a user's own trained model to a store as a run, so that it is scored and judged like ours."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

import audit
from audit.data.fitted import build_run_data
from audit.errors import UsageError, WorkError
from audit.pipeline.names import check_run
from audit.spec.names import parse_variant
from audit.spec.run import RunSpec
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


def import_run(store: Store, spec: RunSpec, init_path: Path, final_path: Path) -> RunRecord:
    """Write a complete run for a model trained elsewhere: its spec, data, init and final weights,
    and one evaluation row. Measures that need a training history are undefined for it."""
    store.read_experiment()  # a corrupt experiment.json stops the import before any work, the file unchanged
    path = store.run_path(spec.run_id)
    if path.exists():
        raise UsageError(f"the store already holds run {spec.run_id} for this spec; change --seed or the store")
    data = build_run_data(spec)
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
               "test_loss": test_loss, "train_size": len(data.x_train), "test_size": len(data.x_test), "audit_version": audit.__version__, "torch_version": torch.__version__,
               "init_file": str(init_path), "final_file": str(final_path)})
    try:
        with run_lock(path):
            write_run(path, record)
    except RunLocked as err:
        raise WorkError(f"run {spec.run_id} not imported into {store.root}: {err}") from None
    store.add_to_experiment("imported", spec.run_id)
    return read_run(path)


def import_model(store: Path, model: str, init: Path, final: Path, *, dataset: str = "digits",
                 variant: str = "true", seed: int = 0, train_size: int | None = None,
                 preprocess: str = "standard") -> dict[str, Any]:
    """`audit import`: the run of a model trained elsewhere added to the store (created if missing), its data
    rebuilt from the dataset, variant and seed; a summary (store, run_id, train_acc, test_acc, fitted)."""
    name, p = parse_variant(variant)
    spec = check_run(RunSpec(dataset=dataset, model=model, variant=name, corrupt=p, seed=seed,
                             train_size=train_size, preprocess=preprocess))
    for path in (init, final):
        if not path.is_file():
            raise UsageError(f"state_dict file {path} does not exist")
    target = create_store(store)
    record = import_run(target, spec, init, final)
    return {"store": str(target.root), "run_id": record.run_id, "train_acc": record.attrs["train_acc"],
            "test_acc": record.attrs["test_acc"], "fitted": record.fitted}
