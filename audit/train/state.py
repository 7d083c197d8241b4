"""The bookkeeping of one run being trained, whatever trains it: data, history, RNG streams, keep points, checkpoints."""

from __future__ import annotations

import io
import os
import platform
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import audit
from audit.data.fitted import RunData, build_run_data
from audit.errors import WorkError
from audit.models.architecture import dumps
from audit.models.registry import architecture, build_model
from audit.registry import Registry
from audit.spec.run import RunSpec, derive_seed
from audit.store.digests import damage_line
from audit.store.files import read_run, write_run
from audit.store.locks import touch_lock
from audit.store.record import RunRecord
from audit.train.device import Operational, ddp_world
from audit.train.evaluate import learning_rate, outcome

HISTORY_COLUMNS = ("epoch", "step", "lr", "train_loss", "train_acc", "test_loss", "test_acc",
                   "batch_loss_sum", "seconds")

HEARTBEAT_SECONDS = 10.0  # the lock's heartbeat is refreshed at most this often during training


def state_arrays(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def load_arrays(model: nn.Module, arrays: dict[str, np.ndarray]) -> None:
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()})


def make_model(spec: RunSpec, data: RunData) -> nn.Module:
    return build_model(spec.model, data.input_shape, data.num_classes, dropout=spec.dropout,
                       batchnorm=spec.batchnorm, seed=derive_seed(spec.seed, "init"))


def make_optimizer(spec: RunSpec, model: nn.Module) -> torch.optim.Optimizer:
    return OPTIMIZERS.get(spec.optimizer)(spec, model.parameters())


OPTIMIZERS = Registry("optimizer")
OPTIMIZERS.add("sgd", lambda spec, params: torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum,
                                                           weight_decay=spec.weight_decay),
               description="SGD with momentum and weight decay (PyTorch's update)")
OPTIMIZERS.add("adam", lambda spec, params: torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay),
               description="Adam with L2 weight decay; momentum is unused")


@dataclass
class RunState:
    """The bookkeeping of one run being trained, whatever trains it (alone or in a batched group): its data,
    history, RNG streams, keep points, and writing its file."""

    spec: RunSpec
    path: Path
    data: RunData
    record: RunRecord
    order: torch.Generator
    augment_rng: torch.Generator
    history: dict[str, list[float]]
    resume: dict[str, Any] | None = None  # the saved optimizer and RNG states when resuming
    previous_final: dict[str, np.ndarray] | None = None
    elapsed: float = 0.0
    samples: int = 0
    lock: Path | None = None
    last_save: float = 0.0  # time.monotonic() of the last checkpoint written
    last_heartbeat: float = 0.0  # time.monotonic() of the last refresh of the lock's heartbeat
    top5: tuple[float | None, float | None] = (None, None)  # train and test top-5 accuracy of the last evaluation
    model: nn.Module | None = None  # the freshly initialized model (its init weights), for the trainer to reuse

    def checkpoint_due(self, ops: Operational) -> bool:
        """Every `checkpoint_every` epochs, but not more often than every `checkpoint_seconds`."""
        return (self.epoch % ops.checkpoint_every == 0
                and time.monotonic() - self.last_save >= ops.checkpoint_seconds)

    @property
    def epoch(self) -> int:
        return int(self.history["epoch"][-1]) if self.history["epoch"] else 0

    @property
    def step(self) -> int:
        return int(self.history["step"][-1]) if self.history["step"] else 0

    def lr(self) -> float:
        """The learning rate of the coming epoch."""
        return learning_rate(self.spec, self.epoch)

    def add_row(self, epoch: int, step: int, lr: float, batch_sum: float, train: tuple[float, float],
                test: tuple[float, float]) -> None:
        row = dict(epoch=epoch, step=step, lr=lr, train_loss=train[0], train_acc=train[1], test_loss=test[0],
                   test_acc=test[1], batch_loss_sum=batch_sum, seconds=self.elapsed)
        for key, value in row.items():
            self.history[key].append(float(value))

    def keep_points(self, keep: tuple[str, ...], weights: Callable[[], dict[str, np.ndarray]]) -> None:
        """Keep the weights at every keep point reached by the latest evaluation and not kept before."""
        epoch_now, loss_now = self.history["epoch"][-1], self.history["train_loss"][-1]
        for tag in keep:
            kind, _, amount = tag.partition(":")
            reached = epoch_now == float(amount) if kind == "epoch" else loss_now <= float(amount)
            if reached and tag not in self.record.kept:
                columns = ("epoch", "step", "train_loss", "train_acc", "test_loss", "test_acc")
                self.record.kept[tag] = {"attrs": {c: self.history[c][-1] for c in columns}, "weights": weights()}

    def stop(self) -> str | None:
        """The stop decision after the latest epoch; refreshes the lock's heartbeat on the way (at most every
        HEARTBEAT_SECONDS: a lock goes stale only after LOCK_STALE_SECONDS without one)."""
        if self.lock is not None and time.monotonic() - self.last_heartbeat >= HEARTBEAT_SECONDS:
            touch_lock(self.lock)
            self.last_heartbeat = time.monotonic()
        return outcome(self.spec, self.history)[0] if self.epoch > 0 else None

    def save(self, status: str, final: dict[str, np.ndarray], optimizer_state: dict[str, Any] | None,
             device: torch.device) -> None:
        """Write the run file: a checkpoint while running, the result once stopped (rank 0 only under DDP)."""
        record, history = self.record, self.history
        if ddp_world()[0] != 0:
            return
        record.status = status
        record.final = final
        record.history = {c: np.asarray(v, dtype=np.float64) for c, v in history.items()}
        _, summary = outcome(self.spec, history)
        record.fitted = status == "complete" and summary["steps_to_fit"] is not None
        last = {c: history[c][-1] for c in ("train_loss", "train_acc", "test_loss", "test_acc")}
        best = int(np.argmax(history["test_acc"]))
        record.attrs.update(summary, **last, epochs=self.epoch, steps=self.step, train_seconds=self.elapsed,
                            samples_seen=self.samples, best_test_acc=history["test_acc"][best],
                            best_test_epoch=int(history["epoch"][best]),
                            first_epoch_loss_sum=history["batch_loss_sum"][1] if len(history["epoch"]) > 1 else None)
        if self.top5[0] is not None:
            record.attrs.update(train_top5=self.top5[0], test_top5=self.top5[1])
        if status == "diverged":
            record.attrs["diverged_epoch"] = self.epoch
        record.resume = None if status != "running" else pack_state({
            "optimizer": optimizer_state, "order_rng": self.order.get_state(),
            "augment_rng": self.augment_rng.get_state(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        })
        write_run(self.path, record, "checkpoint" if status == "running" else "result")
        self.last_save = self.last_heartbeat = time.monotonic()
        if self.lock is not None:
            touch_lock(self.lock)


def open_run(spec: RunSpec, path: Path, ops: Operational, device: torch.device,
             lock: Path | None = None, trainer: str = "sequential") -> RunState | RunRecord:
    """A finished run's record, or the state to train (or resume) it from; `trainer` (batched or sequential)
    is recorded in the run file, so that a resume or a retrain takes the same path."""
    previous = read_run(path, run_id=spec.run_id) if path.exists() else None
    trained = {k: v for k, v in (previous.damaged if previous is not None else {}).items() if not k.startswith("measures/")}
    if trained:  # a damaged cached measure alone is recomputed by scoring
        raise WorkError(f"{path} is damaged: {damage_line(trained)}; `audit run` retrains the run")
    if previous is not None and previous.status != "running":
        return previous
    data = build_run_data(spec, ops.data_dir, ops.download)
    model = make_model(spec, data)
    init = state_arrays(model)
    state = RunState(spec=spec, path=path, data=data, record=RunRecord(spec=spec, data=dict(data.record), init=init),
                     order=torch.Generator().manual_seed(derive_seed(spec.seed, "order")),
                     augment_rng=torch.Generator().manual_seed(derive_seed(spec.seed, "augment")),
                     history={c: [] for c in HISTORY_COLUMNS}, lock=lock, last_save=time.monotonic(), model=model)
    state.record.attrs.update(device=str(device), torch_version=torch.__version__, audit_version=audit.__version__,
                              python_version=platform.python_version(), threads=torch.get_num_threads(),
                              host=socket.gethostname(), pid=os.getpid(), trainer=trainer,
                              train_size=len(data.x_train), test_size=len(data.x_test),
                              architecture=dumps(architecture(spec.model, model, data.input_shape, data.num_classes)))
    if previous is not None and previous.resume is not None:
        if previous.data.get("fingerprint_train") != data.record["fingerprint_train"]:
            raise WorkError(f"{path}: the rebuilt train data differ from the data the run was fitting "
                            "(fingerprint mismatch); the dataset files changed since it started")
        state.resume = unpack_state(previous.resume)
        state.previous_final = previous.final
        state.order.set_state(state.resume["order_rng"])
        state.augment_rng.set_state(state.resume["augment_rng"])
        state.history = {c: list(map(float, previous.history[c])) for c in HISTORY_COLUMNS}
        state.elapsed = float(previous.attrs.get("train_seconds", 0.0))
        state.samples = int(previous.attrs.get("samples_seen", 0))
        state.record.attrs["resumed"] = int(previous.attrs.get("resumed", 0)) + 1
        state.record.kept = previous.kept
    return state


def pack_state(state: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def unpack_state(blob: bytes) -> Any:
    return torch.load(io.BytesIO(blob), weights_only=False)
