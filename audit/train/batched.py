"""Batched grid training: runs of one architecture and data size train together as one batched model.

The runs' parameters are stacked (torch.func.stack_module_state). Plain MLPs train through fused batched
matrix products (audit/train/stacked_mlp.py), or on the CPU, from cpu_mlp's size on, run by run through
oneDNN's (audit/train/cpu_mlp.py), and are evaluated from a smaller size on through each run's oneDNN forward
passes (both recorded as `products`); other models through one vmapped functional_call and autograd. Each
run keeps its own inputs, labels, data order, seed, learning-rate schedule, momentum and
weight decay, and the SGD update is PyTorch's (d = g + λw; b = μb + d; w = w − ηb) on the stacked tensors.
A run that stops (fitted, loss target, max epochs, diverged) is written and leaves the group; the others go
on undisturbed. Batching is operational: run ids, run files and resume states are those of sequential
training, and a run can resume either way.

It applies to SGD runs without batch norm, dropout or augmentation (their per-run state does not vmap). The
trainer rule (batchable) also sends models with convolutions run by run: on the CPU, vmapped convolutions of a
group are slower than the same runs one after another. The rest train one at a time.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from audit.errors import UsageError
from audit.models.registry import build_model
from audit.spec.run import RunSpec
from audit.store.record import RunRecord
from audit.testhooks import pause_point
from audit.train import cpu_mlp, mlp_eval, stacked_mlp
from audit.train.device import Operational, autocast_for, resolve_device
from audit.train.evaluate import EVAL_BATCH, Scores, evaluate_chunks
from audit.train.mlp_eval import GPU_EVAL_EXAMPLES
from audit.train.state import RunState, load_arrays, make_model, open_run

MAX_GROUP = 64

GroupCallback = Callable[[int, int, float], None]


def groupable(spec: RunSpec) -> bool:
    """Whether the run can train inside a batched group at all: SGD without dropout, augmentation or batch norm
    (their per-run state does not vmap)."""
    if spec.optimizer != "sgd" or spec.dropout > 0 or spec.augment != "none":
        return False
    return "batch-norm" not in layer_kinds(spec.model)


def batchable(spec: RunSpec) -> bool:
    """The trainer rule: whether a run trains batched (else run by run). A run that can train in a group does,
    unless its model has a convolution: a vmapped convolution over a group's runs is slower than the runs one
    after another (docs/benchmarks.md, the conv row of bench/train.py). The rule reads the spec only (its
    optimizer, dropout, augmentation and the model's layers), never a timing or the device, so the same spec
    always takes the same path; the path taken is recorded in the run file (`trainer`)."""
    return groupable(spec) and "conv" not in layer_kinds(spec.model)


@functools.lru_cache(maxsize=256)
def layer_kinds(model_name: str) -> frozenset[str]:
    """The kinds of layer in the model that decide its trainer path: 'batch-norm', 'conv'. Built once per name
    on a small input (inception-v3 takes most of a second)."""
    try:
        model = build_model(model_name, (1, 8, 8), 10)
    except UsageError:  # a model for larger or RGB images only (inception-v3): batch norm and convolutions
        return frozenset({"batch-norm", "conv"})
    modules = list(model.modules())
    return frozenset({kind for kind, types in (("batch-norm", nn.modules.batchnorm._BatchNorm),
                                               ("conv", nn.modules.conv._ConvNd))
                      if any(isinstance(m, types) for m in modules)})


def group_key(spec: RunSpec) -> tuple:
    """Runs with the same key have the same architecture, data size and steps per epoch."""
    return (spec.model, spec.dataset, spec.train_size, spec.split_seed, spec.preprocess, spec.batch_size,
            spec.batchnorm)


def groups_of(specs: list[RunSpec]) -> list[list[RunSpec]]:
    """Runs that can train in a group (groupable) grouped by key (at most MAX_GROUP each), in first-appearance
    order; others alone. The caller decides which runs train batched (batchable, or the path a run recorded)."""
    keyed: dict[tuple, list[RunSpec]] = {}
    out: list[list[RunSpec]] = []
    for spec in specs:
        if groupable(spec):
            keyed.setdefault(group_key(spec), []).append(spec)
        else:
            out.append([spec])
    for members in keyed.values():
        out += [members[i:i + MAX_GROUP] for i in range(0, len(members), MAX_GROUP)]
    return out


@dataclass
class Member:
    state: RunState
    input_slot: int  # which of the group's distinct input tensors this run fits


def sgd_group_defaults() -> dict:
    """The keys and defaults of a param group in torch.optim.SGD's state_dict, read off its signature.
    Constructing a real SGD would do as well, but its first construction imports torch._dynamo (2 s)."""
    parameters = inspect.signature(torch.optim.SGD.__init__).parameters.items()
    return {name: p.default for name, p in parameters if p.default is not inspect.Parameter.empty}


def sgd_state(names: list[str], buffers: dict[str, torch.Tensor], spec: RunSpec) -> dict:
    """PyTorch's SGD state_dict for these momentum buffers, so that a run can resume batched or alone."""
    group = {**sgd_group_defaults(), "lr": spec.lr, "momentum": spec.momentum, "weight_decay": spec.weight_decay,
             "params": list(range(len(names)))}
    state = {i: {"momentum_buffer": buffers[name].detach().clone().cpu()} for i, name in enumerate(names)}
    return {"state": state, "param_groups": [group]}


def train_group(specs: list[RunSpec], paths: list, ops: Operational = Operational(),
                on_epoch: GroupCallback | None = None, locks: list | None = None) -> list[RunRecord]:
    """Train a group of groupable runs together; runs already finished are returned as read."""
    device = resolve_device(ops.device)
    finished: dict[str, RunRecord] = {}
    members: list[Member] = []
    slots: list[torch.Tensor] = []
    test_slots: list[torch.Tensor] = []
    for spec, path, lock in zip(specs, paths, locks or [None] * len(specs)):
        state = open_run(spec, path, ops, device, lock, trainer="batched")
        if isinstance(state, RunRecord):
            finished[spec.run_id] = state
            continue
        slot = _same_inputs(state.data.x_train, state.data.x_test, slots, test_slots)
        if slot is None:
            slot = len(slots)
            slots.append(state.data.x_train)
            test_slots.append(state.data.x_test)
        members.append(Member(state, slot))
    if members:
        _train(members, slots, test_slots, ops, device, on_epoch)
    return [finished.get(spec.run_id) or next(m.state.record for m in members if m.state.spec == spec)
            for spec in specs]


def _same_inputs(x: torch.Tensor, x_test: torch.Tensor, slots: list[torch.Tensor],
                 test_slots: list[torch.Tensor]) -> int | None:
    """The slot already holding these train and test inputs (runs on the label axis fit the same ones, and
    the group keeps one copy of each), or None."""
    return next((i for i, (a, b) in enumerate(zip(slots, test_slots)) if torch.equal(a, x) and torch.equal(b, x_test)),
                None)


@dataclass
class Group:
    """The stacked state of a group of runs on the device: parameters, buffers and momenta with the run axis
    first, the distinct input tensors (slots) and every run's labels."""

    members: list[Member]
    template: nn.Module
    params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    momentum: dict[str, torch.Tensor]
    x_slots: torch.Tensor
    x_test_slots: torch.Tensor
    slot_of: torch.Tensor
    y_train: torch.Tensor
    y_test: torch.Tensor
    autocast: contextlib.AbstractContextManager
    linear_names: list[str] | None  # plain MLPs in fp32 take the fused stacked path; others vmap and autograd
    batched_forward: Callable
    working: tuple | None = None  # (active runs, their parameters, momenta, labels): kept while they stay the same

    def stacked(self, tensors: dict[str, torch.Tensor]) -> stacked_mlp.Layers:
        return [(tensors[f"{name}.weight"], tensors[f"{name}.bias"]) for name in self.linear_names or []]

    @property
    def run_by_run(self) -> bool:
        """Whether the group's plain MLPs train run by run on oneDNN's products (cpu_mlp's rule)."""
        return self.linear_names is not None and cpu_mlp.applies(self.stacked(self.params), self.x_slots.device)

    @property
    def products(self) -> str:
        """Which products train and evaluate the runs (their bits depend on them), as run files record it."""
        evaluated = self.linear_names is not None and cpu_mlp.evaluates(self.stacked(self.params), self.x_slots.device)
        training, evaluation = ("onednn" if self.run_by_run else "torch"), ("onednn" if evaluated else "torch")
        return training if training == evaluation else f"{training}, evaluation {evaluation}"

    def weights(self, i: int) -> dict[str, np.ndarray]:
        return {**{k: v[i].detach().cpu().numpy().copy() for k, v in self.params.items()},
                **{k: v[i].detach().cpu().numpy().copy() for k, v in self.buffers.items()}}

    def save(self, i: int, status: str, device: torch.device) -> None:
        state = self.members[i].state
        optimizer = None
        if status == "running":
            optimizer = sgd_state(list(self.params), {k: self.momentum[k][i] for k in self.params}, state.spec)
        state.save(status, self.weights(i), optimizer, device)


def _stack(members: list[Member], slots: list[torch.Tensor], test_slots: list[torch.Tensor], ops: Operational,
           device: torch.device) -> Group:
    """The group's models built (or resumed) and stacked on the device, with their momenta and data."""
    first = members[0].state
    template = make_model(first.spec, first.data).to(device)
    models = []
    for member in members:
        model = make_model(member.state.spec, member.state.data)
        if member.state.resume is not None:
            load_arrays(model, member.state.previous_final)
        models.append(model.to(device))
    params, buffers = stack_module_state(models)
    params = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    momentum = {k: torch.zeros_like(v) for k, v in params.items()}
    for i, member in enumerate(members):
        if member.state.resume is not None:
            saved = member.state.resume["optimizer"]["state"]
            for j, name in enumerate(params):
                if j in saved and saved[j].get("momentum_buffer") is not None:
                    momentum[name][i] = saved[j]["momentum_buffer"].to(device)
    autocast = autocast_for(ops.precision, device, template)
    return Group(members, template, params, buffers, momentum,
                 x_slots=torch.stack([x.to(device) for x in slots]),
                 x_test_slots=torch.stack([x.to(device) for x in test_slots]),
                 slot_of=torch.tensor([m.input_slot for m in members], device=device),
                 y_train=torch.stack([m.state.data.y_train.to(device) for m in members]),
                 y_test=torch.stack([m.state.data.y_test.to(device) for m in members]),
                 autocast=autocast,
                 linear_names=stacked_mlp.linear_names(template) if isinstance(autocast, contextlib.nullcontext) else None,
                 batched_forward=vmap(lambda p, b, x: functional_call(template, (p, b), (x,))))


def _evaluate_all(group: Group, active: list[int], device: torch.device) -> list[tuple[Scores, Scores]]:
    """Every active run on its whole train and test sets, in chunks of examples: stacked MLPs batched; other
    models on the CPU in a loop over runs, whose activations stay in cache (measured 1.3-4× faster there than
    vmapping); on a GPU vmapped."""
    g = group
    if g.linear_names is not None:
        slots = {i: g.members[i].input_slot for i in active}
        layers = g.stacked(g.params)
        return mlp_eval.evaluate(layers, slots, (g.x_slots, g.x_test_slots), (g.y_train, g.y_test))
    if device.type == "cpu":
        out = []
        for i in active:
            one = ({k: v[i] for k, v in g.params.items()}, {k: v[i] for k, v in g.buffers.items()})
            out.append((evaluate_params(g.template, one, g.x_slots[g.slot_of[i]], g.y_train[i], g.autocast),
                        evaluate_params(g.template, one, g.x_test_slots[g.slot_of[i]], g.y_test[i], g.autocast)))
        return out
    index = torch.tensor(stacked_mlp.paired(active), device=device)
    now = ({k: v[index] for k, v in g.params.items()}, {k: v[index] for k, v in g.buffers.items()})
    slots_now = g.slot_of[index]

    def scores(x: torch.Tensor, y: torch.Tensor) -> list[Scores]:
        return evaluate_chunks(lambda x_part: g.batched_forward(*now, x_part),
                               lambda start, stop: x[slots_now, start:stop], y[index],
                               GPU_EVAL_EXAMPLES, g.autocast)

    return list(zip(scores(g.x_slots, g.y_train), scores(g.x_test_slots, g.y_test)))[:len(active)]


def _epoch(group: Group, active: list[int], device: torch.device) -> list[float]:
    """One epoch of every active run, each in its own order and with its own schedule; returns each run's sum
    of minibatch losses."""
    g, members = group, group.members
    if g.run_by_run:
        return _epoch_run_by_run(group, active)
    index = torch.tensor(stacked_mlp.paired(active), device=device)
    hyper_lists = ([members[i].state.lr() for i in active], [members[i].state.spec.momentum for i in active],
                   [members[i].state.spec.weight_decay for i in active])
    lr, mu, decay = (torch.tensor(stacked_mlp.paired(values), device=device) for values in hyper_lists)
    # floats where every run shares the value: the fused fast path of the stacked MLP step
    hyper = [values[0] if min(values) == max(values) else tensor
             for values, tensor in zip(hyper_lists, (lr, mu, decay))]
    n, batch_size = g.x_slots.shape[1], members[0].state.spec.batch_size
    perms = torch.stack([torch.randperm(n, generator=members[i].state.order) for i in active]).to(device)
    perms = perms[stacked_mlp.paired(list(range(len(active))))]  # a lone run's copy: the same order, drawn once
    if g.working is None or g.working[0] != active:  # gathered once per set of active runs, not every epoch
        g.working = (list(active), {k: v[index].detach().requires_grad_(g.linear_names is None)
                                    for k, v in g.params.items()},
                     {k: v[index] for k, v in g.momentum.items()}, g.y_train[index])
    _, sub, sub_momentum, labels_now = g.working
    sub_buffers = {k: v[index] for k, v in g.buffers.items()}
    slots_now = g.slot_of[index]
    flat_x = g.x_slots.flatten(0, 1)  # minibatches read by index_select: 3× faster than indexing two axes
    layers, layer_momenta = g.stacked(sub), g.stacked(sub_momentum)
    # on the CPU, parts of the group whose activations stay in cache (bitwise the whole group at once)
    part = stacked_mlp.runs_per_part(layers, batch_size) if device.type == "cpu" and layers else len(index)
    batch_sum = torch.zeros(len(index), device=device)
    half = (n // batch_size // 2) * batch_size
    for first_row in range(0, n, batch_size):
        if first_row == half:
            pause_point("mid-epoch")
        rows = perms[:, first_row:first_row + batch_size]
        inputs = flat_x.index_select(0, (slots_now[:, None] * n + rows).flatten())
        inputs, labels = inputs.view(*rows.shape, *flat_x.shape[1:]), labels_now.gather(1, rows)
        if g.linear_names is not None:
            losses = stacked_mlp.sgd_step_in_parts(layers, layer_momenta, inputs, labels, *hyper, part)
        else:
            losses = _vmapped_sgd_step(g.batched_forward, sub, sub_buffers, sub_momentum, inputs, labels,
                                       lr, mu, decay, g.autocast)
        batch_sum += losses.detach()
    with torch.no_grad():  # the stacked state that evaluations and run files read
        for name in g.params:
            g.params[name][index] = sub[name].detach()
            g.momentum[name][index] = sub_momentum[name]
    return batch_sum.tolist()


@torch.no_grad()
def _epoch_run_by_run(group: Group, active: list[int]) -> list[float]:
    """_epoch of plain MLPs under cpu_mlp's rule: run-major, each run on its own oneDNN products, its stacked
    weights and momenta trained in place (views); the same orders drawn as the stacked path draws them."""
    g, members, sums = group, group.members, []
    for position, i in enumerate(active):
        if position == len(active) // 2:
            pause_point("mid-epoch")
        state = members[i].state
        order = torch.randperm(g.y_train.shape[1], generator=state.order).to(g.y_train.device)
        sums.append(cpu_mlp.epoch([(w[i], b[i]) for w, b in g.stacked(g.params)],
                                  [(w[i], b[i]) for w, b in g.stacked(g.momentum)], g.x_slots[members[i].input_slot],
                                  g.y_train[i], order, state.spec.batch_size, state.lr(), state.spec.momentum,
                                  state.spec.weight_decay))
    return sums


def _train(members: list[Member], slots: list[torch.Tensor], test_slots: list[torch.Tensor], ops: Operational,
           device: torch.device, on_epoch: GroupCallback | None) -> None:
    group = _stack(members, slots, test_slots, ops, device)
    n, batch_size = group.x_slots.shape[1], members[0].state.spec.batch_size
    active = list(range(len(members)))
    for member in members:
        member.state.record.attrs["products"] = group.products
    for i, (train, test) in zip(active, _evaluate_all(group, active, device)):
        state = members[i].state
        state.top5 = (train[2], test[2])
        if not state.history["epoch"]:
            state.add_row(0, 0, state.spec.lr, 0.0, train[:2], test[:2])
            state.keep_points(ops.keep, lambda i=i: group.weights(i))
    while active:
        start = time.perf_counter()
        lrs = [members[i].state.lr() for i in active]
        sums = _epoch(group, active, device)
        seconds = (time.perf_counter() - start) / len(active)  # each run's share of the group's time
        for position, (i, (train, test)) in enumerate(zip(active, _evaluate_all(group, active, device))):
            state = members[i].state
            state.top5 = (train[2], test[2])
            state.elapsed += seconds
            state.samples += n
            state.add_row(state.epoch + 1, state.step + math.ceil(n / batch_size), lrs[position],
                          sums[position], train[:2], test[:2])
            state.keep_points(ops.keep, lambda i=i: group.weights(i))
        still = []
        for i in active:
            status = members[i].state.stop()
            if status is not None or members[i].state.checkpoint_due(ops):
                group.save(i, status or "running", device)
            if status is None:
                still.append(i)
        active = still
        if on_epoch is not None:
            accuracies = [members[i].state.history["train_acc"][-1] for i in active] or [1.0]
            on_epoch(max(m.state.epoch for m in members), max(m.state.spec.epochs for m in members),
                     min(accuracies))


def _vmapped_sgd_step(batched_forward: Callable, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                      momentum: dict[str, torch.Tensor], inputs: torch.Tensor, labels: torch.Tensor, lr: torch.Tensor,
                      mu: torch.Tensor, decay: torch.Tensor, autocast: object) -> torch.Tensor:
    """One SGD step of every run through vmapped functional_call and autograd; returns the minibatch losses."""
    with autocast:
        logits = batched_forward(params, buffers, inputs).float()
    losses = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view(len(labels), -1).mean(1)
    grads = torch.autograd.grad(losses.sum(), list(params.values()))
    with torch.no_grad():
        for (name, weight), grad in zip(params.items(), grads):
            shape = (-1,) + (1,) * (weight.dim() - 1)
            step = grad + decay.view(shape) * weight
            momentum[name].mul_(mu.view(shape)).add_(step)
            weight.sub_(lr.view(shape) * momentum[name])
    return losses.detach()


def evaluate_params(model: nn.Module, state: tuple[dict, dict], x: torch.Tensor, y: torch.Tensor,
                    autocast: object) -> Scores:
    """One run's parameters and buffers on (x, y), through the one evaluation: what a run trained alone gets."""
    return evaluate_chunks(lambda inputs: functional_call(model, state, (inputs,)), lambda start, stop: x[start:stop],
                           y, EVAL_BATCH, autocast)[0]
