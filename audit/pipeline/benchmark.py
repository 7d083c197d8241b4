"""`audit benchmark`: the measure benchmark. A fixed, versioned suite of experiments (experiments/benchmark/),
each trained once into its own store under the cache (AUDIT_CACHE_DIR/benchmark/vVERSION/NAME, default
~/.cache/audit/...) through `audit run`'s own path (prepare_run, run_experiment: resumable, shardable, on Ray),
then every measure of the benchmark scored on it (cached values reused, so a new measure computes only
itself). Judging and ranking are audit.judge.leaderboard's; printing is audit.render.leaderboard's."""

from __future__ import annotations

import dataclasses
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import measures
from audit.errors import UsageError
from audit.pipeline.run import RunOptions, prepare_run, run_experiment
from audit.pipeline.score import Scored, Silent, Tracker
from audit.resources import cache_dir
from audit.spec.experiment import ExperimentSpec, load_experiment_file
from audit.store.record import cache_key

SUITE_FOLDER = Path(__file__).resolve().parents[2] / "experiments" / "benchmark"  # installed beside audit/
SUITE_FILE = "suite.toml"


@dataclass(frozen=True)
class Suite:
    """The benchmark's experiments: `full` every one, `quick` the digits parts; the version names the cache."""

    version: int
    full: tuple[ExperimentSpec, ...]
    quick: tuple[ExperimentSpec, ...]


def load_suite(folder: Path | None = None) -> Suite:
    """The suite of folder/suite.toml (default SUITE_FOLDER): its version and the experiment files it names."""
    folder = SUITE_FOLDER if folder is None else folder
    path = folder / SUITE_FILE
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise UsageError(f"cannot read the benchmark suite {path}: {err}") from None
    version, full, quick = values.get("version"), values.get("full"), values.get("quick")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise UsageError(f"{path}: version must be a positive integer, got {version!r}")
    for key, names in (("full", full), ("quick", quick)):
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise UsageError(f"{path}: {key} must be a non-empty list of experiment names")
    if not set(quick) <= set(full):
        raise UsageError(f"{path}: quick must be a part of full")
    specs = {name: load_experiment_file(folder / f"{name}.toml") for name in full}
    return Suite(version, tuple(specs[n] for n in full), tuple(specs[n] for n in quick))


def store_root(version: int, name: str) -> Path:
    """Where a suite experiment's runs are cached."""
    return cache_dir("benchmark", f"v{version}", name)


@dataclass(frozen=True)
class BenchmarkOptions:
    """What `audit benchmark` was asked: the quick suite, the heavy measures too, only some measures, and how
    to train (the options `audit run` passes to RunOptions)."""

    quick: bool = False
    all_measures: bool = False
    measure: tuple[str, ...] = ()
    device: str = "auto"
    shard: str | None = None
    backend: str = "local"
    address: str | None = None
    cpus_per_run: float = 1


@dataclass
class Part:
    """One suite experiment, trained and scored: its sweep axes (its true-label runs enter the hyperparameter
    protocols when it has any) and its scored store, judged over the benchmark's measures."""

    name: str
    description: str
    sweep: tuple[str, ...]
    scored: Scored
    runs: int  # runs of the experiment's grid (its shard's and the others')


@dataclass
class Benchmark:
    """The built suite: its parts, the measures ranked (the correction family: the built-ins, then the plugin
    or asked measures), those scored now, and what went wrong."""

    version: int
    suite: str  # "quick" or "full"
    parts: list[Part]
    builtins: list[str]
    asked: list[str]
    scored: list[str]
    judged: dict[str, dict[str, Any]]
    seconds: float
    notices: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ranked(self) -> list[str]:
        return list(self.judged)


def benchmark_measures(options: BenchmarkOptions) -> tuple[list[str], list[str]]:
    """(built-ins ranked, measures asked): the built-in default set (every built-in with --all), and the
    --measure names, or else every plugin measure loaded."""
    builtins = [n for n in measures.names(default_only=not options.all_measures) if measures.get(n).plugin is None]
    if options.measure:
        for name in options.measure:
            measures.get(name)  # an unknown name: a UsageError with the closest match
        return builtins, list(dict.fromkeys(options.measure))
    return builtins, [n for n in measures.names() if measures.get(n).plugin is not None]


def run_options(options: BenchmarkOptions, names: list[str], root: Path) -> RunOptions:
    return RunOptions(measure=tuple(names), device=options.device, shard=options.shard, backend=options.backend,
                      address=options.address, cpus_per_run=options.cpus_per_run, out=root)


def run_benchmark(options: BenchmarkOptions, suite: Suite | None = None, tracker: Callable[[], Tracker] = Silent,
                  on_stage: Callable[[str], None] = lambda text: None) -> Benchmark:
    """Train the suite's experiments into the cache (complete runs skipped) and score the benchmark's measures:
    all of them, or with --measure only those asked (the built-ins' values then come from the cache)."""
    start = time.perf_counter()
    suite = suite or load_suite()
    builtins, asked = benchmark_measures(options)
    ranked = list(dict.fromkeys(builtins + asked))
    scored_now = asked if options.measure else ranked
    chosen = suite.quick if options.quick else suite.full
    prepared = [prepare_run(spec, {}, run_options(options, scored_now, store_root(suite.version, spec.name)))
                for spec in chosen]  # every experiment and option checked before any work
    parts: list[Part] = []
    for index, run in enumerate(prepared):
        runs = len(run.experiment.expand())
        on_stage(f"benchmark v{suite.version} [{index + 1}/{len(prepared)}] {run.experiment.name}: {runs} runs")
        scored = run_experiment(run, tracker())
        if scored is None:  # not this process's to score (a data-parallel rank): nothing to rank here
            continue
        scored = dataclasses.replace(scored, names=ranked, judged=measures.judged(ranked))
        parts.append(Part(run.experiment.name, run.experiment.description, tuple(run.experiment.sweep), scored,
                          runs))
    notices = [line for part in parts for line in part.scored.notices]
    if options.measure:
        notices += uncached(parts, builtins)
    return Benchmark(suite.version, "quick" if options.quick else "full", parts, builtins, asked, scored_now,
                     measures.judged(ranked), time.perf_counter() - start, notices,
                     [line for part in parts for line in part.scored.errors])


def uncached(parts: list[Part], builtins: list[str]) -> list[str]:
    """With --measure, a line per suite experiment whose complete runs lack cached values of built-ins."""
    lines = []
    for part in parts:
        complete = [r for r in part.scored.records if r.status == "complete"]
        missing = sorted({n for r in complete for n in builtins if cache_key(n, None) not in r.measures})
        if missing:
            lines.append(f"{part.name}: {len(missing)} built-in measure{'s' * (len(missing) > 1)} not cached "
                         f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); `audit benchmark` "
                         "without --measure scores them")
    return lines
