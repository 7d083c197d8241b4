"""The architectures: MLPs of any depth and width, the paper's small AlexNet and small Inception, and Inception v3.

`mlp-DxW` is any depth D and width W (mlp-1x512 and mlp-3x512 are the paper's); dropout, when
asked for, follows every hidden ReLU. The paper's small AlexNet and small Inception (REFERENCE.md §1)
take any (C, H, W) input; dropout, when asked for, acts on the input of every fully connected layer.
Modules are registered in forward order, so measures that walk `named_modules()` see layers in order.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from audit.errors import UsageError

INCEPTION_V3_MIN = 75  # torchvision's Inception v3 has three 'valid' stride-2 stages and a final 3×3 conv



def mlp(input_shape: tuple[int, ...], num_classes: int, depth: int, width: int, dropout: float = 0.0) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    size = math.prod(input_shape)
    for _ in range(depth):
        layers += [nn.Linear(size, width), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        size = width
    layers.append(nn.Linear(size, num_classes))
    return nn.Sequential(*layers)

MLP_PATTERN = re.compile(r"^mlp-(\d+)x(\d+)$")


def _image_shape(name: str, input_shape: tuple[int, ...], min_size: int) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise UsageError(f"model '{name}' needs image inputs (C, H, W), got shape {tuple(input_shape)}")
    channels, height, width = (int(d) for d in input_shape)
    if min(height, width) < min_size:
        raise UsageError(f"model '{name}' needs images of at least {min_size}×{min_size}, got {height}×{width}")
    return channels, height, width


class MaxPool2dSame(nn.MaxPool2d):
    """Max pooling with TensorFlow's 'same' padding: output ceil(in / stride), and when the padding is odd
    the extra row and column go at the bottom and right (PyTorch's symmetric padding would shift the
    windows of even-sized inputs by one pixel)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size, self.stride
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad takes the last dimension first
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.max_pool2d(F.pad(x, pads, value=float("-inf")), k, s)


def _pooled(size: int) -> int:
    return math.ceil(size / 2)


def alexnet_small(input_shape: tuple[int, ...], num_classes: int, dropout: float = 0.0) -> nn.Module:
    """[conv 5×5 64 'same' + bias → ReLU → max pool 3×3/2 'same' → LRN] ×2 → FC 384 → FC 192 → FC classes."""
    channels, height, width = _image_shape("alexnet-small", input_shape, 1)

    def block(in_channels: int) -> list[nn.Module]:
        return [nn.Conv2d(in_channels, 64, 5, padding=2), nn.ReLU(), MaxPool2dSame(3, 2),
                nn.LocalResponseNorm(size=9, alpha=0.001, beta=0.75, k=1.0)]

    def fc(size_in: int, size_out: int) -> list[nn.Module]:
        return ([nn.Dropout(dropout)] if dropout > 0 else []) + [nn.Linear(size_in, size_out)]

    flat = 64 * _pooled(_pooled(height)) * _pooled(_pooled(width))
    return nn.Sequential(*block(channels), *block(64), nn.Flatten(),
                         *fc(flat, 384), nn.ReLU(), *fc(384, 192), nn.ReLU(), *fc(192, num_classes))


class Shift(nn.Module):
    """A learned per-channel shift: batch norm's beta without its gamma (it takes the place of the conv bias)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias.view(1, -1, *([1] * (x.dim() - 2)))


class Concat(nn.Module):
    """Branches applied to the same input, outputs concatenated on channels."""

    def __init__(self, *branches: nn.Module) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


def conv_module(in_channels: int, out_channels: int, kernel: int, stride: int, batchnorm: bool) -> nn.Sequential:
    """conv → batch norm (no scale) + shift → ReLU; without batch norm, conv with bias → ReLU.
    Stride 1 is 'same' padding, stride 2 'valid' (the downsample module's)."""
    padding = kernel // 2 if stride == 1 else 0
    if not batchnorm:
        return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, stride, padding), nn.ReLU())
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, stride, padding, bias=False),
                         nn.BatchNorm2d(out_channels, affine=False), Shift(out_channels), nn.ReLU())

INCEPTION_LAYOUT = (("inception", 32, 32), ("inception", 32, 48), ("downsample", 80),
                    ("inception", 112, 48), ("inception", 96, 64), ("inception", 80, 80), ("inception", 48, 96),
                    ("downsample", 96), ("inception", 176, 160), ("inception", 176, 160))


def inception_small(input_shape: tuple[int, ...], num_classes: int, dropout: float = 0.0,
                    batchnorm: bool = True) -> nn.Module:
    """conv module 96 3×3 → the inception and downsample modules of INCEPTION_LAYOUT → global mean pool → FC."""
    name = "inception-small" if batchnorm else "inception-small-nobn"
    channels, _, _ = _image_shape(name, input_shape, 7)  # two 'valid' 3×3/2 downsamples need at least 7
    layers: list[nn.Module] = [conv_module(channels, 96, 3, 1, batchnorm)]
    channels = 96
    for kind, *sizes in INCEPTION_LAYOUT:
        if kind == "inception":
            a, b = sizes
            layers.append(Concat(conv_module(channels, a, 1, 1, batchnorm),
                                 conv_module(channels, b, 3, 1, batchnorm)))
            channels = a + b
        else:
            (c,) = sizes
            layers.append(Concat(conv_module(channels, c, 3, 2, batchnorm), nn.MaxPool2d(3, 2)))
            channels = c + channels
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(channels, num_classes))
    return nn.Sequential(*layers)


def inception_v3(input_shape: tuple[int, ...], num_classes: int, dropout: float = 0.0,
                 batchnorm: bool = True) -> nn.Module:
    """torchvision's Inception v3 (no auxiliary head, its own truncated-normal init) for RGB images of at least
    75×75 (299×299 is the paper's); dropout acts on the pooled features before the classifier."""
    import torchvision  # slow to import; only for Inception v3 and the torchvision datasets

    channels, _, _ = _image_shape("inception-v3", input_shape, INCEPTION_V3_MIN)
    if channels != 3:
        raise UsageError(f"model 'inception-v3' needs RGB images (3 channels), got {channels}")
    if not batchnorm:
        raise UsageError("model 'inception-v3' always has batch norm: batchnorm must be true")
    return torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=True,
                                           num_classes=num_classes, dropout=dropout)
