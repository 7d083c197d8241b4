"""A group's plain MLPs on their train and test sets: the per-epoch evaluation of the batched trainer.

Every run's scores are its own (the same whatever its group): stacked products over batches of at least two
runs (audit/train/stacked_mlp.py), or each run's own oneDNN products under cpu_mlp's evaluation rule
(`evaluates`: from EVAL_PER_RUN_MACS multiply-adds per example, below the size from which training goes run by run).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from audit.train import cpu_mlp, stacked_mlp
from audit.train.evaluate import Scores, evaluate_sets

GPU_EVAL_EXAMPLES = 256  # examples per run and evaluation chunk on a GPU, 16,384 for a group of 64 (fixed: a
# run's loss sums must not round with the size of its group)
CPU_EVAL_EXAMPLES = 256  # examples per stacked-MLP evaluation chunk on the CPU (fixed: it sets the loss sums' rounding)
RUN_EVAL_EXAMPLES = 1024  # the same for each run's own oneDNN forward passes (fixed; the quick grid's evaluation
# 14% faster than in chunks of 256, the Fashion-MNIST grid's the same)
EVAL_PART_BYTES = 1 << 21  # activations of one part of runs evaluated together on the CPU (speed only)


@torch.no_grad()
def evaluate(layers: stacked_mlp.Layers, slot_of: dict[int, int], x_sets: tuple[torch.Tensor, ...],
             y_sets: tuple[torch.Tensor, ...]) -> list[tuple[Scores, ...]]:
    """Stacked MLPs on their train and test sets (x_sets: the input slots of each set, y_sets: the group's labels
    for each, run axis first); layers hold the whole group and slot_of maps each run to score to its input slot.
    Runs that share inputs read one chunk through a broadcast view; the others' chunks are gathered. Every batch
    holds at least two runs, so each run's arithmetic is the same whatever its group (a broadcast view and a
    gathered copy give bitwise-equal products). Each batch's weights are gathered once for both sets. Under
    cpu_mlp's evaluation rule each run's forward pass is its own oneDNN products instead."""
    device = y_sets[0].device
    run_by_run = cpu_mlp.evaluates(layers, device)
    chunk = RUN_EVAL_EXAMPLES if run_by_run else CPU_EVAL_EXAMPLES if device.type == "cpu" else GPU_EVAL_EXAMPLES
    by_slot: dict[int, list[int]] = {}
    for run, slot in slot_of.items():
        by_slot.setdefault(slot, []).append(run)

    def broadcast(slot: int) -> Callable[[int, int], list[Callable[[int, int], torch.Tensor]]]:
        return lambda a, b: [lambda start, stop, x=x: x[slot, start:stop].expand(b - a, *x[slot, start:stop].shape)
                             for x in x_sets]

    def gathered(slots: torch.Tensor) -> Callable[[int, int], list[Callable[[int, int], torch.Tensor]]]:
        return lambda a, b: [lambda start, stop, x=x: x[slots[a:b], start:stop] for x in x_sets]

    batches = [(runs, broadcast(slot)) for slot, runs in by_slot.items() if len(runs) > 1]
    alone = stacked_mlp.paired([runs[0] for runs in by_slot.values() if len(runs) == 1])
    if alone:
        batches.append((alone, gathered(torch.tensor([slot_of[run] for run in alone], device=device))))
    scores: dict[int, tuple[Scores, ...]] = {}
    stacked_on_cpu = device.type == "cpu" and not run_by_run
    part = stacked_mlp.runs_per_part(layers, chunk, EVAL_PART_BYTES) if stacked_on_cpu else len(slot_of)
    forward = cpu_mlp.forward if run_by_run else stacked_mlp.forward
    for runs, readers in batches:
        for a, b in stacked_mlp.parts(len(runs), part):  # parts whose stacked activations stay in cache (CPU)
            index = torch.tensor(runs[a:b], device=device)
            group = [(weight[index], bias[index]) for weight, bias in layers]
            per_set = evaluate_sets(lambda x_part: forward(group, x_part),
                                    [(read, y[index]) for read, y in zip(readers(a, b), y_sets)], chunk)
            scores.update(zip(runs[a:b], zip(*per_set)))
    return [scores[run] for run in slot_of]
