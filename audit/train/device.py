"""Operational settings and the device: where and how a run trains, outside its run id."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from audit.errors import UsageError


def ddp_world() -> tuple[int, int]:
    """(rank, world size) when launched by torchrun, else (0, 1)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


@dataclass(frozen=True)
class Operational:
    """Settings that do not change the science and are not part of the run id."""

    device: str = "auto"
    checkpoint_every: int = 1  # epochs between checkpoints...
    checkpoint_seconds: float = 30.0  # ...and at least this many seconds between two of them (0: none)
    data_dir: Path | None = None
    download: bool = False
    keep: tuple[str, ...] = ()  # "epoch:N" / "loss:X": weights kept when the run first reaches the point
    precision: str = "auto"  # auto: bf16 autocast for conv models on CUDA, else fp32; or fp32 | bf16
    compile: bool = False  # torch.compile the model (GPU path)
    batch: bool = True  # train runs of one architecture and data size together as one batched model
    ddp: bool = False  # data parallel over the processes of a torchrun launch; rank 0 writes

PRECISIONS = ("auto", "fp32", "bf16")


def has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())


def autocast_for(precision: str, device: torch.device, model: nn.Module) -> contextlib.AbstractContextManager:
    """bf16 autocast where asked (auto: conv models on CUDA); a null context otherwise."""
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision '{precision}': use one of {', '.join(PRECISIONS)}")
    use = precision == "bf16" or (precision == "auto" and device.type == "cuda" and has_conv(model))
    return torch.autocast(device.type, dtype=torch.bfloat16) if use else contextlib.nullcontext()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise UsageError(f"unknown device '{name}': use auto, cpu or cuda")
    return torch.device(name)
