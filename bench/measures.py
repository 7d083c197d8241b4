"""Measure costs: seconds per measure on a store's runs, and power iteration against a full SVD.

    python bench/measures.py                         # the quick store (audit run first), every measure
    python bench/measures.py --store audit-runs/quick --measures l2,spectral,hessian-top --runs 5

Power iteration (measures/norms.py: seeded start, stopped when σ changes by less than its tolerance in one
step) is compared with torch.linalg.matrix_norm(ord=2) (a full SVD) at 512² and 4096², on a matrix with a
decaying spectrum (like trained weights) and on a Gaussian one (clustered top singular values: the worst
case), with the relative error of the power iteration's σ.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from statistics import median

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import measures  # noqa: E402
from audit.pipeline.score import context_for
from audit.store.directory import open_store
from audit.store.files import read_run
from audit.train.device import Operational
from measures import norms  # noqa: E402


def per_measure(store: Path, names: list[str], runs: int) -> dict[str, float]:
    """Median seconds per run of each measure, computed fresh (not from the cache)."""
    paths = open_store(store).run_paths()[:runs]
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for path in paths:
        ctx = context_for(read_run(path), Operational(device="cpu"))
        measures.evaluate(ctx, "sharpness", {"steps": 1})  # torch.func's first-use cost is not a measure's
        for name in names:
            seconds[name].append(measures.evaluate(ctx, name).seconds)
    return {name: median(values) for name, values in seconds.items()}


def power_against_svd(size: int, spectrum: str) -> dict[str, float]:
    generator = torch.Generator().manual_seed(0)
    if spectrum == "decaying":
        left, _ = torch.linalg.qr(torch.randn(size, size, generator=generator))
        right, _ = torch.linalg.qr(torch.randn(size, size, generator=generator))
        matrix = (left * torch.arange(1, size + 1, dtype=torch.float32).rsqrt()) @ right
    else:
        matrix = torch.randn(size, size, generator=generator) / size ** 0.5
    start = time.perf_counter()
    exact = float(torch.linalg.matrix_norm(matrix, ord=2))
    svd_seconds = time.perf_counter() - start
    limit = norms.SVD_LIMIT
    norms.SVD_LIMIT = 0  # force the power iteration at every size
    try:
        start = time.perf_counter()
        approximate = norms.top_singular_value(matrix)
        power_seconds = time.perf_counter() - start
    finally:
        norms.SVD_LIMIT = limit
    return {"size": size, "spectrum": spectrum, "svd_seconds": svd_seconds, "power_seconds": power_seconds,
            "speedup": svd_seconds / power_seconds, "relative_error": abs(approximate - exact) / exact}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path("audit-runs/quick"))
    parser.add_argument("--measures", default="")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    names = [n for n in args.measures.split(",") if n] or [n for n in measures.names() if n != "rademacher"]
    results: dict = {"threads": torch.get_num_threads()}
    if args.store.exists():
        results["seconds_per_run"] = per_measure(args.store, names, args.runs)
        print(f"seconds per run on {args.store} (median of {args.runs} runs):")
        for name, seconds in sorted(results["seconds_per_run"].items(), key=lambda kv: -kv[1]):
            print(f"  {name:24s} {seconds:9.4f}")
    else:
        print(f"{args.store} does not exist: run `audit run` first for the per-measure timings")
    results["power_vs_svd"] = []
    print(f"\npower iteration (tolerance {norms.POWER_TOL:g}) against a full SVD:")
    for size in (512, 4096):
        for spectrum in ("decaying", "gaussian"):
            row = power_against_svd(size, spectrum)
            results["power_vs_svd"].append(row)
            print(f"  {size}² {spectrum:9s} SVD {row['svd_seconds']:7.3f} s   power {row['power_seconds']:7.3f} s   "
                  f"{row['speedup']:7.1f}×   relative error {row['relative_error']:.1e}")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "measures.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
