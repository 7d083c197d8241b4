"""Data augmentation on device-resident batches: random crops and horizontal flips, fresh every epoch.

With the paper's pipeline the crops are 28×28 windows of the raw 32×32 image, whitened after cropping
(instead of the centre crop); with the standard pipeline they are windows of the image zero-padded by 4
pixels, the usual CIFAR augmentation; lazily read images (the imagenet dataset) are cropped from their resized
files (audit/imagenet.py). Labels are never changed. Train accuracy is always measured on the
unaugmented train set.

An augmenter takes the index of the whole minibatch and returns the images of one data-parallel rank's share
(whole[rank::world]); its random draws are made for the whole minibatch, so that ranks together see exactly
the images single-process training sees.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from audit.data.preprocess import whiten_per_image

PAD = 4

Augmenter = Callable[[torch.Tensor, int, int], torch.Tensor]


def random_crops(images: torch.Tensor, size: int, generator: torch.Generator, rank: int = 0,
                 world: int = 1, total: int | None = None) -> torch.Tensor:
    """A size×size window of every image at an independent uniform offset (offsets drawn for `total` images,
    of which these are every world-th from the rank-th)."""
    n, c, h, w = images.shape
    total = n if total is None else total
    top = torch.randint(0, h - size + 1, (total,), generator=generator)[rank::world].to(images.device)
    left = torch.randint(0, w - size + 1, (total,), generator=generator)[rank::world].to(images.device)
    rows = (top[:, None] + torch.arange(size, device=images.device))[:, None, :, None]
    cols = (left[:, None] + torch.arange(size, device=images.device))[:, None, None, :]
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(c, device=images.device)[None, :, None, None]
    return images[batch, channel, rows, cols]


def random_flips(images: torch.Tensor, generator: torch.Generator, rank: int = 0, world: int = 1,
                 total: int | None = None) -> torch.Tensor:
    total = len(images) if total is None else total
    flip = (torch.rand(total, generator=generator) < 0.5)[rank::world].to(images.device)
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def make_augmenter(augment: str, preprocess: str, source: torch.Tensor, size: int,
                   generator: torch.Generator) -> Augmenter | None:
    """(whole minibatch index, rank, world) ↦ augmented batch of `source` (raw images for the paper pipeline,
    preprocessed ones otherwise) for that rank's share."""
    if augment == "none":
        return None
    crop, flip = "crop" in augment, "flip" in augment
    if hasattr(source, "augmenter"):  # LazyImages
        return source.augmenter(crop, flip, generator)
    padded = source
    if crop and preprocess != "paper":
        padded = torch.nn.functional.pad(source, (PAD, PAD, PAD, PAD))

    def augmented(whole: torch.Tensor, rank: int = 0, world: int = 1) -> torch.Tensor:
        batch = padded[whole[rank::world]]
        if crop:
            batch = random_crops(batch, size, generator, rank, world, len(whole))
        elif preprocess == "paper":
            top = (batch.shape[-2] - size) // 2
            left = (batch.shape[-1] - size) // 2
            batch = batch[..., top:top + size, left:left + size]
        if flip:
            batch = random_flips(batch, generator, rank, world, len(whole))
        if preprocess == "paper":
            batch = whiten_per_image(batch)
        return batch

    return augmented
