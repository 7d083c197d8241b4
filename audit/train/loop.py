"""Training one run: SGD (or Adam) over device-resident tensors, stopping rules, checkpoints.

Batches are index slices of tensors already on the device. The learning rate of epoch e (counting
from 0) is lr · lr_decay^e. Every `checkpoint_every` epochs the run file is replaced with the current
weights, history, optimizer and RNG states, so a killed run resumes where it was.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from audit.data.augment import Augmenter, make_augmenter
from audit.models.registry import build_model
from audit.spec.run import RunSpec, derive_seed
from audit.store.record import RunRecord
from audit.testhooks import pause_point
from audit.train.ddp import sync_batchnorm
from audit.train.device import Operational, autocast_for, ddp_world, has_conv, resolve_device
from audit.train.evaluate import eval_batch_for, evaluate, evaluate_full, learning_rate, stop_reason
from audit.train.state import load_arrays, make_optimizer, open_run, state_arrays

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
    accuracy, epoch, stop = 0.0, 0, None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "dropout"))
        while stop is None:  # the schedule and stopping rule of every run
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(spec, epoch)
            batch_sum = run_epoch(model, optimizer, x, y, spec.batch_size, order).item()
            epoch += 1
            loss, accuracy = evaluate(model, x, y)
            stop = stop_reason(spec, epoch, loss, accuracy, batch_sum)
    return accuracy


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


        step_model = sync_batchnorm(step_model, device)
        step_model = DistributedDataParallel(step_model, device_ids=[device.index] if device.type == "cuda" else None)
    n = len(x_train)
    augmenter = make_augmenter(spec.augment, spec.preprocess, data.augment_source().to(device), data.input_shape[-1],
                               state.augment_rng)

    eval_batch = eval_batch_for(model, x_train[:1])

    def evaluate_both() -> tuple[tuple[float, float], tuple[float, float]]:
        *train, train_top5 = evaluate_full(model, x_train, y_train, eval_batch, autocast, rank, world)
        *test, test_top5 = evaluate_full(model, x_test, y_test, eval_batch, autocast, rank, world)
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
