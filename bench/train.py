"""Training speed: samples per second of a grid trained three ways, measured in one run on this machine.

  (a) a plain PyTorch loop, one run at a time, through a DataLoader over a TensorDataset (how the public
      reproductions train), with a train-accuracy evaluation per epoch;
  (b) audit, run by run (device-resident tensors, index batches, evaluation per epoch);
  (c) audit, batched: audit's default, the trainer rule (audit/train/batched.py: batchable): plain MLPs and
      other models without convolutions train as one stacked model, models with convolutions run by run;
  (d) vmap (the conv grid only, to show what the rule avoids): the grid's runs forced into one vmapped group.

The quick grid trains as the experiment does: every run until it fits (train accuracy on the whole train set,
evaluated after every epoch, at the fit target) or its epoch budget; samples per second count the samples each
method actually trained on. Other grids train a fixed number of epochs (--epochs) so that all methods do the
same work. The achieved FLOP rate is given as a fraction of this machine's matmul rate (a 1024³ fp32 product at
the same thread count, measured in the same run, through torch.matmul); where oneDNN's product is faster (AMD
processors, on which torch.matmul runs MKL's AVX2 code, and the product audit's CPU trainer uses for large
MLPs), the fraction of that rate is printed too. "all FLOPs" counts every pass the method made (3 × forward
FLOPs per trained sample, forward = 2 × multiply-adds of the linear and conv layers, and one forward pass per
example of each evaluation of the train and test sets that the stopping rule and the learning curves need);
"training FLOPs" counts the trained samples only, over the same time. Every run's data (subset, variant,
preprocessing, fingerprints) is built once before any clock starts and handed to every method alike; its
seconds per run are printed beside the grid.

    python bench/train.py                      # quick (to fit), fig1-fashion (10 epochs), conv (2 epochs)
    python bench/train.py --grids quick
    python bench/train.py --grids conv         # the conv row alone: alexnet-small on 5,000 Fashion-MNIST images
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
from audit.data.fitted import RunData, build_run_data
from audit.models.flops import matmul_rate, training_flops
from audit.spec.run import RunSpec
from audit.train import cpu_mlp, state
from audit.train.batched import batchable, groups_of, train_group
from audit.train.device import Operational
from audit.train.loop import train_run
from audit.train.state import make_model, make_optimizer

NO_CHECKPOINTS = Operational(device="cpu", checkpoint_seconds=1e9)  # one write per run, at its end


CONV_GRID = dict(model="alexnet-small", train_size=5000)  # the conv row: fig1-fashion's setup on a small CNN
CONV_VARIANTS = ("true", "random-labels")  # of seed 0: two runs


def grid(name: str, epochs: int | None) -> list[RunSpec]:
    """The experiment's runs (conv: two runs of fig1-fashion on alexnet-small and 5,000 images); with `epochs`,
    each trains exactly that many (fit target out of reach)."""
    if name == "conv":
        specs = [dataclasses.replace(spec, **CONV_GRID) for spec in experiments.load("fig1-fashion").expand()
                 if spec.variant in CONV_VARIANTS and spec.seed == 0]
    else:
        specs = experiments.load(name).expand()
    if epochs is None:
        return specs
    return [dataclasses.replace(spec, epochs=epochs, fit_target=1.0, loss_target=None) for spec in specs]


Timing = tuple[float, int, int]  # seconds, samples trained, evaluations of the train and test sets


def dataloader_loop(specs: list[RunSpec]) -> Timing:
    """(a): the usual loop, with the same stopping rule and an evaluation after every epoch."""
    start, samples, evaluations = time.perf_counter(), 0, 0
    for spec in specs:
        data = built(spec)
        model = make_model(spec, data)
        optimizer = make_optimizer(spec, model)
        dataset = TensorDataset(data.x_train, data.y_train)
        loader = DataLoader(dataset, batch_size=spec.batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(spec.seed))
        for _ in range(spec.epochs):
            model.train()
            for x, y in loader:
                optimizer.zero_grad()
                F.cross_entropy(model(x), y).backward()
                optimizer.step()
            samples += len(dataset)
            model.eval()
            with torch.no_grad():
                correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in DataLoader(dataset, batch_size=1000))
                sum(int((model(x).argmax(1) == y).sum())  # test accuracy, as the loops record it
                    for x, y in DataLoader(TensorDataset(data.x_test, data.y_test), batch_size=1000))
            evaluations += 1
            if correct / len(dataset) >= spec.fit_target:
                break
    return time.perf_counter() - start, samples, evaluations


def work_done(seconds: float, records: list) -> Timing:
    """Samples trained and evaluations made (one per history row: the initial one and one per epoch)."""
    return (seconds, sum(int(record.attrs["samples_seen"]) for record in records),
            sum(len(record.history["epoch"]) for record in records))


def audit_sequential(specs: list[RunSpec], folder: Path) -> Timing:
    """(b): audit's loop, one run at a time."""
    start = time.perf_counter()
    records = [train_run(spec, folder / f"seq-{spec.run_id}.h5", NO_CHECKPOINTS) for spec in specs]
    return work_done(time.perf_counter() - start, records)


def audit_batched(specs: list[RunSpec], folder: Path) -> Timing:
    """(c): audit's default: the runs the trainer rule batches trained in groups, the others run by run (what
    `audit run` does)."""
    start = time.perf_counter()
    records = [train_run(spec, folder / f"bat-{spec.run_id}.h5", NO_CHECKPOINTS) for spec in specs
               if not batchable(spec)]
    for group in groups_of([spec for spec in specs if batchable(spec)]):
        records += train_group(group, [folder / f"bat-{spec.run_id}.h5" for spec in group], NO_CHECKPOINTS)
    return work_done(time.perf_counter() - start, records)


def vmapped(specs: list[RunSpec], folder: Path) -> Timing:
    """(d): the whole grid forced into one batched group, whatever the rule says (vmap for models other than
    plain MLPs)."""
    start = time.perf_counter()
    records = train_group(specs, [folder / f"vmap-{spec.run_id}.h5" for spec in specs], NO_CHECKPOINTS)
    return work_done(time.perf_counter() - start, records)


def onednn_rate() -> float:
    """The 1024³ fp32 rate of oneDNN's product, the one audit's CPU trainer uses for large MLPs (0 without it)."""
    return matmul_rate(1024, product=lambda a, b: cpu_mlp.linear(a, b, None)) if cpu_mlp.available() else 0.0


BUILT: dict[str, RunData] = {}  # every run's data, built before the clocks start


def prepare(specs: list[RunSpec]) -> float:
    """Build every run's data (subset, variant, preprocessing, fingerprints) once, before any method is timed,
    and hand the same data to every method: the methods are compared on training, and data building is the same
    work whichever trains. Returns the seconds of building per run (printed beside the rows)."""
    build_run_data(specs[0])  # the first load of the dataset's files is not building
    start = time.perf_counter()
    for spec in specs:
        BUILT[spec.run_id] = build_run_data(spec)
    return (time.perf_counter() - start) / len(specs)


def built(spec: RunSpec, *args: object, **kwargs: object) -> RunData:
    return BUILT[spec.run_id] if spec.run_id in BUILT else build_run_data(spec, *args, **kwargs)


state.build_run_data = built  # audit's trainers (open_run) read the prepared data too


def bench_grid(name: str, epochs: int | None, methods: list[str]) -> dict:
    specs = grid(name, epochs)
    build_seconds = prepare(specs)
    sample = built(specs[0])
    train_flops = training_flops(make_model(specs[0], sample), sample.input_shape)
    evaluation_flops = train_flops / 3 * (len(sample.x_train) + len(sample.x_test))  # one pass over both sets
    result = {"grid": name, "runs": len(specs), "epochs": epochs or "to fit",
              "batch_size": specs[0].batch_size, "model": specs[0].model,
              "trainer": "batched" if batchable(specs[0]) else "sequential", "data_build_s_per_run": build_seconds}
    runners = {"dataloader": lambda: dataloader_loop(specs),
               "sequential": lambda: audit_sequential(specs, folder),
               "batched": lambda: audit_batched(specs, folder),
               "vmap": lambda: vmapped(specs, folder)}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for method in methods:
            before = matmul_rate(1024), onednn_rate()
            seconds, samples, evaluations = runners[method]()
            # a shared machine drifts: the rates around this method
            rate = (before[0] + matmul_rate(1024)) / 2
            best = max(rate, (before[1] + onednn_rate()) / 2)
            result[f"{method}_matmul_rate"] = rate
            result[f"{method}_best_rate"] = best
            result[f"{method}_fraction_of_best"] = samples * train_flops / seconds / best
            result[f"{method}_samples"] = samples
            result[f"{method}_evaluations"] = evaluations
            result[f"{method}_samples_per_s"] = samples / seconds
            result[f"{method}_fraction_of_matmul"] = samples * train_flops / seconds / rate
            result[f"{method}_fraction_all"] = (samples * train_flops + evaluations * evaluation_flops) / seconds / rate
    for method in ("sequential", "batched", "vmap"):
        if f"{method}_samples_per_s" in result and "dataloader_samples_per_s" in result:
            result[f"{method}_over_dataloader"] = (result[f"{method}_samples_per_s"]
                                                   / result["dataloader_samples_per_s"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", default="quick,fig1-fashion,conv", help="of quick, fig1-fashion, conv")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per run on fig1-fashion")
    parser.add_argument("--conv-epochs", type=int, default=2, help="epochs per run on the conv grid")
    parser.add_argument("--methods", default="dataloader,sequential,batched",
                        help="of dataloader, sequential, batched, vmap (the conv grid adds vmap)")
    args = parser.parse_args()
    print(f"threads {torch.get_num_threads()}; each method against the 1024³ fp32 matmul rate measured just "
          "before and after it")
    results = []
    for name in args.grids.split(","):
        epochs = {"quick": None, "conv": args.conv_epochs}.get(name, args.epochs)
        methods = args.methods.split(",")
        if name == "conv" and "vmap" not in methods and args.methods == parser.get_default("methods"):
            methods.append("vmap")
        row = bench_grid(name, epochs, methods)
        results.append(row)
        print(f"\n{name}: {row['runs']} runs of {row['model']}, epochs: {row['epochs']}, batch {row['batch_size']}, "
              f"audit's trainer path: {row['trainer']}; building each run's data took "
              f"{row['data_build_s_per_run']:.3f} s, before the clocks")
        for method in ("dataloader", "sequential", "batched", "vmap"):
            if f"{method}_samples_per_s" in row:
                ratio = row.get(f"{method}_over_dataloader")
                print(f"  {method:11s} {row[f'{method}_samples_per_s']:>10,.0f} samples/s   "
                      f"{row[f'{method}_fraction_all']:.3f} of matmul rate (all FLOPs), "
                      f"{row[f'{method}_fraction_of_matmul']:.3f} (training FLOPs only) of "
                      f"{row[f'{method}_matmul_rate'] / 1e9:.0f} GFLOP/s"
                      + (f"   {ratio:.1f}× the DataLoader loop" if ratio else ""))
                if row[f"{method}_best_rate"] > row[f"{method}_matmul_rate"]:
                    print(f"  {'':11s} {row[f'{method}_fraction_of_best']:.3f} (training FLOPs only) of the fastest fp32 "
                          f"product here, oneDNN's, {row[f'{method}_best_rate'] / 1e9:.0f} GFLOP/s")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "train.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
