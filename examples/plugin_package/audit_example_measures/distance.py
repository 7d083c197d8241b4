"""The distance from initialization relative to the initial norm (Nagarajan and Kolter 2019 study the
distance from init; this ratio makes it comparable across widths)."""

import math

import torch

from measures import Undefined, measure


def weight_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]


@measure("init-distance-ratio", family="distance", needs=("weights", "init"), direction=1, cost="instant",
         reference="an example installable plugin (examples/plugin_package)",
         formula="sqrt Σ_i ‖W_i − W_i⁰‖_F² / sqrt Σ_i ‖W_i⁰‖_F², biases excluded")
def init_distance_ratio(ctx):
    final, init = weight_layers(ctx.model), weight_layers(ctx.init)
    moved = sum(float((a.weight.detach().double() - b.weight.detach().double()).pow(2).sum())
                for a, b in zip(final, init))
    start = sum(float(b.weight.detach().double().pow(2).sum()) for b in init)
    if start == 0:
        raise Undefined("the initial weights are all zero")
    return math.sqrt(moved) / math.sqrt(start)
