"""The weight tensors measures look at: linear and conv layers in forward order, batch norm folded."""

from __future__ import annotations

import copy

import torch
from torch import nn

WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prepare(model: nn.Module, device: torch.device) -> nn.Module:
    """A copy of the model in eval mode, on the device, with batch norm folded into the layer before it."""
    model = copy.deepcopy(model).to(device)
    model.eval()
    return fold_batchnorm(model)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm that directly follows a conv or linear layer in a Sequential (in place)."""
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module._modules.items())
        for (name_a, a), (name_b, b) in zip(children, children[1:]):
            if isinstance(a, WEIGHTED) and isinstance(b, nn.modules.batchnorm._BatchNorm):
                _fold_pair(a, b)
                module._modules[name_b] = nn.Identity()
    return model


@torch.no_grad()
def _fold_pair(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> None:
    scale = (bn.running_var + bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale + (bn.bias if bn.bias is not None else 0.0)
    shape = (-1,) + (1,) * (layer.weight.dim() - 1)
    layer.weight.mul_(scale.reshape(shape))
    if layer.bias is None:
        layer.bias = nn.Parameter(torch.zeros_like(shift))
    layer.bias.mul_(scale).add_(shift)


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every linear and conv layer, in registration order (forward order for our models)."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, WEIGHTED)]


def weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight.detach() for _, m in weight_layers(model)]


def as_matrix(weight: torch.Tensor) -> torch.Tensor:
    """A conv kernel reshaped to (out, in·k·k); a linear weight unchanged."""
    return weight.reshape(weight.shape[0], -1)
