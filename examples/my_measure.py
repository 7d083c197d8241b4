"""An example measure plugin: the entrywise L1 norm of the weight matrices.

    audit run --plugin examples/my_measure.py --measure weight-l1
    audit check weight-l1 --plugin examples/my_measure.py

A plugin is any Python file or module that registers measures with `measures.measure`, with the same keywords
as the built-ins. The function takes the measure context (ctx.model holds the final weights, in eval mode,
batch norm folded) and the measure's settings as keywords, and returns a float; it raises
measures.Undefined("why") where the measure is not defined for a run.
"""

import torch

from measures import Undefined, measure


@measure("weight-l1", family="my-norms", needs=("weights",), direction=1, cost="instant",
         reference="an example plugin (examples/my_measure.py)",
         formula="Σ_i ‖W_i‖_1 over the weight matrices of the linear and conv layers, biases excluded",
         settings={"power": 1.0})
def weight_l1(ctx, power):
    layers = [m for m in ctx.model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    if not layers:
        raise Undefined("no linear or conv layer")
    return float(sum(m.weight.detach().double().abs().pow(power).sum() for m in layers))
