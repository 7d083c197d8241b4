"""The empirical Rademacher proxy of Zhang et al. §2.2: how well the same model and procedure fit random ±1 labels."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from measures._registry import Context, Undefined, measure

PROCEDURE_FIELDS = ("model", "optimizer", "lr", "lr_decay", "momentum", "weight_decay", "batch_size", "epochs",
                    "fit_target", "loss_target", "augment", "dropout", "batchnorm")


def cache_path(ctx: Context, draws: int, seed: int) -> Path | None:
    """One cached value per input set and procedure: it does not depend on the run's labels."""
    if ctx.record is None or ctx.record.path is None:
        return None
    digest = hashlib.sha256(ctx.x.detach().cpu().contiguous().numpy().tobytes())
    procedure = {name: getattr(ctx.spec, name) for name in PROCEDURE_FIELDS}
    digest.update(json.dumps([procedure, draws, seed], sort_keys=True).encode())
    return ctx.record.path.parent.parent / "cache" / "rademacher" / f"{digest.hexdigest()[:16]}.json"


@measure("rademacher", family="capacity", needs=("train", "procedure"), direction=1, cost="heavy", default=False,
         settings={"draws": 3, "seed": 0},
         reference="Zhang et al. 2017 §2.2; empirical Rademacher complexity with the training procedure as sup",
         formula="mean over `draws` of 1 − 2·(train error after training the same architecture, with a 2-way "
                 "output, by the run's own procedure and budget on uniform random ±1 labels of the fitted inputs)")
def rademacher(ctx: Context, draws: int, seed: int) -> float:
    from audit.spec.run import derive_seed
    from audit.store.files import atomic_replace
    from audit.train.loop import fit_labels

    if ctx.spec is None:
        raise Undefined("needs the run's training procedure: score it through a store")
    x, _ = ctx.require_train()
    path = cache_path(ctx, draws, seed)
    if path is not None and path.exists():
        return float(json.loads(path.read_text())["value"])
    values = []
    for draw in range(draws):
        draw_seed = derive_seed(seed, f"rademacher-{draw}")
        signs = torch.randint(0, 2, (len(x),), generator=torch.Generator().manual_seed(draw_seed)).to(x.device)
        accuracy = fit_labels(ctx.spec, x, signs, 2, draw_seed)
        values.append(1.0 - 2.0 * (1.0 - accuracy))
    value = sum(values) / len(values)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_replace(path, lambda tmp: tmp.write_text(json.dumps({"value": value, "draws": values})))
    return value
