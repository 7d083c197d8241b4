"""The `audit` command line: parse, call audit.*, render. No science in here."""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from typer._click import exceptions as typer_click_exceptions

import audit
import experiments
import measures
from audit.errors import UsageError, WorkError
from audit.pipeline.names import check_experiment, check_run
from audit.render import formats, tables

app = typer.Typer(
    help="Run the randomization test of Zhang et al. and audit generalization measures with it.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
list_app = typer.Typer(help="List models, measures, variants, datasets or experiments.", no_args_is_help=True)
app.add_typer(list_app, name="list")

err_console = Console(stderr=True)


def one_line(message: object) -> str:
    """A message on one line: control characters of echoed user input (a newline or carriage return in a
    dataset name, say) written as escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(message))


def _show_usage_error_in_one_line(self: Any, file: Any = None) -> None:
    """Click prints usage, a hint and the error on four lines; audit's contract is one line."""
    command = self.ctx.command_path if self.ctx is not None else "audit"
    print(f"audit: error: {one_line(self.format_message())} (see `{command} --help`)", file=file or sys.stderr)


typer_click_exceptions.UsageError.show = _show_usage_error_in_one_line


def out_console() -> Console:
    width = shutil.get_terminal_size((200, 40)).columns if sys.stdout.isatty() else 200
    return Console(width=max(width, 100), soft_wrap=False)


def guarded(command: Callable[..., Any]) -> Callable[..., Any]:
    """One line and exit code 2 for bad usage, 1 for failed work; never a traceback for a user error."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except UsageError as err:
            print(f"audit: error: {one_line(err)}", file=sys.stderr)
            raise typer.Exit(2) from None
        except WorkError as err:
            print(f"audit: failed: {one_line(err)}", file=sys.stderr)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            print("audit: interrupted; complete runs are kept and `audit run` resumes the rest", file=sys.stderr)
            raise typer.Exit(130) from None

    return wrapper


def version_callback(value: bool) -> None:
    if value:
        print(f"audit {audit.__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Run the randomization test of Zhang et al. and audit generalization measures with it."""


# ---------------------------------------------------------------- shared options

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else.")]
CorrectionOpt = Annotated[str, typer.Option(help="Multiple-testing correction of the p-values: holm, bh or none.")]
CsvOpt = Annotated[Optional[Path], typer.Option("--csv", help="Also write every statistic, a row per measure and "
                                                              "family, to this CSV file.")]
MarkdownOpt = Annotated[bool, typer.Option("--markdown", help="Print the verdict table as Markdown.")]
AtOpt = Annotated[Optional[str], typer.Option(
    "--at", help="Judge at a keep point of training (e.g. loss:0.1: every run at the same train loss) instead of "
                 "the end; the experiment must keep it (keep = [...] or run --keep).")]


def parse_checkpoint(text: Optional[str]) -> tuple[int, float]:
    """--checkpoint-every: N epochs (exactly), or Ns seconds; default every epoch, at most every 30 s."""
    if text is None:
        return 1, 30.0
    try:
        if text.endswith("s"):
            seconds = float(text[:-1])
            if seconds >= 0:
                return 1, seconds
        elif int(text) > 0:
            return int(text), 0.0
    except ValueError:
        pass
    raise UsageError(f"--checkpoint-every must be a positive number of epochs (5) or seconds (30s), got '{text}'")


def check_point(at: Optional[str]) -> Optional[str]:
    from audit.spec.experiment import parse_keep

    if at is not None:
        parse_keep([at], "--at")
    return at
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
DataDirOpt = Annotated[Optional[Path], typer.Option(
    "--data-dir", help="Folder of downloaded datasets (torchvision layout; for imagenet the folder holding "
                       "train/ and val/, or its parent holding imagenet/); default ~/.cache/audit/data.")]
DownloadOpt = Annotated[bool, typer.Option("--download", help="Download missing datasets (needs a network).")]


def store_path(store: Optional[Path]) -> Any:
    from audit.store.directory import open_store

    return open_store(store)


class Reporter:
    """Progress on stderr: a rich bar on a terminal, a line per run otherwise."""

    def __init__(self, quiet: bool) -> None:
        self.live = not quiet and err_console.is_terminal
        self.quiet = quiet
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=err_console,
                                 transient=True)
        self.runs = self.epochs = None

    def __enter__(self) -> "Reporter":
        if self.live:
            self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live:
            self.progress.stop()

    def on_run(self, index: int, total: int, spec: Any, state: str) -> None:
        label = f"{spec.run_id} {spec.variant_label} seed {spec.seed}"
        if self.live:
            if self.runs is None:
                self.runs = self.progress.add_task("runs", total=total, info="")
                self.epochs = self.progress.add_task("epochs", total=spec.epochs, info="")
            self.progress.update(self.runs, completed=index, info=label)
            self.progress.reset(self.epochs, total=spec.epochs, info="")
        elif not self.quiet:
            print(f"[{index + 1}/{total}] {label}: {state}", file=sys.stderr)

    def on_epoch(self, epoch: int, epochs: int, train_acc: float) -> None:
        if self.live and self.epochs is not None:
            self.progress.update(self.epochs, completed=epoch, total=epochs, info=f"train acc {train_acc:.3f}")

    def on_score(self, run_id: str, index: int, total: int) -> None:
        if self.live:
            if self.runs is None:
                self.runs = self.progress.add_task("scoring", total=total, info="")
            self.progress.update(self.runs, completed=index, info=run_id)


def parse_settings(values: list[str]) -> dict[str, dict[str, Any]]:
    """--set NAME.KEY=VALUE → {NAME: {KEY: VALUE}}."""
    out: dict[str, dict[str, Any]] = {}
    for text in values:
        target, sep, raw = text.partition("=")
        name, dot, key = target.partition(".")
        if not sep or not dot:
            raise UsageError(f"--set '{text}': write MEASURE.SETTING=VALUE, e.g. margin.percentile=5")
        measures.get(name)
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(name, {})[key] = value
    for name, overrides in out.items():
        measures.resolved_settings(name, overrides)
    return out


def score_and_report(store: Any, names: list[str], ops: Any, output: "Output", reporter: Reporter,
                     settings: dict[str, dict[str, Any]], recompute: bool = False, show: list[str] | None = None,
                     extra_errors: list[str] | None = None, at: str | None = None,
                     only: set[str] | None = None) -> int:
    from audit.judge.rows import run_rows
    from audit.pipeline.score import score_store

    outcome = score_store(store, names, ops, settings, recompute=recompute, on_run=reporter.on_score, at=at,
                          only=only)
    errors = (extra_errors or []) + outcome.errors
    rows = run_rows(outcome.records, names, at)
    emit(store, rows, names, errors, output, show if show is not None else [])
    failed = errors or any(r["status"] == "diverged" for r in rows)
    return 1 if failed else 0


class Output:
    """How results are printed: a table (default), one JSON document, Markdown, and optionally a CSV file."""

    def __init__(self, as_json: bool = False, markdown: bool = False, csv: Optional[Path] = None,
                 correction: str = "holm") -> None:
        from audit.judge.verdict import CORRECTIONS

        if correction not in CORRECTIONS:
            raise UsageError(f"unknown correction '{correction}': use one of {', '.join(CORRECTIONS)}")
        if as_json and markdown:
            raise UsageError("--json and --markdown are exclusive: choose one")
        self.as_json, self.markdown, self.csv, self.correction = as_json, markdown, csv, correction


def emit(store: Any, rows: list[dict[str, Any]], names: list[str], errors: list[str], output: Output,
         show: list[str]) -> None:
    from audit.judge.verdict import judge

    judgement = judge(rows, measures.judged(names), output.correction)
    if output.csv is not None:
        formats.write_csv(output.csv, judgement)
    if output.as_json:
        print(formats.dumps(formats.document(str(store.root), rows, judgement, errors)))
    elif output.markdown:
        print(formats.markdown_table(judgement))
    else:
        tables.print_tables(out_console(), rows, judgement, show, str(store.root))
    for line in errors:
        print(f"audit: {line}", file=sys.stderr)


def resolve_names(measure: list[str], all_: bool) -> list[str]:
    if all_:
        return measures.names()
    if measure:
        for name in measure:
            measures.get(name)
        return list(dict.fromkeys(measure))
    return measures.names(default_only=True)


# ---------------------------------------------------------------- commands

@app.command()
@guarded
def run(
    experiment: Annotated[str, typer.Argument(help="A shipped experiment name or a .toml file.")] = "quick",
    dataset: Annotated[Optional[str], typer.Option(
        help="Dataset: digits, mnist, fashion-mnist, cifar10, cifar100, svhn, imagenet, folder:PATH.")] = None,
    model: Annotated[Optional[str], typer.Option(help="Model name, e.g. mlp-1x512 (see `audit list models`).")] = None,
    variants: Annotated[Optional[str], typer.Option(
        help="Comma-separated variants: true, corrupt:P, random-labels, shuffled-pixels, random-pixels, gaussian.")] = None,
    seeds: Annotated[Optional[int], typer.Option(help="Number of seeds: seeds 0..N-1.")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Most epochs per run.")] = None,
    train_size: Annotated[Optional[int], typer.Option(help="Stratified, seeded subset of the train set.")] = None,
    preprocess: Annotated[Optional[str], typer.Option(
        help="Preprocessing: standard, paper, none, or imagenet[:SIZE] for the imagenet dataset (resize to "
             "SIZE·342/299, centre crop SIZE, default 299).")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Learning rate.")] = None,
    lr_decay: Annotated[Optional[float], typer.Option(help="Learning rate multiplied by this every epoch.")] = None,
    momentum: Annotated[Optional[float], typer.Option(help="SGD momentum.")] = None,
    weight_decay: Annotated[Optional[float], typer.Option(help="Weight decay (L2).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Minibatch size.")] = None,
    corrupt_test: Annotated[Optional[bool], typer.Option(
        "--corrupt-test/--clean-test", help="Corrupt the test labels like the train labels (default clean).",
        show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option(help="Store directory (default ./audit-runs/<name>).")] = None,
    measure: Annotated[list[str], typer.Option(help="Measure to score after training (repeatable).")] = [],
    all_measures: Annotated[bool, typer.Option("--all", help="Score every registered measure.")] = False,
    device: DeviceOpt = "auto",
    checkpoint_every: Annotated[Optional[str], typer.Option(
        help="Checkpoint every N epochs (e.g. 1) or every N seconds (e.g. 30s). Default: every epoch, at most "
             "one write per 30 s.")] = None,
    keep: Annotated[Optional[str], typer.Option(
        help="Comma-separated points of training whose weights are kept: epoch:N, loss:X (first reached).")] = None,
    batch: Annotated[bool, typer.Option("--batch/--no-batch", help="Train runs of one architecture and data size "
                                        "together as one batched model (default where it applies).")] = True,
    precision: Annotated[str, typer.Option(help="auto (bf16 autocast for conv models on CUDA), fp32 or bf16.")] = "auto",
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the model (GPU path).")] = False,
    data_dir: DataDirOpt = None,
    download: DownloadOpt = False,
    correction: CorrectionOpt = "holm",
    shard: Annotated[Optional[str], typer.Option(
        help="Run a deterministic 1/N of the grid: I/N (every N-th run from the I-th), for job arrays.")] = None,
    backend: Annotated[str, typer.Option(help="local (this process) or ray (a task per training group).")] = "local",
    address: Annotated[Optional[str], typer.Option(help="Ray cluster address (default: start a local Ray).")] = None,
    cpus_per_run: Annotated[float, typer.Option(help="Ray: CPUs per task (also its torch threads).")] = 1,
    gpus_per_run: Annotated[float, typer.Option(help="Ray: GPUs per task.")] = 0,
    ddp: Annotated[bool, typer.Option("--ddp", help="Data-parallel training of each run over the processes of a "
                                                    "torchrun launch; rank 0 writes the store.")] = False,
    plan: Annotated[bool, typer.Option("--plan", help="Validate and list the runs the experiment would train, "
                                                      "with their state in the store; train nothing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Train every run of an experiment into its store (skipping complete runs, resuming the rest),
    score the measures and print the verdict table. Without an argument it runs the quick audit."""
    from audit.pipeline.grid import apply_overrides, store_name
    from audit.train.device import Operational, resolve_device

    output = Output(as_json, correction=correction)
    spec = experiments.load(experiment)
    overrides = {"dataset": dataset, "model": model, "epochs": epochs, "train_size": train_size,
                 "preprocess": preprocess, "lr": lr,
                 "lr_decay": lr_decay, "momentum": momentum, "weight_decay": weight_decay,
                 "batch_size": batch_size, "corrupt_test": corrupt_test, "seeds": seeds,
                 "variants": [v.strip() for v in variants.split(",") if v.strip()] if variants is not None else None}
    spec = check_experiment(apply_overrides(spec, overrides))
    names = resolve_names(measure, all_measures)
    if not measure and not all_measures and all(r.model.startswith("kernel-") for r in spec.expand()):
        names = ["rkhs-norm"]  # a kernel experiment: its measure is stored when each run is fitted
    every, seconds = parse_checkpoint(checkpoint_every)
    resolve_device(device)
    if keep is not None:
        from audit.spec.experiment import parse_keep

        spec = dataclasses.replace(spec, keep=parse_keep([k.strip() for k in keep.split(",") if k.strip()], "--keep"))
    from audit.pipeline.grid import parse_shard

    shard_range = parse_shard(shard)
    if backend not in ("local", "ray"):
        raise UsageError(f"unknown backend '{backend}': use local or ray")
    if ddp and backend != "local":
        raise UsageError("--ddp trains one run over the processes of a torchrun launch: use it with --backend local")
    ops = Operational(device=device, checkpoint_every=every, checkpoint_seconds=seconds, data_dir=data_dir,
                      download=download, keep=spec.keep, batch=batch and not ddp, precision=precision,
                      compile=compile_, ddp=ddp)
    root = out or store_name(spec, overrides)
    if root.exists() and not root.is_dir():
        raise UsageError(f"store path {root} is a file; choose a directory with --out")
    if plan:
        print_plan(spec, root, as_json, shard_range)
        return
    from audit.data.fitted import build_run_data
    from audit.data.sources import load_base

    for dataset, size in sorted({(r.dataset, r.train_size or 0) for r in spec.expand()}):
        available = len(load_base(dataset, data_dir, download).y_train)  # missing data fails here, before any store
        if size > available:
            raise UsageError(f"train size {size} is larger than the {available} training images of {dataset}")
    build_run_data(spec.expand()[0], data_dir, download)
    if backend == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UsageError("the Ray backend needs Ray: pip install -e '.[ray]'") from None
    leave = None
    if ddp:
        from audit.train.ddp import init_ddp

        leave = init_ddp(device)
    try:
        code = train_and_report(spec, root, ops, names, output, shard_range, backend, address, cpus_per_run,
                                gpus_per_run)
    finally:
        if leave is not None:
            leave()
    raise typer.Exit(code)


def train_and_report(spec: Any, root: Path, ops: Any, names: list[str], output: Output, shard: Any, backend: str,
                     address: Optional[str], cpus_per_run: float, gpus_per_run: float) -> int:
    from audit.pipeline.grid import run_grid, shard_of
    from audit.store.directory import create_store

    with Reporter(quiet=False) as reporter:
        if backend == "ray":
            from audit.pipeline.ray import run_with_ray

            outcome = run_with_ray(spec, root, ops, address, cpus_per_run, gpus_per_run, shard, reporter.on_run)
        else:
            outcome = run_grid(spec, root, ops, on_run=reporter.on_run, on_epoch=reporter.on_epoch, shard=shard)
        from audit.train.device import ddp_world

        if ops.ddp and ddp_world()[0] != 0:
            return 0  # rank 0 scores and reports
        store = create_store(root)
        for line in outcome.skipped:  # another process trains them: not a failure, and it is reported
            print(f"audit: {line}", file=sys.stderr)
        only = {s.run_id for s in shard_of(spec.expand(), shard)} if shard else None
        return score_and_report(store, names, ops, output, reporter, {}, extra_errors=outcome.errors, only=only)


@app.command()
@guarded
def score(
    store: Annotated[Optional[Path], typer.Argument(help="Store directory (default: the latest under ./audit-runs).")] = None,
    measure: Annotated[list[str], typer.Option(help="Measure name (repeatable).")] = [],
    all_measures: Annotated[bool, typer.Option("--all", help="Every registered measure.")] = False,
    setting: Annotated[list[str], typer.Option("--set", help="Measure setting, NAME.KEY=VALUE (repeatable).")] = [],
    recompute: Annotated[bool, typer.Option(help="Ignore cached values.")] = False,
    device: DeviceOpt = "auto",
    data_dir: DataDirOpt = None,
    at: AtOpt = None,
    correction: CorrectionOpt = "holm",
    csv: CsvOpt = None,
    markdown: MarkdownOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Compute measures on every complete run of a store, cache them in the run files, and print them
    per run with their verdicts. Without --measure, the default set."""
    from audit.train.device import Operational, resolve_device

    output = Output(as_json, markdown, csv, correction)
    names = resolve_names(measure, all_measures)
    settings = parse_settings(setting)
    resolve_device(device)
    target = store_path(store)
    ops = Operational(device=device, data_dir=data_dir)
    with Reporter(quiet=False) as reporter:
        code = score_and_report(target, names, ops, output, reporter, settings, recompute,
                                show=names if len(names) <= 6 else [], at=check_point(at))
    raise typer.Exit(code)


@app.command("report")
@guarded
def report_command(
    store: Annotated[Optional[Path], typer.Argument(help="Store directory (default: the latest under ./audit-runs).")] = None,
    measure: Annotated[list[str], typer.Option(help="Show only this measure, run by run (repeatable).")] = [],
    paper: Annotated[Optional[str], typer.Option(
        help="Print our numbers beside the paper's, row by row: table1, table2 (ImageNet) or fig1.")] = None,
    at: AtOpt = None,
    correction: CorrectionOpt = "holm",
    csv: CsvOpt = None,
    markdown: MarkdownOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Print the runs and verdicts of a store from its cached measures (computes nothing): per measure, the
    randomization test (auc with its interval, trend with its corrected p, input-axis comparisons) beside the
    hyperparameter protocols (Kendall tau, granulated psi, sign-error, CMI with its sign)."""
    from audit.judge.rows import run_rows
    from audit.pipeline.grid import open_for_report

    output = Output(as_json, markdown, csv, correction)
    check_point(at)
    if paper is not None:
        from audit.judge.paper import PAPERS

        if paper not in PAPERS:
            raise UsageError(f"unknown paper comparison '{paper}': use one of {', '.join(PAPERS)}")
    target = store_path(store)
    for name in measure:
        measures.get(name)
    records, errors = open_for_report(target)
    suffix = "" if at is None else f"@{at}"
    stored = {key[: len(key) - len(suffix)] for r in records for key in r.measures if key.endswith(suffix)}
    cached = [n for n in measures.names() if n in stored]
    names = list(dict.fromkeys(measure)) or cached
    rows = run_rows(records, names, at)
    if paper is not None:
        print_paper(paper, rows, as_json)
    else:
        emit(target, rows, names, errors, output, list(measure))
    raise typer.Exit(1 if errors else 0)


def print_plan(spec: Any, root: Path, as_json: bool, shard: tuple[int, int] | None = None) -> None:
    """The runs of an experiment (or of its shard) and what `audit run` would do with each."""
    from audit.pipeline.grid import shard_of
    from audit.store.files import read_run

    items = []
    for run in shard_of(spec.expand(), shard):
        path = root / "runs" / f"{run.run_id}.h5"
        try:
            state = read_run(path, weights=False).status if path.exists() else "new"
        except WorkError:
            state = "corrupt (retrained)"
        items.append({"run_id": run.run_id, "variant": run.variant_label, "seed": run.seed, "model": run.model,
                      "dataset": run.dataset, "state": state, "spec": run.to_dict()})
    if as_json:
        print(formats.dumps({"store": str(root), "runs": items}))
        return
    print_items(items, False, ["run_id", "variant", "seed", "model", "dataset", "state"],
                note=f"store {root}: {sum(i['state'] != 'complete' for i in items)} of {len(items)} runs to train")


def print_paper(paper: str, rows: list[dict[str, Any]], as_json: bool) -> None:
    from rich.table import Table

    from audit.judge.paper import compare

    lines = compare(paper, rows)
    if as_json:
        print(formats.dumps({"paper": paper, "rows": lines}))
        return
    table = Table(title=f"ours beside Zhang et al. 2017, {paper}", title_justify="left")
    for column in lines[0]:
        table.add_column(column, justify="left" if column in ("model", "variant", "quantity") else "right")
    for line in lines:
        table.add_row(*(tables.fmt(v, 2) for v in line.values()))
    console = out_console()
    console.print(table)
    console.print("— : no matching complete run in this store. Figure 1 values are read off the figure (≈).")


@app.command()
@guarded
def plot(
    store: Annotated[Optional[Path], typer.Argument(help="Store directory (default: the latest under ./audit-runs).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Folder for the figures (default STORE/figures).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="png, svg or pdf.")] = "png",
    measure: Annotated[list[str], typer.Option(help="Also plot this measure against p (repeatable; default: "
                                                     "every cached measure).")] = [],
) -> None:
    """Write the paper's Figure 1 panels from a store (1a training loss against steps per variant, 1b time to
    fit relative to true labels against p, 1c test error against p with chance marked) and each measure
    against p with seeds as points. Needs matplotlib: pip install -e '.[plot]'."""
    from audit.judge.rows import run_rows
    from audit.pipeline.grid import open_for_report
    from audit.render.plots import pyplot, write_figures

    pyplot()  # a missing matplotlib is a usage error before any work
    target = store_path(store)
    for name in measure:
        measures.get(name)
    records, errors = open_for_report(target)
    stored = {key for r in records for key in r.measures}
    names = list(dict.fromkeys(measure)) or [n for n in measures.names() if n in stored]
    rows = run_rows(records, names)
    classes = max((int(r.data.get("num_classes", 100 if r.spec.dataset == "cifar100" else 10)) for r in records),
                  default=10)  # files written before num_classes was recorded: the registered datasets' count
    written = write_figures(records, rows, names, out or target.root / "figures", fmt, classes)
    for path in written:
        print(path)
    for line in errors:
        print(f"audit: {line}", file=sys.stderr)
    raise typer.Exit(1 if errors else 0)


@app.command()
@guarded
def show(
    args: Annotated[list[str], typer.Argument(help="[STORE] RUN_ID", metavar="[STORE] RUN_ID")],
    as_json: JsonOpt = False,
) -> None:
    """Print one run: spec, status, history summary and cached measures."""
    from audit.store.files import read_run

    if len(args) not in (1, 2):
        raise UsageError("give a run id, optionally after the store: audit show [STORE] RUN_ID")
    target = store_path(Path(args[0]) if len(args) == 2 else None)
    run_id = args[-1]
    matches = [p for p in target.run_paths() if p.stem.startswith(run_id)]
    if len(matches) != 1:
        what = "no run" if not matches else f"{len(matches)} runs"
        raise UsageError(f"{what} in {target.root} matching '{run_id}'; see `audit report {target.root}`")
    record = read_run(matches[0], weights=False)
    history = {k: v.tolist() for k, v in record.history.items()}
    document = {"run_id": record.run_id, "path": str(matches[0]), "spec": record.spec.to_dict(),
                "status": record.status, "fitted": record.fitted, "attrs": record.attrs,
                "data": {k: v for k, v in record.data.items() if not hasattr(v, "shape")},
                "history": history,
                "measures": {k: {kk: vv for kk, vv in v.items() if kk != "detail"} for k, v in record.measures.items()}}
    if as_json:
        print(formats.dumps(document))
        return
    console = out_console()
    console.print(f"run {record.run_id}  {matches[0]}")
    console.print(f"status {record.status}, fitted {tables.fmt(record.fitted)}")
    for key, value in record.spec.to_dict().items():
        console.print(f"  {key:<14} {value}")
    from rich.table import Table

    table = Table(title="history (every evaluation)", title_justify="left")
    for column in ("epoch", "step", "lr", "train_loss", "train_acc", "test_loss", "test_acc"):
        table.add_column(column, justify="right")
    rows = list(zip(*(history[c] for c in ("epoch", "step", "lr", "train_loss", "train_acc", "test_loss", "test_acc"))))
    picked = rows if len(rows) <= 12 else rows[:5] + rows[-6:]
    for row in picked:
        table.add_row(*(tables.fmt(int(v) if i < 2 else v, 4) for i, v in enumerate(row)))
    console.print(table)
    for key in ("train_seconds", "samples_seen", "steps_to_fit", "epochs_to_fit", "best_test_acc", "device"):
        console.print(f"  {key:<14} {tables.fmt(record.attrs.get(key))}")
    if record.measures:
        mt = Table(title="measures", title_justify="left")
        for column in ("measure", "value", "seconds", "note"):
            mt.add_column(column)
        for name, entry in record.measures.items():
            mt.add_row(name, tables.fmt(entry.get("value"), 5), tables.fmt(entry.get("seconds"), 3),
                       entry.get("reason") or "")
        console.print(mt)


@app.command()
@guarded
def expressivity(
    n: Annotated[Optional[int], typer.Option("--n", help="Number of random Gaussian points (default 1000).")] = None,
    d: Annotated[Optional[int], typer.Option("--d", help="Their dimension (default 50).")] = None,
    dataset: Annotated[Optional[str], typer.Option(
        help="Use a dataset's raw train inputs, flattened, instead of Gaussian points (e.g. digits).")] = None,
    train_size: Annotated[Optional[int], typer.Option(help="Stratified, seeded subset of the dataset.")] = None,
    variant: Annotated[str, typer.Option(
        help="Labels: true, corrupt:P or random-labels (Gaussian points have only random labels).")] = "random-labels",
    targets: Annotated[str, typer.Option(
        help="labels (the variant's class indices) or real (standard Gaussian real values).")] = "labels",
    seed: Annotated[int, typer.Option(help="Seed of the points, labels, targets and the direction a.")] = 0,
    depth: Annotated[int, typer.Option(help="Also build the corollary's depth-k network (k linear layers, width "
                                            "⌈n/(k−2)⌉ + 3, O(n + d) nonzero weights) from it; 2: Theorem 1's "
                                            "only.")] = 2,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Build the two-layer ReLU network of Theorem 1 (Zhang et al. §4) that fits n points in d dimensions
    exactly with 2n + d weights, c(x) = Σ_j w_j max(⟨a, x⟩ − b_j, 0), in float64, and check it: the number
    of weights, the largest interpolation error, the condition number of the triangular system A w = y, the
    weight norms, and how the error grows with n (100, 200, 400, ... n). Class labels are fitted as one real
    output equal to the label index. Duplicate inputs are merged (refused when their targets differ); a
    direction a whose projections nearly tie is replaced by another seeded one."""
    from audit.theory.expressivity import expressivity as build

    if dataset is None:
        if train_size is not None:
            raise UsageError("--train-size applies to --dataset; for Gaussian points give --n")
        n, d = 1000 if n is None else n, 50 if d is None else d
    elif n is not None or d is not None:
        raise UsageError("--n and --d are for Gaussian points; with --dataset use --train-size (d is the image size)")
    document = build(n or 0, d or 0, dataset, train_size, variant, targets, seed, data_dir, depth)
    if as_json:
        print(formats.dumps(document))
        return
    console = out_console()
    console.print(f"{document['points']:,} points in {document['d']} dimensions ({document['inputs']}), "
                  f"targets: {document['variant'] or 'real values'}; {document['merged_duplicates']} duplicates merged")
    rows = [("weights (2n + d)", f"{document['weights']:,}"), ("max |c(x_i) − y_i|", tables.fmt(document["max_error"], 3)),
            ("condition number of A", f"{tables.fmt(document['condition_number'], 3)} ({document['condition_norm']})"),
            ("smallest projection gap / spread", tables.fmt(document["relative_gap"], 3)),
            ("directions tried", str(document["directions_tried"])),
            ("‖a‖, ‖b‖, ‖w‖", ", ".join(tables.fmt(document[k], 4) for k in ("norm_a", "norm_b", "norm_w")))]
    if "accuracy" in document:
        rows.append(("train accuracy (nearest label)", tables.fmt(document["accuracy"], 4)))
    print_items([{"quantity": k, "value": v} for k, v in rows], False, ["quantity", "value"])
    print_items(document["growth"], False, ["n", "max_error", "condition_number", "relative_gap"],
                note="error and conditioning against n (the first n points, directions from the same seed)")
    if "deep" in document:
        deep = document["deep"]
        print_items([{"quantity": k.replace("_", " "), "value": tables.fmt(v, 3) if isinstance(v, float) else f"{v:,}"}
                     for k, v in deep.items()], False, ["quantity", "value"],
                    note=f"the corollary's depth-{deep['depth']} network, built from the two-layer one")


@app.command()
@guarded
def kernel(
    dataset: Annotated[str, typer.Option(help="digits, fashion-mnist, mnist or cifar10.")] = "fashion-mnist",
    train_size: Annotated[Optional[int], typer.Option(help="Stratified, seeded subset of the train set "
                                                           "(default 4000; 0 = all of it).")] = 4000,
    variant: Annotated[str, typer.Option(help="true, corrupt:P or random-labels (test labels stay clean).")] = "true",
    kind: Annotated[str, typer.Option("--kernel", help="gaussian, laplace, linear or polynomial.")] = "gaussian",
    bandwidth: Annotated[Optional[float], typer.Option(
        help="σ of the gaussian/laplace kernel (default: the median distance between train points).")] = None,
    ridge: Annotated[float, typer.Option(help="Solve (K + ridge·I) α = Y; 0 = exact interpolation.")] = 0.0,
    degree: Annotated[int, typer.Option(help="Degree of the polynomial kernel (x·x'/d + 1)^degree.")] = 2,
    features: Annotated[str, typer.Option(
        help="raw (pixels in [0, 1], flattened) or random-conv (a seeded random conv layer, ReLU, pooling).")] = "raw",
    seed: Annotated[int, typer.Option(help="Seed of the label variant, the bandwidth subset and the features.")] = 0,
    preprocess: Annotated[str, typer.Option(help="none (raw pixels, the paper's choice), standard or paper.")] = "none",
    out: Annotated[Optional[Path], typer.Option(
        help="Also write the fit into this store as a run (model kernel-...), for `audit report`.")] = None,
    device: DeviceOpt = "cpu",
    data_dir: DataDirOpt = None,
    download: DownloadOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Minimum-norm kernel interpolation (Zhang et al. §5): solve K α = Y for one-hot train labels Y by a
    float64 Cholesky in torch (a tiny jitter only if K is numerically singular), and report train error, test
    error on the clean test labels, the RKHS norm sqrt(Σ_c α_cᵀ K α_c) (summed over the classes c), time and
    memory. Before building K it estimates the memory and refuses (exit 1) when K would not fit."""
    from audit.theory.kernel_runs import fit_run, kernel_spec, store_kernel_run
    from audit.train.device import resolve_device

    spec = check_run(kernel_spec(dataset, train_size or None, variant, kind, bandwidth, ridge, features, degree,
                                 seed, preprocess))
    target = str(resolve_device(device))
    store = None
    if out is not None:
        from audit.store.directory import create_store

        store = create_store(out)
        store.read_experiment()  # a corrupt experiment.json stops this before the fit, the file unchanged
    stage = (lambda text: None) if as_json else (lambda text: err_console.print(f"audit: {text}", style="dim"))
    outcome = fit_run(spec, data_dir, target, download, on_stage=stage)
    document = dict(outcome.summary)
    if store is not None:
        store_kernel_run(store, spec, outcome)
        document["store"] = str(store.root)
    if as_json:
        print(formats.dumps(document))
        return
    keys = ["dataset", "train_size", "variant", "model", "bandwidth", "jitter", "train_error", "train_residual",
            "test_error", "rkhs_norm", "seconds", "solve_seconds", "memory_gib"]
    print_items([{"quantity": k, "value": document[k]} for k in keys], False, ["quantity", "value"],
                note=f"run {spec.run_id}" + (f" written to {document['store']}" if store is not None else ""))


@app.command("import")
@guarded
def import_command(
    store: Annotated[Path, typer.Argument(help="Store directory to add the run to (created if missing).")],
    model: Annotated[str, typer.Option(help="module:function returning the torch model (importable from here).")],
    init: Annotated[Path, typer.Option(help="state_dict of the model at initialization (torch.save).")],
    final: Annotated[Path, typer.Option(help="state_dict of the trained model (torch.save).")],
    dataset: Annotated[str, typer.Option(help="The dataset it was trained on.")] = "digits",
    variant: Annotated[str, typer.Option(help="The variant it was trained on: true, corrupt:P, random-labels, ...")] = "true",
    seed: Annotated[int, typer.Option(help="The seed of the variant (it regenerates the fitted labels).")] = 0,
    train_size: Annotated[Optional[int], typer.Option(help="Stratified subset it was trained on.")] = None,
    preprocess: Annotated[str, typer.Option(help="standard, paper or none.")] = "standard",
    as_json: JsonOpt = False,
) -> None:
    """Add a model trained elsewhere to a store as a complete run, so that `audit score` and `audit report`
    judge it like the others. Its data are rebuilt from the dataset, variant and seed given here."""
    from audit.pipeline.importer import import_run
    from audit.spec.names import parse_variant
    from audit.spec.run import RunSpec
    from audit.store.directory import create_store

    name, p = parse_variant(variant)
    spec = check_run(RunSpec(dataset=dataset, model=model, variant=name, corrupt=p, seed=seed,
                             train_size=train_size, preprocess=preprocess))
    for path in (init, final):
        if not path.is_file():
            raise UsageError(f"state_dict file {path} does not exist")
    target = create_store(store)
    record = import_run(target, spec, init, final)
    summary = {"store": str(target.root), "run_id": record.run_id, "train_acc": record.attrs["train_acc"],
               "test_acc": record.attrs["test_acc"], "fitted": record.fitted}
    if as_json:
        print(formats.dumps(summary))
    else:
        out_console().print(f"imported run {record.run_id} into {target.root}: train acc "
                            f"{record.attrs['train_acc']:.4f}, test acc {record.attrs['test_acc']:.4f}, "
                            f"fitted {tables.fmt(record.fitted)}")


@list_app.command("models")
@guarded
def list_models(as_json: JsonOpt = False) -> None:
    """The model registry, with parameter counts for the digits input (1×8×8, 10 classes)."""
    from audit.models.registry import MODELS, build_model, count_params

    def params(name: str, shape: tuple[int, ...]) -> Optional[int]:
        try:
            return count_params(build_model(name, shape, 10))
        except UsageError:  # a model for larger images only (inception-v3: RGB, at least 75×75)
            return None

    items = [{"name": e.name, "description": e.description, "params_digits": params(e.name, (1, 8, 8)),
              "params_cifar28": params(e.name, (3, 28, 28))} for e in MODELS.values()]
    print_items(items, as_json, ["name", "params_digits", "params_cifar28", "description"],
                note="mlp-DxW works for any depth D and width W; — : the model does not take that input")


@list_app.command("measures")
@guarded
def list_measures(
    as_json: JsonOpt = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the catalogue page (docs/measures.md).")] = False,
) -> None:
    """The measure catalogue with each measure's metadata."""
    items = [measures.get(n).metadata() for n in measures.names()]
    if markdown:
        print(formats.catalogue_markdown(items))
        return
    print_items(items, as_json, ["name", "family", "direction", "cost", "needs", "settings", "formula"])


@list_app.command("variants")
@guarded
def list_variants(as_json: JsonOpt = False) -> None:
    """The data variants of the randomization test."""
    from audit.spec.run import INPUT_VARIANTS

    text = {
        "true": "the dataset unchanged",
        "corrupt:P": "each train label replaced, with probability P, by a class drawn uniformly from all classes",
        "random-labels": "corrupt:1, every label drawn uniformly",
        "shuffled-pixels": "one random permutation of pixel positions for all images, train and test",
        "random-pixels": "an independent random permutation of pixel positions per image, train and test",
        "gaussian": "images replaced by Gaussian noise with the raw train set's per-channel mean and variance",
    }
    items = [{"name": k, "axis": "input" if k in INPUT_VARIANTS else "label", "description": v} for k, v in text.items()]
    print_items(items, as_json, ["name", "axis", "description"])


@list_app.command("datasets")
@guarded
def list_datasets(as_json: JsonOpt = False) -> None:
    """Datasets audit can load."""
    from audit.data.sources import DATASETS

    items = [{"name": e.name, "description": e.meta["description"]} for e in DATASETS.entries()]
    items += [{"name": p.label, "description": p.meta["description"]} for p in DATASETS.patterns()]
    print_items(items, as_json, ["name", "description"])


@list_app.command("experiments")
@guarded
def list_experiments(as_json: JsonOpt = False) -> None:
    """The shipped experiments, how many runs each has, and its rough cost: an upper bound in which every run
    trains its whole epoch budget (runs stop earlier once fitted)."""
    from audit.pipeline.cost import estimate

    items = []
    for name in experiments.names():
        spec = experiments.load(name)
        cost = estimate(spec)
        items.append({"name": name, "runs": cost["runs"], "store": spec.store, "description": spec.description,
                      "max_pflop": round(cost["max_pflop"], 3), "cpu_hours_at_most": round(cost["cpu_hours"], 2),
                      "gpu_hours_at_most": round(cost["gpu_hours"], 3)})
    print_items(items, as_json, ["name", "runs", "max_pflop", "cpu_hours_at_most", "gpu_hours_at_most",
                                 "description"],
                note="cost: every run at its full epoch budget, 30 GFLOP/s on 2 CPU cores, 100 TFLOP/s on a GPU")


def print_items(items: list[dict[str, Any]], as_json: bool, columns: list[str], note: str = "") -> None:
    if as_json:
        print(formats.dumps(items))
        return
    from rich.table import Table

    table = Table()
    for column in columns:
        table.add_column(column, overflow="fold")
    for item in items:
        table.add_row(*(tables.fmt(item[c]) if not isinstance(item[c], (list, dict)) else
                        json.dumps(item[c], ensure_ascii=False) for c in columns))
    console = out_console()
    console.print(table)
    if note:
        console.print(note)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
