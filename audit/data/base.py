"""The base dataset: raw images in [0, 1] and clean labels, before any randomization."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class BaseData:
    """A dataset before any randomization: raw images in [0, 1] and clean labels."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    source: str  # where it was read from
    test_index: np.ndarray | None = None  # for datasets whose split we make (digits)
