"""Measures read off the training run itself."""

from __future__ import annotations

from measures import Context, Undefined, measure


def run_attr(ctx: Context, key: str) -> float:
    if ctx.record is None:
        raise Undefined("needs the run's history: score it through a store")
    value = ctx.record.attrs.get(key)
    if value is None:
        raise Undefined(f"the run has no {key.replace('_', ' ')} (it never fitted)")
    return float(value)


@measure("steps-to-fit", family="optimization", needs=("history",), direction=1, cost="instant",
         reference="Zhang et al. 2017, Figure 1b (time to overfit)",
         formula="SGD steps until the whole fitted train set reached the fit target accuracy (eval mode)")
def steps_to_fit(ctx: Context) -> float:
    return run_attr(ctx, "steps_to_fit")
