"""How cost grows: seconds per run of training and of each measure family against parameter count and train size.

Two axes on Fashion-MNIST (28×28, 10 classes), each run trained for --epochs epochs by audit's own trainer
(audit.train.loop.train_run, one run at a time, on the CPU):

  params  one-hidden-layer MLPs mlp-1xW, W = 128, 256, 512, 1024, 2048, on 5,000 images;
  size    mlp-1x256 on 1,000, 2,000, 5,000, 10,000 and 20,000 images;

and alexnet-small on 5,000 images, a model of its own (convolutions cost more per parameter than an MLP's
matrices). Training is timed as seconds per epoch of the trainer's loop (its steps and its per-epoch train and
test evaluations). Each run's measures are then computed as `audit score` computes them: one context per run
(audit.pipeline.score.context_for), every registered measure at its default settings in registry order (later
measures reuse what earlier ones cached), each measure's seconds added to its family. The context's labels are
the network's own predictions, so that every margin is positive as on a fitted run (a run trained for one epoch
has not fitted). The heavy measures (cost "heavy": sharpness, PAC-Bayes, Hessian, Rademacher, NTK) are timed on
the first two points of each axis and on the next ones while the time predicted from the points before stays
within --heavy-budget seconds a run; the points they skip are named.

The matmul rate (audit.models.flops.matmul_rate, a 1024³ fp32 product) is measured around every run, and
each run's seconds are rescaled to the median of those rates (a shared machine's speed drifts); that median
is kept with the fits, and `audit run --plan` and `audit score --plan` scale the fits by the ratio of it to
the rate of the machine they run on. Per quantity and axis the exponent k of seconds = c · size^k is fitted
by least squares on log-log.

    python bench/scaling.py              # about 10 minutes on 2 quiet cores (20 on the loaded ones of the docs)
    python bench/scaling.py --quick      # a smoke run: W = 64-256, 250-1,000 images, no alexnet-small
    python bench/scaling.py --write      # also rewrite docs/benchmarks.md's table and audit/pipeline/scaling.json
    OUT=/tmp python bench/scaling.py     # keeps the timings in $OUT/scaling.json (--load FILE --write writes them)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import measures  # noqa: E402
from audit.data.fitted import build_run_data
from audit.data.sources import DEBIAN_FASHION_DIR, load_base
from audit.errors import UsageError
from audit.models.flops import forward_flops, matmul_rate
from audit.models.registry import build_model
from audit.pipeline import scaling
from audit.pipeline.score import context_for
from audit.render.console import out_console
from audit.render.fit import plain_table
from audit.spec.run import RunSpec
from audit.store.files import read_run
from audit.train.device import Operational
from audit.train.loop import train_run

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench/scaling.py: begin -->", "<!-- bench/scaling.py: end -->"
NO_CHECKPOINTS = Operational(device="cpu", checkpoint_seconds=1e9)  # one write per run, at its end
SHAPE, CLASSES = (1, 28, 28), 10
FULL = {"widths": (128, 256, 512, 1024, 2048), "sizes": (1000, 2000, 5000, 10000, 20000), "width": 256,
        "train_size": 5000, "own": ("alexnet-small",), "budget": 60.0}
QUICK = {"widths": (64, 128, 256), "sizes": (250, 500, 1000), "width": 64, "train_size": 250, "own": (),
         "budget": 5.0}
HEAVY = {name for name in measures.names() if measures.get(name).cost == "heavy"}
FAMILY = {name: measures.get(name).family for name in measures.names()}


def spec_of(model: str, train_size: int, epochs: int) -> RunSpec:
    return RunSpec(dataset="fashion-mnist", train_size=train_size, model=model, epochs=epochs, fit_target=1.0,
                   loss_target=None)


def time_run(spec: RunSpec, folder: Path, heavy: bool, repeats: int = 1) -> dict:
    """Train the run, then time its measures (the heavy ones too when `heavy`): seconds per epoch of training,
    seconds per measure (each the least of `repeats` timings, a fresh run and context each time), and the
    reason of each measure that was not defined."""
    build_run_data(spec)  # built once beforehand: no point pays the first read of the dataset
    before = matmul_rate()
    epochs, seconds, results = [], {}, {}
    for repeat in range(repeats):
        path = folder / f"{spec.run_id}-{repeat}.h5"
        record = train_run(spec, path, NO_CHECKPOINTS)
        epochs.append(float(record.attrs["train_seconds"]) / max(int(record.attrs["epochs"]), 1))
        ctx = context_for(read_run(path), Operational(device="cpu"))
        ctx.y = ctx.logits().argmax(1)  # its own predictions: every margin positive, as on a fitted run
        results = {name: measures.evaluate(ctx, name) for name in measures.names() if heavy or name not in HEAVY}
        seconds = {n: min(r.seconds, seconds.get(n, float("inf"))) for n, r in results.items()}
    return {"model": spec.model, "train_size": spec.train_size, "train": min(epochs), "heavy": heavy,
            "rate": (before + matmul_rate()) / 2,  # the matmul rate around this point's timings
            "params": sum(p.numel() for p in ctx.raw_model.parameters() if p.requires_grad),
            "flops": forward_flops(ctx.raw_model, SHAPE), "seconds": seconds,
            "undefined": {n: r.reason for n, r in results.items() if r.value is None}}


def heavy_seconds(point: dict) -> float:
    return sum(s for n, s in point["seconds"].items() if n in HEAVY)


def predicted(done: list[tuple[float, dict]], value: float) -> float:
    """Heavy seconds at `value` of the axis, from the points before that timed them (linear from one)."""
    timed = [(v, heavy_seconds(p)) for v, p in done if p["heavy"]]
    if len(timed) >= 2:
        return scaling.fit_power([v for v, _ in timed], [h for _, h in timed]).at(value)
    return timed[-1][1] * value / timed[-1][0]


def run_axis(points: list[tuple[str, int, float]], cache: dict, folder: Path, options: dict,
             say: list[int]) -> list[dict]:
    """Time each (model, train size, axis value) in order: the heavy measures on the first two points and on
    the next while their predicted seconds stay within the budget."""
    done: list[tuple[float, dict]] = []
    for model, train_size, value in points:
        heavy = len(done) < 2 or predicted(done, value) <= options["budget"]
        point = cache.get((model, train_size))
        if point is None or (heavy and not point["heavy"]):
            point = cache[(model, train_size)] = time_run(spec_of(model, train_size, options["epochs"]), folder,
                                                                  heavy, options["repeats"])
            say[0] += 1
            print(f"  [{say[0]}/{say[1]}] {model} on {train_size:,}: train {point['train']:.2f} s/epoch, measures "
                  f"{sum(point['seconds'].values()):.1f} s (heavy {heavy_seconds(point):.1f} s)"
                  f"{'' if heavy else ', heavy not timed: over the budget'}", file=sys.stderr, flush=True)
        done.append((value, point))
    return [p for _, p in done]


def family_value(quantity: str, point: dict) -> float | None:
    """Seconds of a quantity at a point: training per epoch, or the sum over the family's measures timed
    there (None when the point did not time them)."""
    if quantity == scaling.TRAIN:
        return point["train"]
    members = [n for n, f in FAMILY.items() if f == quantity and n in point["seconds"]]
    if not members or any(n in HEAVY for n in members) and not point["heavy"]:
        return None
    return sum(point["seconds"][n] for n in members)


def fit_quantities(axes: dict[str, list[dict]]) -> dict[str, dict]:
    """Per quantity and axis: c and k of seconds = c · size^k, the points, and the worst factor off the line."""
    out: dict[str, dict] = {}
    for quantity in [scaling.TRAIN, *dict.fromkeys(FAMILY.values())]:
        for axis, points in axes.items():
            pairs = [(p["params"] if axis == "params" else p["train_size"], family_value(quantity, p))
                     for p in points]
            pairs = [(x, y) for x, y in pairs if y is not None]
            if len({x for x, _ in pairs}) < 2:
                continue
            sizes, seconds = [x for x, _ in pairs], [y for _, y in pairs]
            fit = scaling.fit_power(sizes, seconds)
            out.setdefault(quantity, {})[axis] = {"c": fit.c, "k": fit.k, "sizes": sizes, "seconds": seconds,
                                                  "worst": scaling.worst_factor(fit, sizes, seconds)}
    return out


def own_models(config: dict, reference: dict, folder: Path, say: list[int]) -> dict[str, dict]:
    """The models timed on their own at the reference train size, as points: heavy measures when their
    seconds, predicted from the reference run by the ratio of forward FLOPs, are within the budget."""
    out = {}
    for model in config["own"]:
        guess = heavy_seconds(reference) * scaling_flops(model) / reference["flops"]
        heavy = guess <= config["budget"]
        point = out[model] = time_run(spec_of(model, config["train_size"], config["epochs"]), folder, heavy,
                                      config["repeats"])
        point["heavy_predicted"] = None if heavy else guess
        say[0] += 1
        print(f"  [{say[0]}/{say[1]}] {model} on {config['train_size']:,}: train {point['train']:.2f} s/epoch, "
              f"measures {sum(point['seconds'].values()):.1f} s" + ("" if heavy else f" (heavy measures not timed:"
                                                                      f" about {guess:.0f} s predicted)"),
              file=sys.stderr, flush=True)
    return out


def own_entry(point: dict) -> dict:
    """What the plans read of a model timed on its own: its parameters, input, and seconds per quantity."""
    seconds = {q: family_value(q, point) for q in [scaling.TRAIN, *dict.fromkeys(FAMILY.values())]}
    return {"params": point["params"], "input_shape": list(SHAPE), "classes": CLASSES,
            "train_size": point["train_size"], "heavy_predicted": point["heavy_predicted"],
            "seconds": {q: s for q, s in seconds.items() if s is not None}}


def scaling_flops(model: str) -> int:
    return forward_flops(build_model(model, SHAPE, CLASSES), SHAPE)


def normalize(points: list[dict]) -> float:
    """A shared machine's speed drifts: each point's seconds are rescaled to the median of the matmul rates
    measured around the points (seconds × its rate / the median), which is returned and kept with the fits."""
    rates = sorted(p["rate"] for p in points)
    median = rates[len(rates) // 2] if len(rates) % 2 else (rates[len(rates) // 2 - 1] + rates[len(rates) // 2]) / 2
    for point in points:
        factor = point["rate"] / median
        point["train"] *= factor
        point["seconds"] = {n: s * factor for n, s in point["seconds"].items()}
    return median


def measure(config: dict) -> dict:
    """Every point of both axes and the models of their own, timed; the fits and what the plans read."""
    widths, sizes, width, size = config["widths"], config["sizes"], config["width"], config["train_size"]
    params_points = [(f"mlp-1x{w}", size, scaling.parameter_count(f"mlp-1x{w}", SHAPE, CLASSES)) for w in widths]
    size_points = [(f"mlp-1x{width}", n, n) for n in sizes]
    say = [0, len({(m, n) for m, n, _ in params_points + size_points}) + len(config["own"])]
    before, start = matmul_rate(), time.perf_counter()
    cache: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        warm = time.perf_counter()
        time_run(spec_of("mlp-1x32", 250, 1), folder, heavy=True)  # first-use costs (thread pools, torch.func)
        print(f"  warmed up (one small run, every measure) in {time.perf_counter() - warm:.0f} s", file=sys.stderr)
        axes = {"params": run_axis(params_points, cache, folder, config, say),
                "size": run_axis(size_points, cache, folder, config, say)}
        reference = cache[(f"mlp-1x{width}", size)]
        own = own_models(config, reference, folder, say)
    after = matmul_rate()
    rate = normalize([*cache.values(), *own.values()])
    undefined = {n: r for p in cache.values() for n, r in p["undefined"].items()
                 if all(n in q["undefined"] for q in cache.values() if n in q["seconds"])}
    return {"version": 1, "quick": False, "date": datetime.date.today().isoformat(),
            "matmul_rate": rate, "matmul_rates": [before, after],
            "point_rates": [p["rate"] for p in [*cache.values(), *own.values()]], "threads": torch.get_num_threads(),
            "torch": torch.__version__, "seconds": time.perf_counter() - start, "dataset": "fashion-mnist",
            "input_shape": list(SHAPE), "classes": CLASSES, "epochs": config["epochs"], "budget": config["budget"],
            "repeats": config["repeats"],
            "reference": {"model": f"mlp-1x{width}", "params": reference["params"], "train_size": size},
            "axes": {"params": {"model": "mlp-1xW", "widths": list(widths), "train_size": size,
                                "params": [p for _, _, p in params_points]},
                     "size": {"model": f"mlp-1x{width}", "sizes": list(sizes)}},
            "fits": fit_quantities(axes), "models": {model: own_entry(p) for model, p in own.items()},
            "measure_seconds": reference["seconds"], "measure_family": FAMILY, "undefined": undefined,
            "reference_seconds": {q: family_value(q, reference) for q in [scaling.TRAIN, *dict.fromkeys(FAMILY.values())]},
            "heavy_points": {axis: [p["params"] if axis == "params" else p["train_size"] for p in points
                                    if p["heavy"]] for axis, points in axes.items()}}


COLUMNS = ("quantity", "measures", "s at ref", "k params", "k size", "fit ×", "alexnet s")


def rows(data: dict) -> list[tuple[str, ...]]:
    """One row per quantity: its measures, seconds at the reference run, the two exponents (the points fitted
    in brackets where fewer than the axis has), the worst factor off either line, alexnet-small's seconds."""
    out = []
    full = {axis: len(entry["params" if axis == "params" else "sizes"]) for axis, entry in data["axes"].items()}
    own = data["models"].get("alexnet-small", {}).get("seconds", {})
    for quantity in [scaling.TRAIN, *dict.fromkeys(data["measure_family"].values())]:
        fits = data["fits"].get(quantity, {})
        ks = []
        for axis in ("params", "size"):
            fit = fits.get(axis)
            points = "" if fit is None or len(fit["sizes"]) == full[axis] else f" ({len(fit['sizes'])})"
            ks.append("—" if fit is None else f"{fit['k']:.2f}{points}")
        worst = max((f["worst"] for f in fits.values() if len(f["sizes"]) > 2), default=None)  # 2 points: on it
        count = sum(f == quantity for f in data["measure_family"].values())
        seconds = data["reference_seconds"].get(quantity)
        out.append(("train (per epoch)" if quantity == scaling.TRAIN else quantity,
                    "—" if quantity == scaling.TRAIN else str(count), "—" if seconds is None else f"{seconds:.3f}",
                    *ks, "—" if worst is None else f"{worst:.2f}",
                    "—" if own.get(quantity) is None else f"{own[quantity]:.3f}"))
    return out


def notes(data: dict) -> list[str]:
    """What the table does not show: how much the machine's speed drifted, where the heavy measures were timed,
    what was never defined, what was not measured and why."""
    ref = data["reference"]
    heavy = data["heavy_points"]
    rates = data.get("point_rates") or data["matmul_rates"]
    spread = f"the matmul rate around the runs ranged over {min(rates) / 1e9:.0f}-{max(rates) / 1e9:.0f} GFLOP/s"
    drift = ([f"{spread} (a loaded machine): single timings are noisy, and so are the exponents; rerun on a quiet "
              "machine"] if max(rates) > 2 * min(rates) else
             [f"{spread}; each run's seconds are rescaled to the median rate"] if max(rates) > 1.2 * min(rates) else [])
    lines = [*drift,f"reference run: {ref['model']} ({ref['params']:,} parameters) on {ref['train_size']:,} images; "
             f"params axis mlp-1xW, W = {', '.join(map(str, data['axes']['params']['widths']))} on "
             f"{data['axes']['params']['train_size']:,} images; size axis {data['axes']['size']['model']} on "
             f"{', '.join(f'{n:,}' for n in data['axes']['size']['sizes'])} images; {data['epochs']} epoch(s)",
             f"heavy measures ({', '.join(sorted(HEAVY))}) timed at params ≤ {max(heavy['params']):,} and train "
             f"size ≤ {max(heavy['size']):,} (the first two points of each axis, then within "
             f"{data['budget']:.0f} s a run); k (n): fitted to n points"]
    for name, reason in sorted(data["undefined"].items()):
        lines.append(f"{name} ({FAMILY.get(name, '?')}): undefined on every run timed, its ~0 s kept: {reason}")
    missing = [q for q in dict.fromkeys(data["measure_family"].values()) if q not in data["fits"]]
    if missing:
        lines.append(f"not fitted (timed at fewer than two points): {', '.join(missing)}")
    for model, entry in data["models"].items():
        if entry["heavy_predicted"] is not None:
            lines.append(f"{model}: heavy measures not timed (about {entry['heavy_predicted']:.0f} s a run "
                         f"predicted by forward FLOPs, over the {data['budget']:.0f} s budget)")
    if not data["models"]:
        lines.append("alexnet-small: not timed (--quick)")
    return lines


def header(data: dict) -> str:
    rates = ", ".join(f"{r / 1e9:.0f}" for r in data["matmul_rates"])
    return (f"{data['date']}, {data['threads']} threads, torch {data['torch']}: matmul rate {rates} GFLOP/s "
            f"before and after (1024³ fp32), seconds at {data['matmul_rate'] / 1e9:.0f} (the median around the "
            f"runs), {data['seconds'] / 60:.1f} min in all"
            + (" (--quick)" if data["quick"] else ""))


def markdown(data: dict) -> str:
    table = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    table += ["| " + " | ".join(row) + " |" for row in rows(data)]
    return "\n".join([header(data), "", *table, "", *(f"- {line}" for line in notes(data))])


def print_table(data: dict) -> None:
    console = out_console()
    console.print(header(data), highlight=False)
    table = plain_table(None)
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "quantity" else "right", no_wrap=True)
    for row in rows(data):
        table.add_row(*row)
    console.print(table)
    for line in notes(data):
        console.print(line, highlight=False)


def write(data: dict) -> None:
    """The fits into the data file the plans read, the table between the markers of docs/benchmarks.md."""
    scaling.DATA.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    text = DOCS.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{DOCS} has no {BEGIN} … {END} block (its section \"How cost grows\")")
    DOCS.write_text(pattern.sub(lambda _: f"{BEGIN}\n{markdown(data)}\n{END}", text))
    print(f"wrote {scaling.DATA.relative_to(ROOT)} and the table in {DOCS.relative_to(ROOT)}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: smaller axes, no alexnet-small")
    parser.add_argument("--epochs", type=int, default=1, help="epochs each run trains (default 1)")
    parser.add_argument("--heavy-budget", type=float, help="seconds a run the heavy measures may take "
                                                           "(default 60, --quick 5)")
    parser.add_argument("--repeats", type=int, default=1, help="timings per point, the least kept (a loaded "
                                                               "machine: 2 or 3)")
    parser.add_argument("--write", action="store_true", help="write audit/pipeline/scaling.json and the docs table")
    parser.add_argument("--load", type=Path, help="time nothing: print (and --write) the timings of an earlier "
                                                  "run, as $OUT/scaling.json or --write kept them")
    args = parser.parse_args()
    if args.load is not None:
        data = json.loads(args.load.read_text())
        print_table(data)
        if args.write:
            write(data)
        return
    try:
        load_base("fashion-mnist")
    except UsageError:
        print(f"Fashion-MNIST is not in {DEBIAN_FASHION_DIR}: apt-get install -y dataset-fashion-mnist, then run "
              "this again", file=sys.stderr)
        raise SystemExit(2) from None
    config = dict(QUICK if args.quick else FULL)
    config.update(epochs=args.epochs, repeats=args.repeats)
    if args.heavy_budget is not None:
        config["budget"] = args.heavy_budget
    print(f"timing {'the quick axes' if args.quick else 'both axes and alexnet-small'} on "
          f"{torch.get_num_threads()} threads (progress here, the table on stdout)", file=sys.stderr)
    data = measure(config)
    data["quick"] = args.quick
    print_table(data)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "scaling.json").write_text(json.dumps(data, indent=1))
    if args.write:
        write(data)


if __name__ == "__main__":
    main()
