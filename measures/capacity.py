"""The empirical Rademacher proxy of Zhang et al. §2.2: how well the same model and procedure fit random ±1 labels."""

from __future__ import annotations

import hashlib
import json

import torch

from audit.spec.run import derive_seed
from measures._registry import Context, Undefined, measure

PROCEDURE_FIELDS = ("model", "optimizer", "lr", "lr_decay", "momentum", "weight_decay", "batch_size", "epochs",
                    "fit_target", "loss_target", "augment", "dropout", "batchnorm")


def cache_key(ctx: Context, draws: int, seed: int) -> str:
    """One cached value per input set and procedure: it does not depend on the run's labels."""
    digest = hashlib.sha256(ctx.x.detach().cpu().contiguous().numpy().tobytes())
    procedure = {name: getattr(ctx.spec, name) for name in PROCEDURE_FIELDS}
    digest.update(json.dumps([procedure, draws, seed], sort_keys=True).encode())
    return digest.hexdigest()[:16]


@measure("rademacher", family="capacity", needs=("train", "procedure"), direction=1, cost="heavy", default=False,
         settings={"draws": 3, "seed": 0},
         reference="Zhang et al. 2017 §2.2; empirical Rademacher complexity with the training procedure as sup",
         formula="mean over `draws` of 1 − 2·(train error after training the same architecture, with a 2-way "
                 "output, by the run's own procedure and budget on uniform random ±1 labels of the fitted inputs)")
def rademacher(ctx: Context, draws: int, seed: int) -> float:
    if ctx.spec is None or ctx.refit is None:
        raise Undefined("needs the run's training procedure: score it through a store")
    x, _ = ctx.require_train()
    key = cache_key(ctx, draws, seed)
    cached = ctx.shared.get_shared("rademacher", key) if ctx.shared is not None else None
    if cached is not None:
        return float(cached["value"])
    values = []
    for draw in range(draws):
        draw_seed = derive_seed(seed, f"rademacher-{draw}")
        signs = torch.randint(0, 2, (len(x),), generator=torch.Generator().manual_seed(draw_seed)).to(x.device)
        accuracy = ctx.refit(x, signs, 2, draw_seed)
        values.append(1.0 - 2.0 * (1.0 - accuracy))
    value = sum(values) / len(values)
    if ctx.shared is not None:
        ctx.shared.put_shared("rademacher", key, {"value": value, "draws": values})
    return value
