"""Refits for procedure measures (the Rademacher proxy): fresh models of a run's architecture trained by its
procedure and budget on other labels, many at once.

Plain MLPs trained by SGD are stacked and trained together through the fused stacked-MLP step, each refit
with its own inputs, labels, init, data order and stopping epoch; a lone refit is computed as a pair of copies,
so that a refit's accuracy never depends on which others trained beside it. Other procedures (batch norm,
dropout, augmentation, Adam) refit one at a time by the sequential loop.
"""

from __future__ import annotations

import torch

from audit.models.registry import build_model
from audit.spec.run import RunSpec, derive_seed
from audit.train import stacked_mlp
from audit.train.evaluate import evaluate_chunks, learning_rate, stop_reason
from audit.train.loop import fit_labels

Job = tuple[torch.Tensor, torch.Tensor, int, int]  # inputs, labels, classes, seed
REFIT_EVAL_EXAMPLES = 1024  # examples per evaluation chunk (activations near the cache)


def stackable(spec: RunSpec, model: torch.nn.Module) -> bool:
    """SGD without augmentation on a plain MLP (the model as built: `batchnorm` adds no layer to an MLP, and
    dropout adds Dropout layers, which linear_names refuses)."""
    return spec.optimizer == "sgd" and spec.augment == "none" and stacked_mlp.linear_names(model) is not None


def fit_labels_group(spec: RunSpec, jobs: list[Job]) -> list[float]:
    """The final train accuracy (eval mode) of each job: a fresh model of the spec's architecture (init seeded
    by the job's seed) trained by the spec's procedure and budget on the job's (x, y)."""
    models = [build_model(spec.model, tuple(x.shape[1:]), classes, dropout=spec.dropout, batchnorm=spec.batchnorm,
                          seed=derive_seed(seed, "init")).to(x.device) for x, _, classes, seed in jobs]
    same_shape = len({(tuple(x.shape), classes) for x, _, classes, _ in jobs}) == 1
    if not jobs or not same_shape or not stackable(spec, models[0]):
        return [fit_labels(spec, x, y, classes, seed) for x, y, classes, seed in jobs]
    return _stacked(spec, jobs, models)


def _stacked(spec: RunSpec, jobs: list[Job], models: list[torch.nn.Module]) -> list[float]:
    names = stacked_mlp.linear_names(models[0])
    pairs = jobs * 2 if len(jobs) == 1 else jobs  # a lone refit as a pair: the batched products' code path
    models = models * 2 if len(jobs) == 1 else models
    layers = [(torch.stack([dict(m.named_parameters())[f"{name}.weight"].detach() for m in models]).clone(),
               torch.stack([dict(m.named_parameters())[f"{name}.bias"].detach() for m in models]).clone())
              for name in names]
    momenta = [(torch.zeros_like(w), torch.zeros_like(b)) for w, b in layers]
    x = torch.stack([job[0] for job in pairs])
    y = torch.stack([job[1] for job in pairs])
    orders = [torch.Generator().manual_seed(derive_seed(job[3], "order")) for job in pairs]
    accuracy = [0.0] * len(pairs)
    active, epoch, n = list(range(len(pairs))), 0, x.shape[1]
    while active:
        index = active if len(active) > 1 else active * 2
        sub = [(w[index], b[index]) for w, b in layers]
        sub_momenta = [(w[index], b[index]) for w, b in momenta]
        perms = torch.stack([torch.randperm(n, generator=orders[i]) for i in active]).to(x.device)
        perms = perms[[0, 0]] if len(active) == 1 else perms
        rows = torch.arange(len(index), device=x.device)[:, None]
        x_now, y_now = x[index], y[index]
        batch_sum = torch.zeros(len(index), device=x.device)
        lr = learning_rate(spec, epoch)
        part = stacked_mlp.runs_per_part(sub, spec.batch_size) if x.device.type == "cpu" else len(index)
        for first in range(0, n, spec.batch_size):
            chosen = perms[:, first:first + spec.batch_size]
            batch_sum += stacked_mlp.sgd_step_in_parts(sub, sub_momenta, x_now[rows, chosen], y_now[rows, chosen],
                                                       lr, spec.momentum, spec.weight_decay, part)
        epoch += 1
        for (w, b), (sw, sb), (mw, mb), (smw, smb) in zip(layers, sub, momenta, sub_momenta):
            w[index], b[index], mw[index], mb[index] = sw, sb, smw, smb
        scores = evaluate_chunks(lambda part: stacked_mlp.forward(sub, part),
                                 lambda start, stop: x_now[:, start:stop], y_now, REFIT_EVAL_EXAMPLES)
        still = []
        for position, i in enumerate(active):
            loss, accuracy[i], _ = scores[position]
            if stop_reason(spec, epoch, loss, accuracy[i], float(batch_sum[position])) is None:
                still.append(i)
        active = still
    return accuracy[:len(jobs)]
