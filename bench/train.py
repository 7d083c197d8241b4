"""Training speed: samples per second of a grid trained three ways, measured in one run on this machine.

  (a) a plain PyTorch loop, one run at a time, through a DataLoader over a TensorDataset (how the public
      reproductions train), with a train-accuracy evaluation per epoch;
  (b) audit, run by run (device-resident tensors, index batches, evaluation per epoch);
  (c) audit, batched (the grid's runs as one vmapped model).

Every run trains a fixed number of epochs so that the three do the same work. The achieved training FLOP rate
(3 × forward FLOPs per sample, forward = 2 × multiply-adds of the linear and conv layers) is given as a
fraction of the matmul rate of this machine (a 1024³ fp32 product at the same thread count), measured here.

    python bench/train.py                      # the quick grid (digits) and the fig1-fashion grid
    python bench/train.py --grids quick --epochs 5
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import experiments  # noqa: E402
from audit.batched import train_group  # noqa: E402
from audit.data import build_run_data  # noqa: E402
from audit.flops import matmul_rate, training_flops  # noqa: E402
from audit.spec import RunSpec  # noqa: E402
from audit.train import Operational, make_model, make_optimizer, train_run  # noqa: E402

NO_CHECKPOINTS = Operational(device="cpu", checkpoint_seconds=1e9)  # one write per run, at its end


def grid(name: str, epochs: int) -> list[RunSpec]:
    """The experiment's runs, each trained exactly `epochs` epochs (never fitted before: fit target 1)."""
    return [dataclasses.replace(spec, epochs=epochs, fit_target=1.0) for spec in experiments.load(name).expand()]


def dataloader_loop(specs: list[RunSpec]) -> float:
    """(a): the usual loop. Returns seconds."""
    start = time.perf_counter()
    for spec in specs:
        data = build_run_data(spec)
        model = make_model(spec, data)
        optimizer = make_optimizer(spec, model)
        loader = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=spec.batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(spec.seed))
        for _ in range(spec.epochs):
            model.train()
            for x, y in loader:
                optimizer.zero_grad()
                F.cross_entropy(model(x), y).backward()
                optimizer.step()
            model.eval()
            with torch.no_grad():
                correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in loader)
            _ = correct / len(data.x_train)
    return time.perf_counter() - start


def audit_sequential(specs: list[RunSpec], folder: Path) -> float:
    """(b): audit's loop, one run at a time. Returns seconds."""
    start = time.perf_counter()
    for spec in specs:
        train_run(spec, folder / f"seq-{spec.run_id}.h5", NO_CHECKPOINTS)
    return time.perf_counter() - start


def audit_batched(specs: list[RunSpec], folder: Path) -> float:
    """(c): audit's batched training of the whole grid. Returns seconds."""
    start = time.perf_counter()
    train_group(specs, [folder / f"bat-{spec.run_id}.h5" for spec in specs], NO_CHECKPOINTS)
    return time.perf_counter() - start


def prepare(specs: list[RunSpec]) -> None:
    """Load the datasets and build every run's data once, so that no method pays the first load."""
    for spec in specs:
        build_run_data(spec)


def bench_grid(name: str, epochs: int, methods: list[str], rate: float) -> dict:
    specs = grid(name, epochs)
    prepare(specs)
    sample = build_run_data(specs[0])
    samples = sum(spec.epochs for spec in specs) * len(sample.x_train)
    flops_per_sample = training_flops(make_model(specs[0], sample), sample.input_shape)
    result = {"grid": name, "runs": len(specs), "epochs": epochs, "samples": samples,
              "batch_size": specs[0].batch_size, "model": specs[0].model}
    with tempfile.TemporaryDirectory() as tmp:
        timings = {}
        if "dataloader" in methods:
            timings["dataloader"] = dataloader_loop(specs)
        if "sequential" in methods:
            timings["sequential"] = audit_sequential(specs, Path(tmp))
        if "batched" in methods:
            timings["batched"] = audit_batched(specs, Path(tmp))
    for method, seconds in timings.items():
        result[f"{method}_samples_per_s"] = samples / seconds
        result[f"{method}_fraction_of_matmul"] = samples * flops_per_sample / seconds / rate
    if "dataloader" in timings:
        for method in ("sequential", "batched"):
            if method in timings:
                result[f"{method}_over_dataloader"] = timings["dataloader"] / timings[method]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", default="quick,fig1-fashion")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--methods", default="dataloader,sequential,batched")
    args = parser.parse_args()
    rate = matmul_rate(1024)
    print(f"threads {torch.get_num_threads()}; 1024³ fp32 matmul: {rate / 1e9:.1f} GFLOP/s")
    results = []
    for name in args.grids.split(","):
        row = bench_grid(name, args.epochs, args.methods.split(","), rate)
        results.append(row)
        print(f"\n{name}: {row['runs']} runs of {row['model']}, {row['epochs']} epochs each, batch {row['batch_size']}")
        for method in ("dataloader", "sequential", "batched"):
            if f"{method}_samples_per_s" in row:
                ratio = row.get(f"{method}_over_dataloader")
                print(f"  {method:11s} {row[f'{method}_samples_per_s']:>10,.0f} samples/s   "
                      f"{row[f'{method}_fraction_of_matmul']:.3f} of matmul rate"
                      + (f"   {ratio:.1f}× the DataLoader loop" if ratio else ""))
    rate_after = matmul_rate(1024)
    print(f"\nmatmul rate again at the end: {rate_after / 1e9:.1f} GFLOP/s (a shared machine drifts)")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "train.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
