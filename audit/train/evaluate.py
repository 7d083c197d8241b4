"""The one evaluation, the one learning-rate schedule and the one stopping rule, shared by every trainer.

After every epoch the whole fitted train set is evaluated in eval mode; a run stops when fitted (train
accuracy ≥ fit_target), at the loss target, or at max epochs, and is marked diverged on a non-finite loss.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from audit.spec.run import RunSpec

EVAL_BATCH = 8192
EVAL_ACTIVATION_BYTES = 1 << 25  # the largest layer output of one evaluation chunk (32 MiB: near a CPU's L3)


def top5_hits(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """How many targets are among the 5 largest logits (over the last dimension), per leading index: a target
    is a hit when fewer than 5 logits exceed its own (ties count for the target). A comparison, not a topk:
    several times faster on small class counts."""
    above = (logits > logits.gather(-1, target.unsqueeze(-1))).sum(-1)
    return (above < 5).sum(-1)


Scores = tuple[float, float, float | None]  # mean loss, accuracy, top-5 accuracy (None under 5 classes)


@torch.no_grad()
def evaluate_chunks(forward: Callable[[torch.Tensor], torch.Tensor], inputs: Callable[[int, int], torch.Tensor],
                    y: torch.Tensor, chunk: int, autocast: contextlib.AbstractContextManager | None = None,
                    rank: int = 0, world: int = 1) -> list[Scores]:
    """The one evaluation: mean cross-entropy, accuracy and top-5 accuracy of one run or a group of runs.
    y holds the labels, (examples,) for one run or (runs, examples) for a group; inputs(start, stop) gives those
    examples and forward maps them to logits (..., examples, classes). Data parallel (world > 1), each rank
    evaluates every world-th chunk and the sums are all-reduced, so that every rank gets the same numbers."""
    n = y.shape[-1]
    sums = torch.zeros((4, *y.shape[:-1]), device=y.device, dtype=torch.float64)  # loss, correct, top 5, ≥ 5 classes
    for number, start in enumerate(range(0, n, chunk)):
        if number % world != rank:
            continue
        with autocast or contextlib.nullcontext():
            logits = forward(inputs(start, start + chunk)).float()
        target = y[..., start:start + chunk]
        losses = F.cross_entropy(logits.flatten(0, -2), target.flatten(), reduction="none").view(target.shape)
        sums[0] += losses.sum(-1).double()
        sums[1] += (logits.argmax(-1) == target).sum(-1)
        if logits.shape[-1] >= 5:
            sums[2] += top5_hits(logits, target)
            sums[3] = 1
    if world > 1:
        dist.all_reduce(sums)
    rows = sums.reshape(4, -1).T.tolist()
    return [(loss / n, correct / n, top5 / n if has_top5 else None) for loss, correct, top5, has_top5 in rows]


SCORE_BYTES = 1 << 26  # logits held for one pass of evaluate_sets' per-example scores (64 MiB)
Piece = tuple[int, int, int, torch.Tensor]  # set number, first and last example (exclusive), the chunk's logits


@torch.no_grad()
def evaluate_sets(forward: Callable[[torch.Tensor], torch.Tensor],
                  sets: list[tuple[Callable[[int, int], torch.Tensor], torch.Tensor]], chunk: int,
                  autocast: contextlib.AbstractContextManager | None = None) -> list[list[Scores]]:
    """evaluate_chunks of several sets of the same runs (their train and test sets), set by set, bitwise, in
    fewer passes: each set is cut into the same chunks, each chunk goes through forward alone, and each chunk's
    float32 loss sum is added in float64 in chunk order, as there; but the per-example losses, hits and top-5
    hits are computed for many chunks at once (up to SCORE_BYTES of their logits), not chunk by chunk.
    sets: (inputs(start, stop), y) per set, y shaped as evaluate_chunks takes it, every y with the same lead."""
    lead = sets[0][1].shape[:-1]
    totals = [torch.zeros((4, *lead), device=y.device, dtype=torch.float64) for _, y in sets]
    pending: list[Piece] = []
    for number, (inputs, y) in enumerate(sets):
        for start in range(0, y.shape[-1], chunk):
            with autocast or contextlib.nullcontext():
                logits = forward(inputs(start, start + chunk)).float()
            pending.append((number, start, min(start + chunk, y.shape[-1]), logits))
            if sum(piece[3].numel() for piece in pending) * 4 >= SCORE_BYTES:
                _score(pending, sets, totals)
                pending = []
    if pending:
        _score(pending, sets, totals)
    out = []
    for (_, y), sums in zip(sets, totals):
        n = y.shape[-1]
        out.append([(loss / n, correct / n, top5 / n if has_top5 else None)
                    for loss, correct, top5, has_top5 in sums.reshape(4, -1).T.tolist()])
    return out


def _score(pending: list[Piece], sets: list[tuple[Callable, torch.Tensor]], totals: list[torch.Tensor]) -> None:
    """Add the pieces' scores to their sets' totals: evaluate_chunks' sums, in its order."""
    logits = torch.cat([piece[3] for piece in pending], -2) if len(pending) > 1 else pending[0][3]
    target = torch.cat([sets[number][1][..., start:stop] for number, start, stop, _ in pending], -1)
    losses = F.cross_entropy(logits.flatten(0, -2), target.flatten(), reduction="none").view(target.shape)
    hits = logits.argmax(-1) == target
    top5 = (logits > logits.gather(-1, target.unsqueeze(-1))).sum(-1) < 5 if logits.shape[-1] >= 5 else None
    offset = 0
    for number in dict.fromkeys(piece[0] for piece in pending):  # a set's pieces are consecutive
        widths = [stop - start for n, start, stop, _ in pending if n == number]
        bounds = [offset + sum(widths[:i]) for i in range(len(widths) + 1)]
        chunk_sums = torch.stack([losses[..., a:b].sum(-1) for a, b in zip(bounds, bounds[1:])], -1).double()
        sums, part = totals[number], slice(bounds[0], bounds[-1])
        sums[0] = torch.cat([sums[0].unsqueeze(-1), chunk_sums], -1).cumsum(-1)[..., -1]  # in order, as +=
        sums[1] += hits[..., part].sum(-1)
        if top5 is not None:
            sums[2] += top5[..., part].sum(-1)
            sums[3] = 1
        offset = bounds[-1]


def evaluate_full(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = EVAL_BATCH,
                  autocast: contextlib.AbstractContextManager | None = None, rank: int = 0,
                  world: int = 1) -> Scores:
    """One model in eval mode on (x, y) in large batches (lazily read images in their own, smaller ones)."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return evaluate_chunks(model, lambda start, stop: x[start:stop], y, min(batch, getattr(x, "eval_batch", batch)),
                                   autocast, rank, world)[0]
    finally:
        model.train(was_training)


def eval_batch_for(model: nn.Module, example: torch.Tensor) -> int:
    """Examples per evaluation chunk for this model: EVAL_BATCH, or the largest power of two (at least 64)
    whose largest layer output stays within EVAL_ACTIVATION_BYTES. A rule on the model and input shape, never
    a timing, so a run's loss sums round the same way on every machine; MLPs up to 1024 wide keep EVAL_BATCH,
    and a small CNN's chunks stay in cache (alexnet-small on Fashion-MNIST: 128 examples, 1.65× faster than
    8192 on 2 CPU cores). example: one input, batch axis first."""
    largest = [0]

    def record(module: nn.Module, inputs: tuple, output: object) -> None:
        if isinstance(output, torch.Tensor):
            largest[0] = max(largest[0], output[:1].numel() * output.element_size())

    hooks = [m.register_forward_hook(record) for m in model.modules() if not list(m.children())]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            model(example[:1])
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    fits = EVAL_ACTIVATION_BYTES // max(largest[0], 1)
    return EVAL_BATCH if fits >= EVAL_BATCH else max(64, 1 << max(fits, 1).bit_length() - 1)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = EVAL_BATCH,
             autocast: contextlib.AbstractContextManager | None = None) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of the model in eval mode on (x, y)."""
    loss, accuracy, _ = evaluate_full(model, x, y, batch, autocast)
    return loss, accuracy


def learning_rate(spec: RunSpec, epoch: int) -> float:
    """The learning rate of epoch `epoch` (counting from 0): lr · lr_decay^epoch."""
    return spec.lr * spec.lr_decay ** epoch


def stop_reason(spec: RunSpec, epoch: int, train_loss: float, train_acc: float, batch_loss_sum: float) -> str | None:
    """The one stopping rule, after an epoch's evaluation: 'diverged' on a non-finite loss, 'complete' once fitted
    (train accuracy ≥ fit_target), at the loss target or at the epoch budget, else None (train on)."""
    if not math.isfinite(train_loss) or not math.isfinite(batch_loss_sum):
        return "diverged"
    if train_acc >= spec.fit_target or epoch >= spec.epochs:
        return "complete"
    if spec.loss_target is not None and train_loss <= spec.loss_target:
        return "complete"
    return None


def outcome(spec: RunSpec, history: dict[str, list[float]]) -> tuple[str | None, dict[str, float | int | None]]:
    """The stop decision after the latest evaluation of a run's history, and its fit summary."""
    fit_rows = [i for i, a in enumerate(history["train_acc"]) if a >= spec.fit_target]
    first = fit_rows[0] if fit_rows else None
    summary = {
        "steps_to_fit": int(history["step"][first]) if first is not None else None,
        "epochs_to_fit": int(history["epoch"][first]) if first is not None else None,
    }
    stop = stop_reason(spec, int(history["epoch"][-1]), history["train_loss"][-1], history["train_acc"][-1],
                       history["batch_loss_sum"][-1])
    return stop, summary
