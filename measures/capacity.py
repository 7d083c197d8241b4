"""The empirical Rademacher proxy of Zhang et al. §2.2: how well the same model and procedure fit random ±1 labels."""

from __future__ import annotations

import hashlib
import json

import torch

from audit.spec.run import derive_seed
from measures._registry import Context, Undefined, measure

PROCEDURE_FIELDS = ("model", "optimizer", "lr", "lr_decay", "momentum", "weight_decay", "batch_size", "epochs",
                    "fit_target", "loss_target", "augment", "dropout", "batchnorm")


# 2: refits of a stackable procedure train together (the stacked-MLP step), not one by one;
# 3: MLP specs with batchnorm=true (the default; an MLP has no batch norm) stack too: version 2 refitted them alone
VERSION = 3


def cache_key(ctx: Context, draws: int, seed: int) -> str:
    """One cached value per input set and procedure: it does not depend on the run's labels."""
    digest = hashlib.sha256(ctx.x.detach().cpu().contiguous().numpy().tobytes())
    procedure = {name: getattr(ctx.spec, name) for name in PROCEDURE_FIELDS}
    digest.update(json.dumps([procedure, draws, seed, VERSION], sort_keys=True).encode())
    return digest.hexdigest()[:16]


def rademacher_group(ctxs: list[Context], draws: int, seed: int) -> list[float | Undefined]:
    """Every run's proxy; the refits of all the group's input sets that share a procedure train together, and
    each input set is refitted once (its value is shared through the store)."""
    out: list[float | Undefined | None] = [None] * len(ctxs)
    pending: dict[str, list[int]] = {}
    for i, ctx in enumerate(ctxs):
        if ctx.spec is None or ctx.refit is None:
            out[i] = Undefined("needs the run's training procedure: score it through a store")
        elif ctx.x is None:
            out[i] = Undefined("needs the train data; pass train=(x, y)")
        else:
            key = cache_key(ctx, draws, seed)
            cached = ctx.shared.get_shared("rademacher", key) if ctx.shared is not None else None
            if cached is not None:
                out[i] = float(cached["value"])
            else:
                pending.setdefault(key, []).append(i)
    by_procedure: dict[str, list[str]] = {}
    for key, members in pending.items():
        spec = ctxs[members[0]].spec
        by_procedure.setdefault(json.dumps([getattr(spec, f) for f in PROCEDURE_FIELDS]), []).append(key)
    for keys in by_procedure.values():
        first = ctxs[pending[keys[0]][0]]
        jobs = [job for key in keys for job in draw_jobs(ctxs[pending[key][0]], draws, seed)]
        refit = first.refit_many or (lambda jobs: [first.refit(*job) for job in jobs])
        accuracies = refit(jobs)
        for number, key in enumerate(keys):
            values = [1.0 - 2.0 * (1.0 - a) for a in accuracies[number * draws:(number + 1) * draws]]
            value = sum(values) / len(values)
            ctx = ctxs[pending[key][0]]
            if ctx.shared is not None:
                ctx.shared.put_shared("rademacher", key, {"value": value, "draws": values})
            for i in pending[key]:
                out[i] = value
    return out


def draw_jobs(ctx: Context, draws: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor, int, int]]:
    """The refits of one input set: uniform random ±1 labels (as classes 0 and 1), one seed per draw."""
    jobs = []
    for draw in range(draws):
        draw_seed = derive_seed(seed, f"rademacher-{draw}")
        signs = torch.randint(0, 2, (len(ctx.x),), generator=torch.Generator().manual_seed(draw_seed))
        jobs.append((ctx.x, signs.to(ctx.x.device), 2, draw_seed))
    return jobs


@measure("rademacher", family="capacity", needs=("train", "procedure"), direction=1, cost="heavy", default=False,
         settings={"draws": 3, "seed": 0}, version=VERSION, group=rademacher_group,
         reference="Zhang et al. 2017 §2.2; empirical Rademacher complexity with the training procedure as sup",
         formula="mean over `draws` of 1 − 2·(train error after training the same architecture, with a 2-way "
                 "output, by the run's own procedure and budget on uniform random ±1 labels of the fitted inputs)")
def rademacher(ctx: Context, draws: int, seed: int) -> float:
    value = rademacher_group([ctx], draws, seed)[0]
    if isinstance(value, Undefined):
        raise value
    return value
