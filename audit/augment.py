"""Data augmentation on device-resident batches: random crops and horizontal flips, fresh every epoch.

With the paper's pipeline the crops are 28×28 windows of the raw 32×32 image, whitened after cropping
(instead of the centre crop); with the standard pipeline they are windows of the image zero-padded by 4
pixels, the usual CIFAR augmentation. Labels are never changed. Train accuracy is always measured on the
unaugmented train set.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from audit.data import whiten_per_image

PAD = 4

Augmenter = Callable[[torch.Tensor], torch.Tensor]


def random_crops(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """A size×size window of every image at an independent uniform offset."""
    n, c, h, w = images.shape
    top = torch.randint(0, h - size + 1, (n,), generator=generator).to(images.device)
    left = torch.randint(0, w - size + 1, (n,), generator=generator).to(images.device)
    rows = (top[:, None] + torch.arange(size, device=images.device))[:, None, :, None]
    cols = (left[:, None] + torch.arange(size, device=images.device))[:, None, None, :]
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(c, device=images.device)[None, :, None, None]
    return images[batch, channel, rows, cols]


def random_flips(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = (torch.rand(len(images), generator=generator) < 0.5).to(images.device)
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def make_augmenter(augment: str, preprocess: str, source: torch.Tensor, size: int,
                   generator: torch.Generator) -> Augmenter | None:
    """index ↦ augmented batch of `source` (raw images for the paper pipeline, preprocessed ones otherwise)."""
    if augment == "none":
        return None
    crop, flip = "crop" in augment, "flip" in augment
    padded = source
    if crop and preprocess != "paper":
        padded = torch.nn.functional.pad(source, (PAD, PAD, PAD, PAD))

    def augmented(index: torch.Tensor) -> torch.Tensor:
        batch = padded[index]
        if crop:
            batch = random_crops(batch, size, generator)
        elif preprocess == "paper":
            top = (batch.shape[-2] - size) // 2
            left = (batch.shape[-1] - size) // 2
            batch = batch[..., top:top + size, left:left + size]
        if flip:
            batch = random_flips(batch, generator)
        if preprocess == "paper":
            batch = whiten_per_image(batch)
        return batch

    return augmented
