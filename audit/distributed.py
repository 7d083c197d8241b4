"""Beyond one machine: the grid on a Ray cluster, and one run data-parallel over processes (torch.distributed).

Ray: every training group (a batched group of runs, or a run alone) is one Ray task with its resource
request; the task trains into the store on shared storage with the same atomic, locked, resumable semantics
as the local backend, so a task retried after its worker died resumes its runs from their last checkpoints.

DDP: launched by torchrun, every rank builds the same data and model; each global minibatch (drawn from the
run's own order generator, identical on every rank) is split across the ranks, gradients are averaged by
DistributedDataParallel, and rank 0 alone writes the run file. The result equals single-process training up
to float rounding.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from audit.errors import UsageError
from audit.grid import GridOutcome, RunCallback, pending_groups, prepare_store, shard_of, train_held
from audit.spec import ExperimentSpec, RunSpec
from audit.store import LOCK_STALE_SECONDS, Store
from audit.train import Operational

RAY_RETRIES = 3


def _train_task(group: list[RunSpec], root: str, ops: Operational, threads: int) -> GridOutcome:
    """One Ray task: train a group into the store; wait out locks left by a dead predecessor on another host."""
    import torch

    torch.set_num_threads(max(1, threads))
    store = Store(Path(root))
    outcome = train_held(group, store, ops)
    deadline = time.monotonic() + LOCK_STALE_SECONDS + 60
    while outcome.skipped and time.monotonic() < deadline:
        time.sleep(5)
        held = {line.split(":")[0] for line in outcome.skipped}
        retry = train_held([spec for spec in group if spec.run_id in held], store, ops)
        outcome = GridOutcome(outcome.records + retry.records, retry.skipped, outcome.errors + retry.errors)
    return outcome


def run_with_ray(experiment: ExperimentSpec, root: Path, ops: Operational, address: str | None = None,
                 cpus_per_run: float = 1, gpus_per_run: float = 0, shard: tuple[int, int] | None = None,
                 on_run: RunCallback | None = None, init_options: dict | None = None) -> GridOutcome:
    """Send every training group of the experiment (or its shard) to Ray and wait for all of them."""
    try:
        import ray
    except ImportError:
        raise UsageError("the Ray backend needs Ray: pip install -e '.[ray]'") from None
    if cpus_per_run <= 0 or gpus_per_run < 0:
        raise UsageError("--cpus-per-run must be positive and --gpus-per-run not negative")
    specs = shard_of(experiment.expand(), shard)
    store = prepare_store(experiment, root)
    records, groups = pending_groups(store, specs, ops)
    started = not ray.is_initialized()
    # Ray prints worker-death notices on the driver's stdout; stdout is for results, so they go to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        if started:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, **(init_options or {}))
        try:
            return _gather(ray, store, specs, records, groups, ops, cpus_per_run, gpus_per_run, on_run)
        finally:
            if started:
                ray.shutdown()


def _gather(ray, store: Store, specs: list[RunSpec], records: list, groups: list[list[RunSpec]], ops: Operational,
            cpus_per_run: float, gpus_per_run: float, on_run: RunCallback | None) -> GridOutcome:
    """Submit one task per group and collect their outcomes as they finish."""
    task = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=RAY_RETRIES)(_train_task)
    device_ops = replace(ops, device="cuda" if gpus_per_run > 0 else ops.device)
    pending = {task.remote(group, str(store.root.resolve()), device_ops, int(cpus_per_run)): group
               for group in groups}
    outcome = GridOutcome(records, [], [])
    done = len(records)
    while pending:
        finished, _ = ray.wait(list(pending), num_returns=1)
        group = pending.pop(finished[0])
        try:
            result = ray.get(finished[0])
        except Exception as err:  # the task failed after its retries: its runs stay resumable in the store
            outcome.errors.append(f"runs {', '.join(s.run_id for s in group)}: the Ray task failed after "
                                  f"{RAY_RETRIES} retries ({type(err).__name__}); `audit run` resumes them")
            continue
        for spec in group:
            if on_run is not None:
                on_run(done, len(specs), spec, "done on Ray")
            done += 1
        outcome.records += result.records
        outcome.skipped += result.skipped
        outcome.errors += result.errors
    return outcome


# ---------------------------------------------------------------- data parallel (torchrun)

def init_ddp(device: str) -> Callable[[], None]:
    """Join the torchrun process group (gloo on CPU, nccl on CUDA); returns the function that leaves it."""
    import torch
    import torch.distributed as dist

    if "WORLD_SIZE" not in os.environ:
        raise UsageError("--ddp needs a torchrun launch: torchrun --nproc_per_node N -m cli run ... --ddp")
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend=backend)
    return dist.destroy_process_group


class _AllReduce(torch.autograd.Function):
    """Sum over the ranks, with the gradient summed over the ranks too."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

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
