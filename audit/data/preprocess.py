"""Preprocessing of images: per-channel standardization, the paper's crop and whitening."""

from __future__ import annotations

from collections.abc import Callable

import torch

from audit.data.imagenet import LazyImages, channel_stats, image_size
from audit.errors import UsageError
from audit.registry import Registry


def preprocess(kind: str, x_train: torch.Tensor, x_test: torch.Tensor,
               clean_train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply a named pipeline. Statistics come from the clean raw train set, so variants share them."""
    return PREPROCESSINGS.get(kind)(x_train, x_test, clean_train)


def standardize(x_train: torch.Tensor, x_test: torch.Tensor, clean_train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = clean_train.mean(dim=(0, 2, 3), keepdim=True)
    std = clean_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
    return torch.sub(x_train, mean).div_(std), torch.sub(x_test, mean).div_(std)  # in place: one allocation each


def imagenet_preprocessing(kind: str) -> Callable[..., tuple[torch.Tensor, torch.Tensor]] | None:
    """imagenet[:SIZE]: resize and centre crop lazily decoded images, standardized by clean train statistics."""
    size = image_size(kind)
    if size is None:
        return None

    def apply(x_train: torch.Tensor, x_test: torch.Tensor, clean_train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(x_train, LazyImages):
            raise UsageError(f"preprocessing '{kind}' is for the imagenet dataset; use standard, paper or none")
        mean, std = channel_stats(clean_train, size)
        return x_train.preprocessed(size, mean, std), x_test.preprocessed(size, mean, std)

    return apply


def centre_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    if h <= size and w <= size:
        return x
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size]


def whiten_per_image(x: torch.Tensor) -> torch.Tensor:
    """(x − mean(x)) / max(std(x), 1/sqrt(N)) per image, N = values per image (TensorFlow's rule)."""
    flat = x.reshape(len(x), -1)
    count = flat.shape[1]
    mean = flat.mean(dim=1, keepdim=True)
    std = flat.std(dim=1, unbiased=False, keepdim=True).clamp_min(1.0 / count ** 0.5)
    return ((flat - mean) / std).reshape(x.shape)


PREPROCESSINGS = Registry("preprocessing")
PREPROCESSINGS.add("standard", standardize, description="per-channel standardization by the clean train set's mean and std")
PREPROCESSINGS.add("paper", lambda x_train, x_test, clean_train: (whiten_per_image(centre_crop(x_train, 28)),
                                                                  whiten_per_image(centre_crop(x_test, 28))),
                   description="the paper's: centre crop 28×28, then per-image whitening")
PREPROCESSINGS.add("none", lambda x_train, x_test, clean_train: (x_train, x_test),
                   description="raw pixels in [0, 1]")
PREPROCESSINGS.pattern("imagenet[:SIZE]", imagenet_preprocessing,
                       description="imagenet only: resize to SIZE·342/299, centre crop SIZE (default 299)")
