"""Training one run: SGD (or Adam) over device-resident tensors, stopping rules, checkpoints.

Batches are index slices of tensors already on the device. The learning rate of epoch e (counting
from 0) is lr · lr_decay^e. After every epoch the whole fitted train set is evaluated in eval mode;
a run stops when fitted (train accuracy ≥ fit_target), at the loss target, or at max epochs, and is
marked diverged on a non-finite loss. Every `checkpoint_every` epochs the run file is replaced with
the current weights, history, optimizer and RNG states, so a killed run resumes where it was.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import audit
from audit.augment import Augmenter, make_augmenter
from audit.data import RunData, build_run_data
from audit.errors import UsageError, WorkError
from audit.models import build_model
from audit.spec import RunSpec, derive_seed
from audit.store import RunRecord, pack_state, read_run, touch_lock, unpack_state, write_run
from audit.testhooks import pause_point

HISTORY_COLUMNS = ("epoch", "step", "lr", "train_loss", "train_acc", "test_loss", "test_acc",
                   "batch_loss_sum", "seconds")
EVAL_BATCH = 8192
HEARTBEAT_SECONDS = 10.0  # the lock's heartbeat is refreshed at most this often during training


def ddp_world() -> tuple[int, int]:
    """(rank, world size) when launched by torchrun, else (0, 1)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def top5_hits(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """How many targets are among the 5 largest logits (over the last dimension), per leading index: a target
    is a hit when fewer than 5 logits exceed its own (ties count for the target). A comparison, not a topk:
    several times faster on small class counts."""
    above = (logits > logits.gather(-1, target.unsqueeze(-1))).sum(-1)
    return (above < 5).sum(-1)


@dataclass(frozen=True)
class Operational:
    """Settings that do not change the science and are not part of the run id."""

    device: str = "auto"
    checkpoint_every: int = 1  # epochs between checkpoints...
    checkpoint_seconds: float = 30.0  # ...and at least this many seconds between two of them (0: none)
    data_dir: Path | None = None
    download: bool = False
    keep: tuple[str, ...] = ()  # "epoch:N" / "loss:X": weights kept when the run first reaches the point
    precision: str = "auto"  # auto: bf16 autocast for conv models on CUDA, else fp32; or fp32 | bf16
    compile: bool = False  # torch.compile the model (GPU path)
    batch: bool = True  # train runs of one architecture and data size together as one batched model
    ddp: bool = False  # data parallel over the processes of a torchrun launch; rank 0 writes


PRECISIONS = ("auto", "fp32", "bf16")


def has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())


def autocast_for(precision: str, device: torch.device, model: nn.Module) -> contextlib.AbstractContextManager:
    """bf16 autocast where asked (auto: conv models on CUDA); a null context otherwise."""
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision '{precision}': use one of {', '.join(PRECISIONS)}")
    use = precision == "bf16" or (precision == "auto" and device.type == "cuda" and has_conv(model))
    return torch.autocast(device.type, dtype=torch.bfloat16) if use else contextlib.nullcontext()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise UsageError(f"unknown device '{name}': use auto, cpu or cuda")
    return torch.device(name)


def state_arrays(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def load_arrays(model: nn.Module, arrays: dict[str, np.ndarray]) -> None:
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()})


def make_model(spec: RunSpec, data: RunData) -> nn.Module:
    return build_model(spec.model, data.input_shape, data.num_classes, dropout=spec.dropout,
                       batchnorm=spec.batchnorm, seed=derive_seed(spec.seed, "init"))


def make_optimizer(spec: RunSpec, model: nn.Module) -> torch.optim.Optimizer:
    if spec.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum,
                           weight_decay=spec.weight_decay)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = EVAL_BATCH,
             autocast: contextlib.AbstractContextManager | None = None) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of the model in eval mode on (x, y), in large batches."""
    loss, accuracy, _ = evaluate_full(model, x, y, batch, autocast)
    return loss, accuracy


@torch.inference_mode()
def evaluate_full(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = EVAL_BATCH,
                  autocast: contextlib.AbstractContextManager | None = None, rank: int = 0,
                  world: int = 1) -> tuple[float, float, float | None]:
    """Mean cross-entropy, accuracy and top-5 accuracy (None under 5 classes) in eval mode. Lazily read images
    go in their own (smaller) batches; data parallel (world > 1), each rank evaluates every world-th batch and
    the sums are all-reduced, so every rank gets the same numbers."""
    was_training = model.training
    model.eval()
    batch = min(batch, getattr(x, "eval_batch", batch))
    sums = torch.zeros(4, device=x.device, dtype=torch.float64)  # loss, correct, correct in the top 5, ≥ 5 classes
    for number, start in enumerate(range(0, len(x), batch)):
        if number % world != rank:
            continue
        with autocast or contextlib.nullcontext():
            logits = model(x[start:start + batch]).float()
        target = y[start:start + batch]
        sums[0] += F.cross_entropy(logits, target, reduction="sum").double()
        sums[1] += (logits.argmax(1) == target).sum()
        if logits.shape[1] >= 5:
            sums[2] += top5_hits(logits, target)
            sums[3] = 1
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(sums)
    model.train(was_training)
    loss, correct, top5, has_top5 = sums.tolist()
    return loss / len(x), correct / len(x), top5 / len(x) if has_top5 else None


def outcome(spec: RunSpec, history: dict[str, list[float]]) -> tuple[str | None, dict[str, float | int | None]]:
    """The stop decision after the latest evaluation, and the fit summary."""
    acc, loss = history["train_acc"], history["train_loss"]
    fit_rows = [i for i, a in enumerate(acc) if a >= spec.fit_target]
    first = fit_rows[0] if fit_rows else None
    summary = {
        "steps_to_fit": int(history["step"][first]) if first is not None else None,
        "epochs_to_fit": int(history["epoch"][first]) if first is not None else None,
    }
    last_loss = loss[-1]
    batch_sum = history["batch_loss_sum"][-1]
    if not math.isfinite(last_loss) or not math.isfinite(batch_sum):
        return "diverged", summary
    if acc[-1] >= spec.fit_target:
        return "complete", summary
    if spec.loss_target is not None and last_loss <= spec.loss_target:
        return "complete", summary
    if history["epoch"][-1] >= spec.epochs:
        return "complete", summary
    return None, summary


EpochCallback = Callable[[int, int, float], None]


def run_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
              batch_size: int, order: torch.Generator, augmenter: Augmenter | None = None,
              autocast: contextlib.AbstractContextManager | None = None,
              rank: int = 0, world: int = 1) -> torch.Tensor:
    """One pass over (x, y) in the order drawn from `order`, each batch augmented when an augmenter is given;
    returns the sum of minibatch losses (on the device: no host synchronisation inside the epoch).

    Data parallel (world > 1, the model wrapped in DDP): every rank draws the same order and takes every
    world-th example of each minibatch; its loss is weighted so that DDP's gradient average is the gradient of
    the whole minibatch's mean loss."""
    perm = torch.randperm(len(x), generator=order).to(x.device)
    batch_sum = torch.zeros((), device=x.device)
    half = (len(x) // batch_size // 2) * batch_size
    for first in range(0, len(x), batch_size):
        if first == half:
            pause_point("mid-epoch")
        whole = perm[first:first + batch_size]
        index = whole[rank::world]
        inputs = x[index] if augmenter is None else augmenter(whole, rank, world)
        with autocast or contextlib.nullcontext():
            loss = F.cross_entropy(model(inputs).float(), y[index])
        weighted = loss * (len(index) * world / len(whole)) if world > 1 else loss
        optimizer.zero_grad(set_to_none=True)
        weighted.backward()
        optimizer.step()
        batch_sum += weighted.detach() / world
    if world > 1:  # every rank holds the sum of its shares: all-reduced, the whole minibatches' mean losses
        import torch.distributed as dist

        dist.all_reduce(batch_sum)
    return batch_sum


def fit_labels(spec: RunSpec, x: torch.Tensor, y: torch.Tensor, num_classes: int, seed: int) -> float:
    """Train a fresh model of the spec's architecture by the spec's procedure and budget on (x, y);
    return its final train accuracy (eval mode). Used by procedure measures such as `rademacher`."""
    model = build_model(spec.model, tuple(x.shape[1:]), num_classes, dropout=spec.dropout,
                        batchnorm=spec.batchnorm, seed=derive_seed(seed, "init")).to(x.device)
    optimizer = make_optimizer(spec, model)
    order = torch.Generator().manual_seed(derive_seed(seed, "order"))
    model.train()
    accuracy = 0.0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "dropout"))
        for epoch in range(spec.epochs):
            for group in optimizer.param_groups:
                group["lr"] = spec.lr * spec.lr_decay ** epoch
            run_epoch(model, optimizer, x, y, spec.batch_size, order)
            loss, accuracy = evaluate(model, x, y)
            if not math.isfinite(loss):
                break
            if accuracy >= spec.fit_target or (spec.loss_target is not None and loss <= spec.loss_target):
                break
    return accuracy


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
        return self.spec.lr * self.spec.lr_decay ** self.epoch

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
             lock: Path | None = None) -> RunState | RunRecord:
    """A finished run's record, or the state to train (or resume) it from."""
    previous = read_run(path) if path.exists() else None
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
                              host=socket.gethostname(), pid=os.getpid(),
                              train_size=len(data.x_train), test_size=len(data.x_test))
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


def train_run(spec: RunSpec, path: Path, ops: Operational = Operational(),
              on_epoch: EpochCallback | None = None, lock: Path | None = None) -> RunRecord:
    """Train the run of `spec` alone into the file at path, resuming it if the file holds a running run."""
    device = resolve_device(ops.device)
    state = open_run(spec, path, ops, device, lock)
    if isinstance(state, RunRecord):
        return state
    data = state.data
    model, state.model = state.model, None  # built by open_run (a large model is slow to initialize twice)
    optimizer = make_optimizer(spec, model)
    if state.resume is not None:
        load_arrays(model, state.previous_final)
        optimizer.load_state_dict(state.resume["optimizer"])
        torch.set_rng_state(state.resume["torch_rng"])
        if device.type == "cuda" and state.resume.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state.resume["cuda_rng"], device)
    else:
        torch.manual_seed(derive_seed(spec.seed, "dropout"))
    rank, world = ddp_world() if ops.ddp else (0, 1)
    if ops.ddp and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    model.to(device)
    optimizer.load_state_dict(optimizer.state_dict())  # moves the momentum buffers to the parameters' device
    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    x_test, y_test = data.x_test.to(device), data.y_test.to(device)
    autocast = autocast_for(ops.precision, device, model)
    if device.type == "cuda" and has_conv(model):  # channels_last: the layout cuDNN's fast kernels want
        model.to(memory_format=torch.channels_last)
        x_train = x_train.contiguous(memory_format=torch.channels_last)
        x_test = x_test.contiguous(memory_format=torch.channels_last)
    step_model = torch.compile(model) if ops.compile else model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        from audit.distributed import sync_batchnorm

        step_model = sync_batchnorm(step_model, device)
        step_model = DistributedDataParallel(step_model, device_ids=[device.index] if device.type == "cuda" else None)
    n = len(x_train)
    augmenter = make_augmenter(spec.augment, spec.preprocess, data.augment_source().to(device), data.input_shape[-1],
                               state.augment_rng)

    def evaluate_both() -> tuple[tuple[float, float], tuple[float, float]]:
        *train, train_top5 = evaluate_full(model, x_train, y_train, autocast=autocast, rank=rank, world=world)
        *test, test_top5 = evaluate_full(model, x_test, y_test, autocast=autocast, rank=rank, world=world)
        state.top5 = (train_top5, test_top5)
        return tuple(train), tuple(test)

    if not state.history["epoch"]:
        state.add_row(0, 0, spec.lr, 0.0, *evaluate_both())
        state.keep_points(ops.keep, lambda: state_arrays(model))
    status = state.stop()
    model.train()
    while status is None:
        start = time.perf_counter()
        lr = state.lr()
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch_sum = run_epoch(step_model, optimizer, x_train, y_train, spec.batch_size, state.order, augmenter,
                              autocast, rank, world)
        state.elapsed += time.perf_counter() - start
        state.samples += n
        state.add_row(state.epoch + 1, state.step + math.ceil(n / spec.batch_size), lr, batch_sum.item(),
                      *evaluate_both())
        state.keep_points(ops.keep, lambda: state_arrays(model))
        status = state.stop()
        if on_epoch is not None:
            on_epoch(state.epoch, spec.epochs, state.history["train_acc"][-1])
        if status is not None or state.checkpoint_due(ops):
            state.save(status or "running", state_arrays(model), optimizer.state_dict(), device)
    return state.record
