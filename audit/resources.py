"""Resources: refusing work before it allocates more memory than the device has."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from audit.errors import WorkError


class TooLarge(WorkError):
    """The measure would need more memory than the device has; nothing is cached, the run is named."""


def available_bytes(device: Any) -> int:
    """Free bytes on a torch device: the GPU's free memory, or the host's available memory."""
    if device.type == "cuda":
        import torch  # only for a CUDA device: the foundation does not load torch

        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def check_memory(name: str, needed: int, device: Any, hint: str, what: str | None = None) -> None:
    """Refuse before allocating when an estimate exceeds 80% of the memory available on the device (TooLarge,
    exit 1: the same work fits on a machine with more memory). `what` names the work (default: the measure)."""
    available = available_bytes(device)
    if needed > 0.8 * available:
        raise TooLarge(f"{what or f'measure {name}'} would need about {needed / 2**30:.3g} GiB on {device}, "
                       f"{available / 2**30:.3g} GiB available; {hint}")


def cache_dir(*parts: str) -> Path:
    """Where audit caches what it trains for itself (`audit check`'s runs, the benchmark's suite):
    AUDIT_CACHE_DIR, default ~/.cache/audit; `parts` name a folder under it."""
    root = Path(os.environ.get("AUDIT_CACHE_DIR") or Path.home() / ".cache" / "audit")
    return root.joinpath(*parts)
