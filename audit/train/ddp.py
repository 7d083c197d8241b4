"""Data-parallel training over the processes of a torchrun launch: process group, whole-minibatch batch norm."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn

from audit.errors import UsageError


def init_ddp(device: str) -> Callable[[], None]:
    """Join the torchrun process group (gloo on CPU, nccl on CUDA); returns the function that leaves it."""
    if "WORLD_SIZE" not in os.environ:
        raise UsageError("--ddp needs a torchrun launch: torchrun --nproc_per_node N -m cli run ... --ddp")
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend=backend)
    return dist.destroy_process_group


def leave_together() -> None:
    """Leave the process group once every rank has come here, after training: rank 0 still writes the run
    files then, and a rank that destroyed its group and exited meanwhile could abort in gloo's teardown
    (SIGABRT, `terminate called without an active exception`: once in a CI run; with rank 0 held 4 s behind, in
    2 of 8 launches, against 0 of 16 with this barrier)."""
    dist.barrier()
    dist.destroy_process_group()


class _AllReduce(torch.autograd.Function):
    """Sum over the ranks, with the gradient summed over the ranks too."""
    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:

        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:

        out = grad.clone()
        dist.all_reduce(out)
        return out


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """Batch norm whose training statistics are those of the whole minibatch across the ranks (torch's
    SyncBatchNorm for CPU/gloo, which it does not support): sums and squares are all-reduced with autograd,
    so forward, gradients and running statistics equal single-process training up to float rounding."""
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        channels = x.shape[1]
        wide = x.double()
        count = torch.tensor([x.numel() / channels], dtype=torch.float64, device=x.device)
        stats = _AllReduce.apply(torch.cat([wide.sum(dim=(0, 2, 3)), (wide * wide).sum(dim=(0, 2, 3)), count]))
        n = stats[-1]
        mean = stats[:channels] / n
        var = (stats[channels:2 * channels] / n - mean * mean).clamp_min(0)
        with torch.no_grad():
            self.num_batches_tracked += 1
            momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.mul_(1 - momentum).add_(momentum * mean.to(self.running_mean.dtype))
            unbiased = var * n / (n - 1).clamp_min(1)
            self.running_var.mul_(1 - momentum).add_(momentum * unbiased.to(self.running_var.dtype))
        # x · alpha + beta with alpha = invstd · weight and beta = bias − mean · alpha in x's precision: the
        # arithmetic of torch's CPU batch norm kernel, so that its rounding matches single-process training's
        mean32, invstd = mean.to(x.dtype), (var + self.eps).rsqrt().to(x.dtype)
        alpha = invstd * self.weight if self.affine else invstd
        beta = (self.bias if self.affine else 0) - mean32 * alpha
        shape = (1, channels, 1, 1)
        return x * alpha.view(shape) + beta.view(shape)


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Batch norm over the whole data-parallel minibatch: torch's SyncBatchNorm on CUDA, GlobalBatchNorm2d on
    the CPU (same parameters and buffers, swapped in place, so state_dict names do not change)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = GlobalBatchNorm2d
    return model
