"""The randomization test's six data variants, as pure functions of (data, p, seed).

Defaults fixed here where the paper is silent (REFERENCE.md §1): labels are drawn once per run and
fixed across epochs; a corrupted label is drawn uniformly from all classes (it may equal the true
one); a pixel is a spatial position and its channels move together; random pixels and gaussian
noise replace train and test images alike; test labels stay clean unless `corrupt_test`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from audit.registry import Registry, origin_of
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
    return noise.mul_(std).add_(mean)


def apply_variant(spec: RunSpec, x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
                  y_test: torch.Tensor, num_classes: int) -> Varied:
    """The variant of the spec applied to raw (unpreprocessed) train and test data."""
    varied = Varied(x_train, y_train, x_test, y_test, {})
    VARIANTS.get(spec.variant)(spec, varied, num_classes)
    return varied


def _labels(spec: RunSpec, varied: Varied, num_classes: int) -> None:
    label_seed = derive_seed(spec.seed, "labels")
    varied.record["label_seed"] = label_seed
    varied.y_train = corrupt_labels(varied.y_train, float(spec.corrupt), num_classes, label_seed)
    if spec.corrupt_test:
        varied.y_test = corrupt_labels(varied.y_test, float(spec.corrupt), num_classes,
                                       derive_seed(spec.seed, "test-labels"))


def _shuffled_pixels(spec: RunSpec, varied: Varied, num_classes: int) -> None:
    perm = pixel_permutation(varied.x_train.shape[2], varied.x_train.shape[3], derive_seed(spec.seed, "pixels"))
    varied.record["pixel_permutation"] = perm.numpy()
    varied.x_train, varied.x_test = permute_pixels(varied.x_train, perm), permute_pixels(varied.x_test, perm)


def _random_pixels(spec: RunSpec, varied: Varied, num_classes: int) -> None:
    varied.record["pixel_seed"] = derive_seed(spec.seed, "pixels")
    varied.x_train = random_pixels(varied.x_train, varied.record["pixel_seed"])
    varied.x_test = random_pixels(varied.x_test, derive_seed(spec.seed, "test-pixels"))


def _gaussian(spec: RunSpec, varied: Varied, num_classes: int) -> None:
    varied.record["noise_seed"] = derive_seed(spec.seed, "noise")
    varied.x_train, varied.x_test = (gaussian_images(len(varied.x_train), varied.x_train, varied.record["noise_seed"]),
                                     gaussian_images(len(varied.x_test), varied.x_train,
                                                     derive_seed(spec.seed, "test-noise")))


VariantFn = Callable[[RunSpec, "Varied", int], None]

VARIANTS = Registry("variant")
VARIANTS.add("true", lambda spec, varied, num_classes: None, label="true", axis="label",
             description="the dataset unchanged")
VARIANTS.add("corrupt", _labels, label="corrupt:P", axis="label",
             description="each train label replaced, with probability P, by a class drawn uniformly from all classes")
VARIANTS.add("random-labels", _labels, label="random-labels", axis="label",
             description="corrupt:1, every label drawn uniformly")
VARIANTS.add("shuffled-pixels", _shuffled_pixels, label="shuffled-pixels", axis="input",
             description="one random permutation of pixel positions for all images, train and test")
VARIANTS.add("random-pixels", _random_pixels, label="random-pixels", axis="input",
             description="an independent random permutation of pixel positions per image, train and test")
VARIANTS.add("gaussian", _gaussian, label="gaussian", axis="input",
             description="images replaced by Gaussian noise with the raw train set's per-channel mean and variance")


def register_variant(name: str, description: str) -> Callable[[VariantFn], VariantFn]:
    """Register fn(spec, varied, num_classes), changing `varied` in place, as a variant on the input axis (a
    plugin's own randomization; its seeds from derive_seed(spec.seed, ...), what regenerates it in varied.record)."""

    def register(function: VariantFn) -> VariantFn:
        VARIANTS.add(name, function, origin=origin_of(function, 2), label=name, axis="input", description=description)
        return function

    return register
