"""GPU check: a shortened table1, a few epochs per paper model, through audit's own training step.

Prints, per model, images per second and the achieved training FLOP rate as a fraction of this GPU's
measured matmul rate (bf16 for the conv models trained under bf16 autocast, fp32 for the MLPs), both
measured in this run. CIFAR-shaped synthetic data (3×28×28 after the paper's crop, random labels): speed
does not depend on pixel values, and the device machine has no network to download CIFAR10.

    python bench/gpu.py                       # every table1 model, 3 epochs of 10,000 images
    python bench/gpu.py --models inception-small --epochs 5 --compile
    python bench/gpu.py --device cpu --train-size 512 --epochs 1   # a dry run without a GPU

Writes the table as JSON to $OUT/gpu.json when OUT is set.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit.models.flops import matmul_rate, training_flops
from audit.models.registry import build_model
from audit.train.device import autocast_for, has_conv
from audit.train.loop import run_epoch

MODELS = ("inception-small", "inception-small-nobn", "alexnet-small", "mlp-3x512", "mlp-1x512")
LR = {"inception-small": 0.1, "inception-small-nobn": 0.1}


def bench_model(name: str, device: torch.device, n: int, epochs: int, batch: int, compile_: bool) -> dict:
    shape = (3, 28, 28)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn((n, *shape), generator=generator).to(device)
    y = torch.randint(0, 10, (n,), generator=generator).to(device)
    model = build_model(name, shape, 10, seed=0).to(device)
    autocast = autocast_for("auto", device, model)
    if device.type == "cuda" and has_conv(model):
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    step_model = torch.compile(model) if compile_ else model
    optimizer = torch.optim.SGD(model.parameters(), lr=LR.get(name, 0.01), momentum=0.9)
    order = torch.Generator().manual_seed(1)
    run_epoch(step_model, optimizer, x, y, batch, order, autocast=autocast)  # warm-up: cuDNN autotune, compile
    synchronize(device)
    start = time.perf_counter()
    for _ in range(epochs):
        run_epoch(step_model, optimizer, x, y, batch, order, autocast=autocast)
    synchronize(device)
    seconds = time.perf_counter() - start
    images_per_second = n * epochs / seconds
    bf16 = device.type == "cuda" and has_conv(model)
    flops = training_flops(build_model(name, shape, 10), shape)
    return {"model": name, "images_per_s": images_per_second, "train_flop_per_image": flops,
            "achieved_tflops": images_per_second * flops / 1e12, "precision": "bf16" if bf16 else "fp32"}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=10000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench/gpu.py: no CUDA device; run it on a GPU machine or pass --device cpu for a dry run")
    peaks = {"fp32": matmul_rate(4096 if device.type == "cuda" else 1024, str(device), torch.float32)}
    peaks["bf16"] = matmul_rate(8192, str(device), torch.bfloat16) if device.type == "cuda" else peaks["fp32"]
    print(f"device {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}; measured matmul: "
          f"fp32 {peaks['fp32'] / 1e12:.1f} TFLOP/s, bf16 {peaks['bf16'] / 1e12:.1f} TFLOP/s")
    rows = []
    for name in args.models.split(","):
        row = bench_model(name, device, args.train_size, args.epochs, args.batch_size, args.compile)
        row["fraction_of_peak"] = row["achieved_tflops"] * 1e12 / peaks[row["precision"]]
        rows.append(row)
        print(f"{name:22s} {row['images_per_s']:>10,.0f} images/s  {row['achieved_tflops']:7.2f} TFLOP/s  "
              f"{row['fraction_of_peak']:.3f} of the {row['precision']} matmul rate")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu.json").write_text(json.dumps({"peaks": peaks, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
