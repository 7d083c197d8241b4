"""The weight tensors measures look at: linear and conv layers in forward order, batch norm folded."""

from __future__ import annotations

import copy

import torch
from torch import nn

from audit.models.zoo import Shift

WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prepare(model: nn.Module, device: torch.device) -> nn.Module:
    """A copy of the model in eval mode, on the device, with batch norm folded into the layer before it."""
    model = copy.deepcopy(model).to(device)
    model.eval()
    return fold_batchnorm(model)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm, and every per-channel Shift after it, that directly follows a conv or linear layer
    in a Sequential into that layer's weight and bias (in place); the folded modules become nn.Identity."""
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        layer = None
        for name, child in list(module._modules.items()):
            if isinstance(child, WEIGHTED):
                layer = child
            elif (layer is not None and isinstance(child, nn.modules.batchnorm._BatchNorm)
                  and child.running_var is not None):  # without running statistics eval uses the batch's
                _fold_pair(layer, child)
                module._modules[name] = nn.Identity()
            elif layer is not None and isinstance(child, Shift):
                _fold_shift(layer, child)
                module._modules[name] = nn.Identity()
            elif not isinstance(child, nn.Identity):
                layer = None
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


@torch.no_grad()
def _fold_shift(layer: nn.Module, shift: nn.Module) -> None:
    if layer.bias is None:
        layer.bias = nn.Parameter(torch.zeros_like(shift.bias))
    layer.bias.add_(shift.bias)


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every linear and conv layer, in registration order (forward order for our models)."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, WEIGHTED)]


def weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight.detach() for _, m in weight_layers(model)]


def as_matrix(weight: torch.Tensor) -> torch.Tensor:
    """A conv kernel reshaped to (out, in·k·k); a linear weight unchanged."""
    return weight.reshape(weight.shape[0], -1)
