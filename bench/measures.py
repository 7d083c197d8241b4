"""Measure costs: `audit score --all` against training the same store, seconds per measure on a store's runs,
the Hessian measures against PyHessian, the ww-* measures against WeightWatcher, and power iteration against a
full SVD.

    python bench/measures.py                         # everything (about 3 minutes on 2 idle cores)
    python bench/measures.py --score-only            # only `audit score --all` against training (about 1 minute)
    python bench/measures.py --store audit-runs/quick --measures l2,spectral,hessian-top --runs 5
    python bench/measures.py --peers-only            # only the PyHessian and WeightWatcher comparisons

Scoring against training: in an empty temporary folder, `audit run quick --out STORE --measure params` (train the
quick grid's 27 runs, score one instant measure) and then `audit score STORE --all` (every registered measure on
every run), each a fresh process timed from its start to its exit, so both pay the same start-up; the ratio is
score seconds / training seconds, and the table gives each measure's seconds per run as `score` recorded them.

Peers: on a 64-512-512-10 MLP (mlp-2x512, 50 seeded SGD steps) and 1,024 scikit-learn digits images, in one
process, best of --repeats alternating timings: hessian-top at tol 1e-6 against PyHessian's power iteration at
its tol 1e-6 (`hessian(model, criterion, data=(x, y), cuda=False).eigenvalues(top_n=1, tol=1e-6)`), both with
their relative error against hessian-top at tol 1e-10; hessian-trace per probe against PyHessian's `.trace()`
per probe at the same probe count (its tolerance disabled). Both sides' seconds include building what they need
from the model (PyHessian's gradient graph). The ratio is peer seconds / ours: above 1, ours is faster.

Power iteration (measures/norms.py: seeded start, stopped when σ changes by less than its tolerance in one
step) is compared with torch.linalg.matrix_norm(ord=2) (a full SVD) at 512² and 4096², on a matrix with a
decaying spectrum (like trained weights) and on a Gaussian one (clustered top singular values: the worst
case), with the relative error of the power iteration's σ.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
import warnings
from pathlib import Path
from statistics import median

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import measures  # noqa: E402
from audit.models.flops import matmul_rate
from audit.models.registry import build_model
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


def digits_case(samples: int = 1024) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The issue's case: mlp-2x512 on `samples` digits images (pixels / 16), after 50 seeded full-batch SGD steps."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data[:samples] / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target[:samples])
    model = build_model("mlp-2x512", (64,), 10, seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(50):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval(), x, y


def timed(fn):  # noqa: ANN001, ANN202
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def counting_peer_products():  # noqa: ANN202
    """PyHessian's module with its hessian_vector_product wrapped to count calls: (module, counter)."""
    module = sys.modules["pyhessian.hessian"]
    counter = [0]
    product = getattr(module.hessian_vector_product, "__wrapped__", module.hessian_vector_product)

    def counted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        counter[0] += 1
        return product(*args, **kwargs)

    counted.__wrapped__ = product
    module.hessian_vector_product = counted
    return counter


def peers(repeats: int, probes: int) -> dict:
    """hessian-top and hessian-trace against PyHessian on the digits case; prints the rows, returns them."""
    import numpy as np

    model, x, y = digits_case()
    settings = {"samples": len(x)}
    print(f"\nHessian measures against PyHessian: mlp-2x512 on {len(x)} digits images, {torch.get_num_threads()} "
          f"threads, matmul {matmul_rate() / 1e9:.0f} GFLOP/s (1024³ fp32, now), best of {repeats}")
    ours = lambda name, **extra: measures.compute(model, [name], train=(x, y),  # noqa: E731
                                                  settings={name: {**settings, **extra}})[name]
    ours("hessian-top", tol=1e-3)  # first-use costs (thread pools, allocator) are no measure's
    reference = ours("hessian-top", tol=1e-10).value
    rows: dict = {"reference_top": reference}
    try:
        from pyhessian import hessian
    except ImportError:
        print("  pyhessian is not installed (pip install pyhessian): the peer rows are skipped")
        hessian = None
    counter = counting_peer_products() if hessian is not None else [0]
    criterion = torch.nn.CrossEntropyLoss()

    def peer(task):  # noqa: ANN001, ANN202
        torch.manual_seed(0)
        with warnings.catch_warnings():  # its backward(create_graph=True) warns of the cycle cleared below
            warnings.simplefilter("ignore", UserWarning)
            out = task(hessian(model, criterion, data=(x, y), cuda=False))
        for p in model.parameters():
            p.grad = None  # PyHessian's backward(create_graph=True) leaves a graph in .grad
        return out

    best: dict[str, list] = {}
    for _ in range(repeats):
        for key, fn in (("top", lambda: ours("hessian-top", tol=1e-6)),
                        ("trace", lambda: ours("hessian-trace", probes=probes, chunk=probes))):
            result, seconds = timed(fn)
            if key not in best or seconds < best[key][1]:
                best[key] = [result, seconds]
        if hessian is None:
            continue
        counter[0] = 0
        for key, fn in (("peer_top", lambda: peer(lambda h: h.eigenvalues(top_n=1, tol=1e-6)[0][0])),
                        ("peer_trace", lambda: peer(lambda h: h.trace(maxIter=probes, tol=float("-inf"))))):
            result, seconds = timed(fn)
            if key not in best or seconds < best[key][1]:
                best[key] = [result, seconds]
            best[key].append(counter[0])
            counter[0] = 0
    top, top_s = best["top"][:2]
    trace, trace_s = best["trace"][:2]
    rows.update(top=top.value, top_seconds=top_s, top_products=top.detail.get("products"),
                trace=trace.value, trace_stderr=float(trace.detail["stderr"]), trace_seconds_per_probe=trace_s / probes)
    print(f"  hessian-top   ours {top.value:.7f} (error {abs(top.value - reference) / abs(reference):.1e}) "
          f"{top_s:6.3f} s, {top.detail.get('products')} products")
    print(f"  hessian-trace ours {trace.value:.4f} ± {rows['trace_stderr']:.4f} {trace_s / probes:7.4f} s per probe "
          f"({probes} probes)")
    if hessian is not None:
        peer_top, peer_top_s, peer_top_products = best["peer_top"][:3]
        values = np.array(best["peer_trace"][0])
        peer_trace_s = best["peer_trace"][1]
        rows.update(peer_top=float(peer_top), peer_top_seconds=peer_top_s, peer_top_products=peer_top_products,
                    peer_trace=float(values.mean()), peer_trace_stderr=float(values.std(ddof=1) / len(values) ** 0.5),
                    peer_trace_seconds_per_probe=peer_trace_s / len(values),
                    top_ratio=peer_top_s / top_s, trace_ratio=(peer_trace_s / len(values)) / (trace_s / probes))
        print(f"  PyHessian top {peer_top:.7f} (error {abs(peer_top - reference) / abs(reference):.1e}) "
              f"{peer_top_s:6.3f} s, {peer_top_products} products   ratio {rows['top_ratio']:.2f}")
        print(f"  PyHessian trace {rows['peer_trace']:.4f} ± {rows['peer_trace_stderr']:.4f} "
              f"{rows['peer_trace_seconds_per_probe']:7.4f} s per probe ({len(values)} probes)   "
              f"ratio {rows['trace_ratio']:.2f}")
    return rows


def score_against_training() -> dict:
    """`audit run --measure params` into an empty store, then `audit score --all` on it, each a fresh process;
    prints the ratio and every measure's seconds per run; returns them."""
    import subprocess
    import tempfile

    script = Path(sys.executable).with_name("audit")  # the installed command (pip install -e .)
    audit = [str(script)] if script.exists() else [sys.executable, str(Path(__file__).resolve().parents[1] / "cli.py")]
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "quick"
        commands = {"train": [*audit, "run", "quick", "--out", str(store), "--measure", "params", "--json"],
                    "score": [*audit, "score", str(store), "--all", "--json"]}
        seconds, outputs = {}, {}
        for step, command in commands.items():
            start = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=folder)
            seconds[step] = time.perf_counter() - start
            if done.returncode != 0:
                raise SystemExit(f"bench: `audit {command[len(audit)]}` failed: {done.stderr.strip()[-500:]}")
            outputs[step] = json.loads(done.stdout)
    per_run = {row["measure"]: row["seconds_per_run"] for row in outputs["score"]["summary"]}
    ratio = seconds["score"] / seconds["train"]
    print(f"audit score --all on the quick store ({len(outputs['score']['runs'])} runs, {len(per_run)} measures): "
          f"{seconds['score']:.1f} s; training it (audit run --measure params): {seconds['train']:.1f} s; "
          f"ratio {ratio:.2f} (target ≤ 5), {torch.get_num_threads()} threads, matmul "
          f"{matmul_rate() / 1e9:.0f} GFLOP/s now")
    print("  seconds per run, as score recorded them:")
    for name, value in sorted(per_run.items(), key=lambda kv: -(kv[1] or 0)):
        print(f"    {name:24s} {value or 0:9.4f}")
    return {"train_seconds": seconds["train"], "score_all_seconds": seconds["score"], "ratio": ratio,
            "seconds_per_run": per_run}


def weightwatcher_peer(repeats: int) -> dict:
    """The five ww-* measures against WeightWatcher's analyze() on the digits case, in one process."""
    model, _, _ = digits_case()
    names = ["ww-alpha", "ww-alpha-weighted", "ww-log-spectral-norm", "ww-stable-rank", "ww-log-norm"]
    ours = min(timed(lambda: measures.compute(model, names))[1] for _ in range(repeats))
    values = measures.compute(model, names)
    row = {"ours_seconds": ours, "ours": {n: values[n].value for n in names}}
    head = f"\nww-* (5 measures) on mlp-2x512: ours {ours:.3f} s"
    quiet = contextlib.ExitStack()  # WeightWatcher prints on import, construction and analysis
    quiet.enter_context(contextlib.redirect_stdout(io.StringIO()))
    quiet.enter_context(contextlib.redirect_stderr(io.StringIO()))
    with quiet:
        try:
            import logging

            import weightwatcher
        except ImportError:
            weightwatcher = None
    if weightwatcher is None:
        print(f"{head}; weightwatcher is not installed (pip install weightwatcher): the peer row is skipped")
        return row
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        watcher = weightwatcher.WeightWatcher(model=model)
        peer = min(timed(lambda: watcher.analyze())[1] for _ in range(repeats))
        details = watcher.analyze()
    row.update(peer_seconds=peer, ratio=peer / ours, peer_alpha=float(details["alpha"].mean()))
    print(f"{head}; WeightWatcher analyze() {peer:.3f} s; ratio {peer / ours:.2f}; mean alpha ours "
          f"{values['ww-alpha'].value:.3f}, WeightWatcher {row['peer_alpha']:.3f}")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path("audit-runs/quick"))
    parser.add_argument("--measures", default="")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--peers-only", action="store_true", help="only the PyHessian and WeightWatcher comparisons")
    parser.add_argument("--score-only", action="store_true", help="only `audit score --all` against training")
    parser.add_argument("--repeats", type=int, default=3, help="timings per side in the peer comparison (best kept)")
    parser.add_argument("--probes", type=int, default=16, help="Hutchinson probes per trace timing")
    args = parser.parse_args()
    if args.score_only or args.peers_only:
        results = {"threads": torch.get_num_threads()}
        if args.score_only:
            results["score_against_training"] = score_against_training()
        else:
            results.update(peers=peers(args.repeats, args.probes), weightwatcher=weightwatcher_peer(args.repeats))
        if os.environ.get("OUT"):
            Path(os.environ["OUT"], "measures.json").write_text(json.dumps(results, indent=2))
        return
    names = [n for n in args.measures.split(",") if n] or [n for n in measures.names() if n != "rademacher"]
    results: dict = {"threads": torch.get_num_threads(), "score_against_training": score_against_training()}
    if args.store.exists():
        results["seconds_per_run"] = per_measure(args.store, names, args.runs)
        print(f"seconds per run on {args.store} (median of {args.runs} runs):")
        for name, seconds in sorted(results["seconds_per_run"].items(), key=lambda kv: -kv[1]):
            print(f"  {name:24s} {seconds:9.4f}")
    else:
        print(f"{args.store} does not exist: run `audit run` first for the per-measure timings")
    results["peers"] = peers(args.repeats, args.probes)
    results["weightwatcher"] = weightwatcher_peer(args.repeats)
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
