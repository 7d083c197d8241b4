"""Preprocessing of images: per-channel standardization, the paper's crop and whitening."""

from __future__ import annotations
import torch
from audit.errors import UsageError, unknown_name



def preprocess(kind: str, x_train: torch.Tensor, x_test: torch.Tensor,
               clean_train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply a named pipeline. Statistics come from the clean raw train set, so variants share them."""
    if kind == "none":
        return x_train, x_test
    if kind == "standard":
        mean = clean_train.mean(dim=(0, 2, 3), keepdim=True)
        std = clean_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
        return (x_train - mean) / std, (x_test - mean) / std
    if kind == "paper":
        return whiten_per_image(centre_crop(x_train, 28)), whiten_per_image(centre_crop(x_test, 28))
    from audit.data.imagenet import LazyImages, channel_stats, image_size

    size = image_size(kind)
    if size is not None and isinstance(x_train, LazyImages):
        mean, std = channel_stats(clean_train, size)
        return x_train.preprocessed(size, mean, std), x_test.preprocessed(size, mean, std)
    if size is not None:
        raise UsageError(f"preprocessing '{kind}' is for the imagenet dataset; use standard, paper or none")
    raise unknown_name("preprocessing", kind, ["standard", "paper", "none", "imagenet[:SIZE]"])


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
