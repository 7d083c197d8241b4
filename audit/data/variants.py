"""The randomization test's six data variants, as pure functions of (data, p, seed).

Defaults fixed here where the paper is silent (REFERENCE.md §1): labels are drawn once per run and
fixed across epochs; a corrupted label is drawn uniformly from all classes (it may equal the true
one); a pixel is a spatial position and its channels move together; random pixels and gaussian
noise replace train and test images alike; test labels stay clean unless `corrupt_test`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from audit.spec.run import RunSpec, derive_seed


@dataclass
class Varied:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    record: dict[str, np.ndarray | int] = field(default_factory=dict)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def corrupt_labels(labels: torch.Tensor, p: float, num_classes: int, seed: int) -> torch.Tensor:
    """Each label, independently with probability p, replaced by a class drawn uniformly from all classes."""
    gen = _generator(seed)
    replace = torch.rand(len(labels), generator=gen) < p
    drawn = torch.randint(0, num_classes, (len(labels),), generator=gen)
    return torch.where(replace, drawn, labels)


def pixel_permutation(height: int, width: int, seed: int) -> torch.Tensor:
    return torch.randperm(height * width, generator=_generator(seed))


def permute_pixels(images: torch.Tensor, permutation: torch.Tensor) -> torch.Tensor:
    """Move spatial positions by one permutation, the same for every image; channels move together."""
    n, c, h, w = images.shape
    return images.reshape(n, c, h * w)[:, :, permutation].reshape(n, c, h, w)


def random_pixels(images: torch.Tensor, seed: int) -> torch.Tensor:
    """An independent random permutation of pixel positions for every image."""
    n, c, h, w = images.shape
    keys = torch.rand(n, h * w, generator=_generator(seed))
    order = keys.argsort(dim=1)
    flat = images.reshape(n, c, h * w)
    return torch.gather(flat, 2, order.unsqueeze(1).expand(n, c, h * w)).reshape(n, c, h, w)


def gaussian_images(count: int, like: torch.Tensor, seed: int) -> torch.Tensor:
    """Gaussian noise with the per-channel mean and standard deviation of the raw images `like`."""
    mean = like.mean(dim=(0, 2, 3), keepdim=True)
    std = like.std(dim=(0, 2, 3), keepdim=True)
    noise = torch.randn((count, *like.shape[1:]), generator=_generator(seed))
    return noise * std + mean


def apply_variant(spec: RunSpec, x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
                  y_test: torch.Tensor, num_classes: int) -> Varied:
    """The variant of the spec applied to raw (unpreprocessed) train and test data."""
    variant, seed = spec.variant, spec.seed
    record: dict[str, np.ndarray | int] = {}
    if variant in ("corrupt", "random-labels"):
        label_seed = derive_seed(seed, "labels")
        record["label_seed"] = label_seed
        y_train = corrupt_labels(y_train, float(spec.corrupt), num_classes, label_seed)
        if spec.corrupt_test:
            y_test = corrupt_labels(y_test, float(spec.corrupt), num_classes, derive_seed(seed, "test-labels"))
    elif variant == "shuffled-pixels":
        perm = pixel_permutation(x_train.shape[2], x_train.shape[3], derive_seed(seed, "pixels"))
        record["pixel_permutation"] = perm.numpy()
        x_train, x_test = permute_pixels(x_train, perm), permute_pixels(x_test, perm)
    elif variant == "random-pixels":
        record["pixel_seed"] = derive_seed(seed, "pixels")
        x_train = random_pixels(x_train, record["pixel_seed"])
        x_test = random_pixels(x_test, derive_seed(seed, "test-pixels"))
    elif variant == "gaussian":
        record["noise_seed"] = derive_seed(seed, "noise")
        x_train, x_test = (gaussian_images(len(x_train), x_train, record["noise_seed"]),
                           gaussian_images(len(x_test), x_train, derive_seed(seed, "test-noise")))
    return Varied(x_train, y_train, x_test, y_test, record)
