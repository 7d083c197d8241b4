"""The `audit` command line: options, one call into audit.pipeline per command, then judge and render.
No science and no logic in here: every piece lives in the layer it belongs to."""

from __future__ import annotations

import functools
import os
import signal
import sys


def _interrupted_while_starting(signum: int, frame: object) -> None:
    print("audit: interrupted while starting; nothing was done", file=sys.stderr, flush=True)
    os._exit(130)  # nothing to clean up yet; a normal exit could abort in a half-imported extension's teardown


if __name__ == "__main__" or os.path.basename(sys.argv[0]) == "audit":  # the command, not a test importing it:
    signal.signal(signal.SIGINT, _interrupted_while_starting)  # Ctrl-C in the slow imports and parsing: one line
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer._click import exceptions as typer_click_exceptions

import audit
import experiments
from audit.errors import UsageError, WorkError, user_frame
from audit.judge.paper import check_paper, compare
from audit.judge.rows import run_rows
from audit.pipeline import catalogue
from audit.pipeline.analysis_figures import KINDS, figure_runs
from audit.pipeline.analyze import analysis_settings, analyze
from audit.pipeline.benchmark import BenchmarkOptions, run_benchmark
from audit.pipeline.check import check_measures
from audit.pipeline.export import export_data as export_run_data
from audit.pipeline.importer import import_model
from audit.pipeline.plan import plan_score
from audit.pipeline.plugins import load_plugins
from audit.pipeline.report import classes_of, fixed_family, load_report, show_run
from audit.pipeline.run import RunOptions, changed_models, plan_run, prepare_run, run_experiment
from audit.pipeline.score import Scored, score_runs
from audit.pipeline.theory import build_expressivity, fit_kernel
from audit.pipeline.verify import verify_store
from audit.render import formats
from audit.render import items as render_items
from audit.render.analysis_plots import write_analysis_figures
from audit.render.check import CheckReporter, print_check
from audit.render.console import one_line, stage_printer
from audit.render.html import report_document, write_html_report
from audit.render.leaderboard import emit_benchmark
from audit.render.pictures import report_pictures
from audit.render.plots import pyplot, write_figures
from audit.render.progress import Reporter
from audit.render.report import Output, emit
from audit.render.show import print_run
from audit.spec.overrides import check_out, check_path, check_point, plot_args, run_overrides, show_args
from audit.train.device import Operational

app = typer.Typer(
    help="Run the randomization test of Zhang et al. and audit generalization measures with it.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
list_app = typer.Typer(help="List models, measures, variants, datasets, experiments, kernels, optimizers or "
                            "preprocessings.", no_args_is_help=True)
app.add_typer(list_app, name="list")


def _show_usage_error_in_one_line(self: Any, file: Any = None) -> None:
    """Click prints usage, a hint and the error on four lines; audit's contract is one line."""
    command = self.ctx.command_path if self.ctx is not None else "audit"
    print(f"audit: error: {one_line(self.format_message())} (see `{command} --help`)", file=file or sys.stderr)


typer_click_exceptions.UsageError.show = _show_usage_error_in_one_line


_debug = {"on": False}


def guarded(command: Callable[..., Any]) -> Callable[..., Any]:
    """One line and exit code 2 for bad usage, 1 for failed work or an error in the user's own code, 130 for an
    interrupt; never a traceback for a user error (--debug adds it)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = _debug["on"] or os.environ.get("AUDIT_DEBUG") not in (None, "", "0")  # the traceback, then the line
        if signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
            signal.signal(signal.SIGINT, signal.default_int_handler)  # the command's own interrupt handling
        try:
            for warning in load_plugins(kwargs.get("plugin") or []):  # AUDIT_PLUGINS, entry points, --plugin
                print(f"audit: warning: {one_line(warning)}", file=sys.stderr)
            return command(*args, **kwargs)
        except (UsageError, WorkError, KeyboardInterrupt) as err:
            if debug:
                traceback.print_exc()
            if isinstance(err, KeyboardInterrupt):
                print("audit: interrupted; complete runs are kept and `audit run` resumes the rest", file=sys.stderr)
                raise typer.Exit(130) from None
            kind, code = ("error", 2) if isinstance(err, UsageError) else ("failed", 1)
            print(f"audit: {kind}: {one_line(err)}", file=sys.stderr)
            raise typer.Exit(code) from None
        except Exception as err:  # an error in the user's own code (a model factory, a forward pass): theirs
            where = user_frame(err)
            if where is None or debug:
                raise  # audit's own bug (or --debug): the traceback
            print(f"audit: failed: your code raised {type(err).__name__}: {one_line(err)} (at {where}); "
                  "`audit --debug ...` shows the traceback", file=sys.stderr)
            raise typer.Exit(1) from None

    return wrapper


def version_callback(value: bool) -> None:
    if value:
        print(f"audit {audit.__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True,
                                          help="Print the version and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback of any error (also "
                                                        "AUDIT_DEBUG=1).")] = False,
) -> None:
    """Run the randomization test of Zhang et al. and audit generalization measures with it."""
    _debug["on"] = debug  # set on every invocation: a test's earlier --debug does not leak into the next


# ---------------------------------------------------------------- shared options

PluginOpt = Annotated[list[str], typer.Option(
    "--plugin", help="A measure plugin: a .py file or an importable module that registers with "
                     "measures.measure (repeatable; also AUDIT_PLUGINS and the audit.plugins entry points).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else.")]
CorrectionOpt = Annotated[str, typer.Option(help="Multiple-testing correction of the p-values: holm, bh or none.")]
CsvOpt = Annotated[Optional[Path], typer.Option("--csv", help="Also write every statistic, a row per measure and "
                                                              "family, to this CSV file.")]
MarkdownOpt = Annotated[bool, typer.Option("--markdown", help="Print the verdict table as Markdown.")]
WideOpt = Annotated[bool, typer.Option("--wide", help="Show every column of the tables, however wide (by default "
                                                      "they fit the terminal, or COLUMNS, and name what they leave out).")]
AtOpt = Annotated[Optional[str], typer.Option(
    "--at", help="Judge at a keep point of training (e.g. loss:0.1: every run at the same train loss) instead of "
                 "the end; the experiment must keep it (keep = [...] or run --keep).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
DataDirOpt = Annotated[Optional[Path], typer.Option(
    "--data-dir", help="Folder of downloaded datasets (torchvision layout; for imagenet the folder holding "
                       "train/ and val/, or its parent holding imagenet/); default ~/.cache/audit/data.")]
DownloadOpt = Annotated[bool, typer.Option("--download", help="Download missing datasets (needs a network).")]
ShardOpt = Annotated[Optional[str], typer.Option(
    help="Run a deterministic 1/N of the grid: I/N (every N-th run from the I-th), for job arrays.")]
BackendOpt = Annotated[str, typer.Option(help="local (this process) or ray (a task per training group).")]
AddressOpt = Annotated[Optional[str], typer.Option(help="Ray cluster address (default: start a local Ray).")]
CpusPerRunOpt = Annotated[float, typer.Option(help="Ray: CPUs per task (also its torch threads).")]
RunsArg = Annotated[list[str], typer.Argument(help="[STORE] [RUN...]: run ids or prefixes (default: per family "
                                                   "the lowest-seed true and random-labels runs)",
                                              metavar="[STORE] [RUN...]")]
SetOpt = Annotated[list[str], typer.Option("--set", metavar="KEY=VALUE", help="A setting (see the README; repeatable).")]
FormatOpt = Annotated[str, typer.Option("--format", help="png, svg or pdf.")]
FiguresOpt = Annotated[Optional[str], typer.Option(help="Folder for the figures (default STORE/figures).")]


def report(scored: Scored, output: Output, show: list[str]) -> int:
    """Judge and print the runs of a scored store, its p-values corrected over the store's fixed family of
    measures; the exit code: 1 when a run failed or diverged, else 0."""
    scored = fixed_family(scored)
    rows = run_rows(scored.records, scored.family, scored.at)
    emit(str(scored.root), rows, scored.judged, scored.errors, output, show, scored.notices, scored.names)
    return 1 if scored.errors or any(r["status"] == "diverged" for r in rows) else 0


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
    out: Annotated[Optional[str], typer.Option(help="Store directory (default ./audit-runs/<name>).")] = None,
    measure: Annotated[list[str], typer.Option(help="Measure to score after training (repeatable).")] = [],
    all_measures: Annotated[bool, typer.Option("--all", help="Score every registered measure.")] = False,
    device: DeviceOpt = "auto",
    checkpoint_every: Annotated[Optional[str], typer.Option(
        help="Checkpoint every N epochs (e.g. 1) or every N seconds (e.g. 30s). Default: every epoch, at most "
             "one write per 30 s.")] = None,
    keep: Annotated[Optional[str], typer.Option(
        help="Comma-separated points of training whose weights are kept: epoch:N, loss:X (first reached).")] = None,
    batch: Annotated[bool, typer.Option("--batch/--no-batch", help="Train runs of one architecture and data size "
                                        "together as one batched model (default where it applies; on the CPU, "
                                        "large MLPs run one after another inside it, on oneDNN's products, and "
                                        "mid-sized ones are evaluated that way).")] = True,
    precision: Annotated[str, typer.Option(help="auto (bf16 autocast for conv models on CUDA), fp32 or bf16.")] = "auto",
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the model (GPU path).")] = False,
    data_dir: DataDirOpt = None,
    download: DownloadOpt = False,
    correction: CorrectionOpt = "holm",
    shard: ShardOpt = None,
    backend: BackendOpt = "local",
    address: AddressOpt = None,
    cpus_per_run: CpusPerRunOpt = 1,
    gpus_per_run: Annotated[float, typer.Option(help="Ray: GPUs per task.")] = 0,
    ddp: Annotated[bool, typer.Option("--ddp", help="Data-parallel training of each run over the processes of a "
                                                    "torchrun launch; rank 0 writes the store.")] = False,
    plan: Annotated[bool, typer.Option("--plan", help="Validate and list the runs the experiment would train, "
                                                      "with their state in the store; train nothing.")] = False,
    retrain: Annotated[bool, typer.Option("--retrain", help="Train again, in place, the runs whose own model "
                                                            "(module:function or a plugin's) changed since.")] = False,
    plugin: PluginOpt = [],
    wide: WideOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train every run of an experiment into its store (skipping complete runs, resuming the rest),
    score the measures and print the verdict table. Without an argument it runs the quick audit."""
    output = Output(as_json, correction=correction, wide=wide)
    overrides = run_overrides(dataset=dataset, model=model, epochs=epochs, train_size=train_size,
                              preprocess=preprocess, lr=lr, lr_decay=lr_decay, momentum=momentum,
                              weight_decay=weight_decay, batch_size=batch_size, corrupt_test=corrupt_test,
                              seeds=seeds, variants=variants)
    options = RunOptions(tuple(measure), all_measures, device, checkpoint_every, keep, batch, precision, compile_,
                         data_dir, download, shard, backend, address, cpus_per_run, gpus_per_run, ddp, out, retrain)
    prepared = prepare_run(experiments.load(experiment), overrides, options)
    if plan:
        render_items.print_plan(plan_run(prepared), as_json)
        return
    for line in changed_models(prepared):
        print(f"audit: {line}", file=sys.stderr)
    scored = run_experiment(prepared, Reporter())
    raise typer.Exit(0 if scored is None else report(scored, output, []))


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
    plugin: PluginOpt = [],
    wide: WideOpt = False,
    as_json: JsonOpt = False,
    plan: Annotated[bool, typer.Option("--plan", help="List what would be computed, time estimated; compute nothing.")] = False,
) -> None:
    """Compute measures on every complete run of a store, cache them in the run files, and print them
    per run with their verdicts. Without --measure, the default set."""
    if plan:
        return render_items.print_score_plan(plan_score(store, measure, all_measures, setting, recompute, device, at), as_json)
    output = Output(as_json, markdown, csv, correction, wide)
    scored = score_runs(store, measure, all_measures, setting, recompute=recompute, device=device,
                        data_dir=data_dir, at=at, tracker=Reporter())
    raise typer.Exit(report(scored, output, scored.names if len(scored.names) <= 6 else []))


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
    plugin: PluginOpt = [],
    wide: WideOpt = False,
    html: Annotated[Optional[Path], typer.Option(
        "--html", help="Write the whole audit as one self-contained HTML file (sortable verdict table, Figure 1, "
                       "training curves, each measure's panels, cached landscapes, spectra and densities).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the runs and verdicts of a store from its cached measures (computes nothing): per measure, the
    randomization test (auc with its interval, trend with its corrected p, input-axis comparisons) beside the
    hyperparameter protocols (Kendall tau, granulated psi, sign-error, CMI with its sign)."""
    output = Output(as_json, markdown, csv, correction, wide)
    at = check_point(at)
    check_paper(paper)
    scored = load_report(store, measure, at)
    if html is not None:
        rows = run_rows(scored.records, scored.family, at)
        document = report_document(str(scored.root), rows, scored.judged, scored.errors, correction,
                                   list(measure) or None)
        if not html.parent.is_dir() or html.is_dir():
            raise UsageError(f"--html {html}: give a file in an existing folder")
        written = write_html_report(html, document, scored.records, at=at,
                                    num_classes=classes_of(scored.records), notices=scored.notices,
                                    extra_figures=analysis_pictures(scored.records, scored.root))
        print(f"wrote {written.path} ({written.size / 1e6:.2f} MB in {written.seconds:.1f} s)")
    elif paper is not None:
        render_items.print_paper(paper, compare(paper, run_rows(scored.records, scored.names, at)), as_json)
    else:
        emit(str(scored.root), run_rows(scored.records, scored.family, at), scored.judged, scored.errors, output,
             list(measure), scored.notices, scored.names)
    raise typer.Exit(1 if scored.errors else 0)


@app.command()
@guarded
def plot(
    args: Annotated[list[str], typer.Argument(help="[STORE] [landscape|esd|hessian-density ...]",
                                              metavar="[STORE] [KIND...]")] = [],
    out: FiguresOpt = None,
    fmt: FormatOpt = "png",
    measure: Annotated[list[str], typer.Option(help="Also plot this measure against p (repeatable; default: "
                                                     "every cached measure).")] = [],
    plugin: PluginOpt = [],
) -> None:
    """Write the paper's Figure 1 panels from a store (1a training loss against steps per variant, 1b time to
    fit relative to true labels against p, 1c test error against p with chance marked) and each measure
    against p with seeds as points. With KINDs, those figures instead, true against random labels: landscape
    (1D and 2D, from `audit landscape`), esd (each layer's spectrum of WᵀW with its power-law fit, from the
    weights) and hessian-density (from `audit density`)."""
    store, kinds = plot_args(args, KINDS)
    pyplot()  # a missing matplotlib is a usage error before any work
    scored = load_report(store, measure)
    folder = check_out(out) or scored.root / "figures"
    if kinds:
        runs, notes = figure_runs(scored.records, kinds, root=str(scored.root))
        paths = write_analysis_figures(runs, folder, (fmt,))
    else:
        notes, paths = [], write_figures(scored.records, run_rows(scored.records, scored.names), scored.names,
                                         folder, fmt, classes_of(scored.records))
    for path in paths:
        print(path)
    for line in notes + scored.notices + scored.errors:
        print(f"audit: {line}", file=sys.stderr)
    raise typer.Exit(1 if scored.errors else 0)


def analysis_pictures(records: list[Any], root: Path) -> list[tuple[str, str, bytes]]:
    """The report's landscape, spectrum and density figures: of the runs with a cached analysis."""
    looked_at = [r for r in records if r.analyses]
    return report_pictures(figure_runs(looked_at, ["landscape", "hessian-density", "esd"] if looked_at else [],
                                       str(root))[0])


def analysis_command(kind: str, args: list[str], setting: list[str], out: Optional[str], fmt: str, device: str,
                     data_dir: Optional[Path], as_json: bool) -> None:
    """`audit landscape` and `audit density`: the estimate on stderr, each run's analysis cached, its figures."""
    store, prefixes = plot_args(args, ())
    settings = analysis_settings(kind, setting)
    folder = check_out(out)
    ops = Operational(device=device, data_dir=data_dir)
    stage = stage_printer(False)  # on stderr, also with --json
    document: dict[str, Any] = {"kind": kind, "settings": settings, "runs": []}

    def on_estimate(estimate: dict[str, Any]) -> None:
        document["estimate"] = estimate
        stage(render_items.analysis_estimate(kind, estimate))

    def on_run(index: int, total: int, record: Any, computed: bool) -> None:
        document["runs"].append(render_items.analysis_run(kind, record, computed))
        stage(f"[{index + 1}/{total}] {record.run_id} {record.spec.variant_label} seed {record.spec.seed}: "
              + ("computed" if computed else "cached with these settings"))

    root, records = analyze(store, kind, prefixes, settings, ops, on_estimate, on_run)
    runs, notes = figure_runs(records, ["landscape" if kind == "landscape" else "hessian-density"], str(root.root))
    document.update(store=str(root.root), notes=notes,
                    figures=[str(p) for p in write_analysis_figures(runs, folder or root.root / "figures", (fmt,))])
    render_items.print_analysis(document, as_json)


@app.command()
@guarded
def landscape(args: RunsArg = [], setting: SetOpt = [], out: FiguresOpt = None, fmt: FormatOpt = "png",
              device: DeviceOpt = "auto", data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """The train loss and accuracy of stored runs along the line from their initial to their final weights
    (stretched beyond both ends) and on the plane of two filter-normalized random directions around the final
    weights (Li et al. 2018), on a seeded subset of the fitted train data; cached in each run file under
    landscape/, drawn true against random labels into STORE/figures. The estimated cost is printed first.
    Settings: examples, seed, points, stretch, resolution (odd), span."""
    analysis_command("landscape", args, setting, out, fmt, device, data_dir, as_json)


@app.command()
@guarded
def density(args: RunsArg = [], setting: SetOpt = [], out: FiguresOpt = None, fmt: FormatOpt = "png",
            device: DeviceOpt = "auto", data_dir: DataDirOpt = None, as_json: JsonOpt = False) -> None:
    """The Hessian eigenvalue density of the train loss of stored runs by stochastic Lanczos quadrature
    (Ghorbani et al. 2019), seeded Rademacher probes on a seeded subset of the fitted train data; cached in
    each run file under density/, drawn true against random labels into STORE/figures. The estimated cost is
    printed first. Settings: examples, seed, probes, steps, sigma."""
    analysis_command("density", args, setting, out, fmt, device, data_dir, as_json)


@app.command()
@guarded
def show(
    args: Annotated[list[str], typer.Argument(help="[STORE] RUN_ID", metavar="[STORE] RUN_ID")],
    plugin: PluginOpt = [],
    as_json: JsonOpt = False,
) -> None:
    """Print one run: spec, status, history summary and cached measures."""
    store, run_id = show_args(args)
    print_run(show_run(store, run_id), as_json)


@app.command()
@guarded
def verify(
    store: Annotated[Optional[Path], typer.Argument(help="Store directory (default: the latest under ./audit-runs).")] = None,
    upgrade: Annotated[bool, typer.Option("--upgrade", help="Add digests to files written before them "
                                                            "(under each run's lock); damaged files stay as they are.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check every file of a store end to end: each run file read whole, every part (attributes, history,
    fitted data, init, final and kept weights, resume state, each cached measure) against its digest, each
    file's run id against its name, experiment.json's shape and the shared values under cache/. Prints the
    files that are not verified; exit 1 if any is damaged or unreadable. Writes nothing unless --upgrade."""
    checked = verify_store(store, upgrade)
    render_items.print_verify(checked.document(), as_json)
    raise typer.Exit(1 if checked.damaged else 0)


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
    document = build_expressivity(n, d, dataset, train_size, variant, targets, seed, data_dir, depth)
    render_items.print_expressivity(document, as_json)


@app.command()
@guarded
def kernel(
    dataset: Annotated[str, typer.Option(help="digits, fashion-mnist, mnist or cifar10.")] = "fashion-mnist",
    train_size: Annotated[Optional[int], typer.Option(
        help="Stratified, seeded subset of the train set (default 4000, or all of a smaller one; 0 = all of it).",
        show_default=False)] = None,
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
    out: Annotated[Optional[str], typer.Option(
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
    spec, document = fit_kernel(dataset, train_size, variant, kind, bandwidth, ridge, degree, features, seed,
                                preprocess, out=check_out(out), device=device, data_dir=data_dir, download=download,
                                on_stage=stage_printer(quiet=as_json))
    render_items.print_kernel(document, spec.run_id, as_json)


@app.command("import")
@guarded
def import_command(
    store: Annotated[str, typer.Argument(help="Store directory to add the run to (created if missing).")],
    model: Annotated[str, typer.Option(help="module:function returning the torch model (importable from here).")],
    init: Annotated[Path, typer.Option(help="state_dict of the model at initialization (torch.save).")],
    final: Annotated[Path, typer.Option(help="state_dict of the trained model (torch.save).")],
    dataset: Annotated[Optional[str], typer.Option(
        help="The dataset it was trained on (default digits).", show_default=False)] = None,
    variant: Annotated[str, typer.Option(help="The variant it was trained on: true, corrupt:P, random-labels, ...")] = "true",
    seed: Annotated[int, typer.Option(help="The seed of the variant (it regenerates the fitted labels).")] = 0,
    train_size: Annotated[Optional[int], typer.Option(help="Stratified subset it was trained on.")] = None,
    preprocess: Annotated[Optional[str], typer.Option(
        help="standard (the default), paper or none.", show_default=False)] = None,
    labels: Annotated[Optional[Path], typer.Option(
        help="The train labels it fitted (.npy of integers in [0, classes), one per train example in the order "
             "of `audit export-data`), in place of the regenerated ones; their SHA-256 enters the run id.")] = None,
    data: Annotated[Optional[Path], typer.Option(
        help="Its own data: an .npz with x_train, y_train, x_test, y_test, the inputs as the model sees them; "
             "the dataset is then 'npz' and their SHA-256 enters the run id.")] = None,
    data_dir: DataDirOpt = None,
    download: DownloadOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Add a model trained elsewhere to a store as a complete run, so that `audit score` and `audit report`
    judge it like the others. Its data are rebuilt from the dataset, variant and seed given here, with the
    labels it fitted from --labels; or they are the arrays of --data."""
    summary = import_model(check_path(store, "STORE"), model, init, final, dataset=dataset, variant=variant, seed=seed,
                           train_size=train_size, preprocess=preprocess, labels=labels, data=data,
                           data_dir=data_dir, download=download)
    render_items.print_import(summary, as_json)


@app.command("export-data")
@guarded
def export_data(
    dataset: Annotated[str, typer.Argument(help="digits, mnist, fashion-mnist, cifar10, cifar100, svhn, folder:PATH.")],
    out: Annotated[Path, typer.Option(help="The .npz file to write (refused if it exists).")],
    variant: Annotated[str, typer.Option(help="true, corrupt:P, random-labels, shuffled-pixels, ...")] = "true",
    seed: Annotated[int, typer.Option(help="The seed of the variant.")] = 0,
    train_size: Annotated[Optional[int], typer.Option(help="Stratified, seeded subset of the train set.")] = None,
    preprocess: Annotated[str, typer.Option(help="standard, paper or none.")] = "standard",
    data_dir: DataDirOpt = None,
    download: DownloadOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Write the exact data a run of this spec fits, for training elsewhere: x_train, y_train, x_test, y_test
    (float32 inputs as the model sees them, int64 labels as fitted, e.g. random for random-labels), and print
    the `audit import` options that bring the trained model back as that run."""
    document = export_run_data(out, dataset=dataset, variant=variant, seed=seed, train_size=train_size,
                               preprocess=preprocess, data_dir=data_dir, download=download)
    if as_json:
        print(formats.dumps(document))
        return
    shapes = ", ".join(f"{name} {tuple(a['shape'])} {a['dtype']}" for name, a in document["arrays"].items())
    print(f"wrote {document['out']}: {shapes}")
    print(f"import the trained model with: audit import STORE --model MODULE:FUNCTION --init INIT.pt --final "
          f"FINAL.pt {document['import_options']}")


@app.command()
@guarded
def benchmark(
    quick: Annotated[bool, typer.Option("--quick", help="The digits parts alone: quick grid and sweep.")] = False,
    all_measures: Annotated[bool, typer.Option("--all", help="Rank the heavy built-ins too.")] = False,
    measure: Annotated[list[str], typer.Option(help="Score only this measure (repeatable), ranked among the "
                                                     "built-ins' cached values.")] = [],
    shard: ShardOpt = None,
    backend: BackendOpt = "local",
    address: AddressOpt = None,
    cpus_per_run: CpusPerRunOpt = 1,
    device: DeviceOpt = "auto",
    correction: CorrectionOpt = "holm",
    csv: CsvOpt = None,
    markdown: MarkdownOpt = False,
    plugin: PluginOpt = [],
    as_json: JsonOpt = False,
) -> None:
    """The measure benchmark: a fixed, versioned suite (experiments/benchmark/suite.toml: the quick grid and the
    width × lr × weight decay × train size sweep on digits, a Fashion-MNIST label-corruption grid, a small
    conv-net grid) trained once into AUDIT_CACHE_DIR/benchmark/vVERSION/ (default ~/.cache/audit; resumable,
    shardable, on Ray), every measure scored (the default built-ins, --all the heavy ones too, and every
    plugin's), and one leaderboard: per experiment the randomization verdict with oriented auc and trend; over
    the sweeps psi per axis and overall, sign-error mean and worst axis, CMI with its sign. Each column ranks
    the measures (ties share the mean place, a missing value the last places); the overall rank orders the
    mean of the column ranks. The correction family: the built-ins ranked plus the measures asked."""
    options = BenchmarkOptions(quick, all_measures, tuple(measure), device, shard, backend, address, cpus_per_run)
    output = Output(as_json, markdown, csv, correction)
    raise typer.Exit(emit_benchmark(run_benchmark(options, tracker=Reporter, on_stage=stage_printer(False)), output))


@app.command()
@guarded
def check(
    measure: Annotated[list[str], typer.Argument(metavar="MEASURE...", show_default=False,
                                                 help="Measures to check (`audit list measures`).")] = [],
    all_measures: Annotated[bool, typer.Option("--all", help="Check every registered measure.")] = False,
    plugin: PluginOpt = [],
    device: DeviceOpt = "cpu",
    as_json: JsonOpt = False,
) -> None:
    """A measure's contract, checked on small runs trained on first use and cached in AUDIT_CACHE_DIR/check
    (default ~/.cache/audit): digits, an MLP and a conv net on true and random labels, a batch-norm model. value:
    a finite float or null with a reason on every run; determinism: the same value twice in this process and in a
    fresh one; needs: the same value given only what it declares; invariance (where declared): unchanged when a
    ReLU layer is scaled by 3 and the next by 1/3; cost: its time in forward passes over the train set within its
    class (instant ≤ 10, pass ≤ 100, heavy beyond); kinds: it works on each model kind or says why not. Exit 0
    when every check passes, 1 on a failure, 2 for bad usage."""
    document = check_measures(measure, all_measures, device=device, tracker=CheckReporter())
    print_check(document, as_json)
    raise typer.Exit(1 if document["failures"] else 0)


def listing_command(kind: str) -> None:
    """Register `audit list KIND` for a registry listing of audit.pipeline.catalogue.LISTINGS."""
    listing = catalogue.LISTINGS[kind]

    @list_app.command(kind, help=listing.help)
    @guarded
    def command(plugin: PluginOpt = [], as_json: JsonOpt = False) -> None:
        render_items.print_items(catalogue.list_items(kind), as_json, listing.columns, note=listing.note)


listing_command("models")


@list_app.command("measures", help=catalogue.LISTINGS["measures"].help)
@guarded
def list_measures(
    plugin: PluginOpt = [],
    as_json: JsonOpt = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the catalogue page (docs/measures.md).")] = False,
) -> None:
    items = catalogue.list_items("measures")
    if markdown:
        print(formats.catalogue_markdown(items))
        return
    render_items.print_items(items, as_json, catalogue.LISTINGS["measures"].columns)


listing_command("variants")
listing_command("datasets")


@list_app.command("experiments")
@guarded
def list_experiments(as_json: JsonOpt = False) -> None:
    """The shipped experiments, how many runs each has, and its rough cost: an upper bound in which every run
    trains its whole epoch budget (runs stop earlier once fitted)."""
    items = catalogue.experiment_items({name: experiments.load(name) for name in experiments.names()})
    render_items.print_items(items, as_json, catalogue.EXPERIMENT_COLUMNS, note=catalogue.EXPERIMENT_NOTE)


for _kind in ("kernels", "optimizers", "preprocessings"):
    listing_command(_kind)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
