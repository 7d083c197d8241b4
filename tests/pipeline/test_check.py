"""`audit check`: a sound measure passes every check; a measure that draws unseeded noise, reads what it does not
declare, claims an invariance it lacks, runs slower than its class or breaks on a model kind fails exactly that
check (exit 1); the cheap built-ins and a few heavy ones pass. The check runs are trained once, into a temporary
AUDIT_CACHE_DIR."""

import json
import textwrap

import pytest
from typer.testing import CliRunner

import measures
from audit.pipeline import check, check_runs
from audit.render.check import print_check
from cli import app

runner = CliRunner()

HEADER = """
import time
import torch
from torch import nn
from measures import Undefined, measure
from measures.layers import weights
"""

PLUGINS = {
    "sound": '''
@measure("log-fro-product", family="norm", needs=("weights",), direction=1, cost="instant", invariant=True,
         reference="a sound test measure", formula="Σ_i log ‖W_i‖_F")
def log_fro_product(ctx):
    return float(sum(w.double().norm().log() for w in weights(ctx.model)))
''',
    "noisy": '''
@measure("noisy-l2", family="norm", needs=("weights",), direction=1, cost="instant",
         reference="a test measure drawing unseeded noise", formula="‖W‖ + N(0, 1)")
def noisy_l2(ctx):
    return float(sum(w.double().norm() for w in weights(ctx.model))) + float(torch.randn(()))
''',
    "init_reader": '''
@measure("init-distance", family="norm", needs=("weights",), direction=1, cost="instant",
         reference="a test measure reading init weights it does not declare", formula="Σ_i ‖W_i − W_i⁰‖")
def init_distance(ctx):
    return float(sum((w - w0).double().norm() for w, w0 in zip(weights(ctx.model), weights(ctx.init))))
''',
    "fake_invariant": '''
@measure("squared-weights", family="norm", needs=("weights",), direction=1, cost="instant", invariant=True,
         reference="a test measure claiming an invariance it lacks", formula="Σ_i ‖W_i‖_F²")
def squared_weights(ctx):
    return float(sum(w.double().pow(2).sum() for w in weights(ctx.model)))
''',
    "batch_reader": '''
@measure("batch-scaled-l2", family="norm", needs=("weights",), direction=1, cost="instant",
         reference="a test measure reading the run's spec it does not declare", formula="‖W‖ · batch size")
def batch_scaled_l2(ctx):
    size = ctx.spec.batch_size if ctx.spec is not None else 128
    return size * float(sum(w.double().norm() for w in weights(ctx.model)))
''',
    "slow": '''
@measure("slow-l2", family="norm", needs=("weights",), direction=1, cost="instant",
         reference="a test measure far slower than its class", formula="‖W‖, after a pause on the conv net")
def slow_l2(ctx):
    if any(isinstance(m, nn.LocalResponseNorm) for m in ctx.model.modules()):
        time.sleep(1.0)
    return float(sum(w.double().norm() for w in weights(ctx.model)))
''',
    "conv_breaker": '''
@measure("no-lrn", family="norm", needs=("weights",), direction=1, cost="instant",
         reference="a test measure that breaks on the conv net", formula="‖W‖")
def no_lrn(ctx):
    if any(isinstance(m, nn.LocalResponseNorm) for m in ctx.model.modules()):
        raise ValueError("cannot handle local response norm")
    return float(sum(w.double().norm() for w in weights(ctx.model)))
''',
}
BAD = {"noisy-l2": {"determinism"}, "init-distance": {"needs"}, "squared-weights": {"invariance"},
       "batch-scaled-l2": {"needs"}, "slow-l2": {"cost"}, "no-lrn": {"value", "kinds"}}
HEAVY = ["sharpness", "adaptive-sharpness", "adaptive-sharpness-avg"]


@pytest.fixture(scope="session")
def check_cache(tmp_path_factory):
    """The check runs, trained once for the session into a temporary cache."""
    root = tmp_path_factory.mktemp("audit-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUDIT_CACHE_DIR", str(root))
        check_runs.check_runs("cpu", check.Quiet())
    return root


@pytest.fixture(autouse=True)
def cache(check_cache, monkeypatch):
    monkeypatch.setenv("AUDIT_CACHE_DIR", str(check_cache))
    return check_cache


def plugin_files(folder, *names):
    paths = []
    for name in names:
        path = folder / f"{name}.py"
        path.write_text(textwrap.dedent(HEADER) + textwrap.dedent(PLUGINS[name]))
        paths.append(path)
    return [arg for path in paths for arg in ("--plugin", str(path))]


def failing(report):
    return {c["check"] for c in report["checks"] if c["passed"] is False}


def test_the_runs_are_trained_once_into_the_cache_folder(cache):
    class Counting(check.Quiet):
        trained = 0

        def on_run(self, index, total, spec, state):
            Counting.trained += 1

    runs = check_runs.check_runs("cpu", Counting())
    assert Counting.trained == 0  # trained by the session fixture: nothing left to train
    assert [run.name for run in runs] == ["mlp/true", "mlp/random", "conv/true", "conv/random", "bn/true"]
    assert sorted(p.name for p in (cache / "check" / "runs").glob("*.h5")) == sorted(
        f"{run.record.run_id}.h5" for run in runs)
    assert {run.record.spec.variant for run in runs} == {"true", "random-labels"}
    assert all(run.forward_seconds > 0 for run in runs)


def test_each_broken_contract_fails_its_own_check(tmp_path, capsys):
    names = [n for n in PLUGINS if n != "sound"]
    result = runner.invoke(app, ["check", *BAD, *plugin_files(tmp_path, *names), "--json"])
    assert result.exit_code == 1, result.output
    document = json.loads(result.stdout)
    reports = {r["measure"]: r for r in document["measures"]}
    assert {name: failing(reports[name]) for name in BAD} == BAD
    assert document["failures"] == sum(len(checks) for checks in BAD.values())
    details = {name: {c["check"]: c for c in r["checks"]} for name, r in reports.items()}
    assert details["noisy-l2"]["determinism"]["detail"].startswith("determinism: two evaluations")
    assert details["noisy-l2"]["needs"]["passed"] is None  # not judged on a measure that is not deterministic
    assert "reads init weights (ctx.init) without declaring 'init'" in details["init-distance"]["needs"]["detail"]
    assert details["init-distance"]["needs"]["read"] == ["init"]
    assert "without declaring 'procedure'" in details["batch-scaled-l2"]["needs"]["detail"]
    assert details["squared-weights"]["invariance"]["relative_difference"]["mlp/true"] > 0.1
    assert details["slow-l2"]["cost"]["ratio"] > check.COST_LIMITS["instant"]
    assert "conv/true: failed: ValueError: cannot handle local response norm" in details["no-lrn"]["value"]["detail"]
    assert details["no-lrn"]["kinds"]["detail"].startswith("conv: failed")

    print_check(document, as_json=False)
    lines = capsys.readouterr().out.splitlines()
    table = [line for line in lines if line[:1] in "┏┃┡│└"]
    assert table and max(len(line) for line in table) <= 100
    fails = [line for line in lines if line.startswith("FAIL ")]
    assert len(fails) == document["failures"]
    assert any(line.startswith("FAIL noisy-l2 determinism: determinism:") for line in fails)


def test_one_failing_measure_prints_its_table_of_checks_and_exits_1(tmp_path):
    result = runner.invoke(app, ["check", "squared-weights", *plugin_files(tmp_path, "fake_invariant")])
    assert result.exit_code == 1, result.output
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in result.stdout.splitlines()
            if line.startswith("│") and line.split("│")[1].strip()}
    assert rows == {"value": "pass", "determinism": "pass", "needs": "pass", "invariance": "FAIL", "cost": "pass",
                    "kinds": "pass"}
    assert "checking squared-weights" in result.stderr  # progress on stderr


def test_a_sound_plugin_the_cheap_built_ins_and_a_few_heavy_ones_pass_every_check(tmp_path):
    """One `audit check` of them all (each check runs measure by measure; the determinism check's fresh process,
    the slowest part of a check, is started once for the measures together): exit 0."""
    cheap = [n for n in measures.names() if measures.get(n).cost != "heavy"]
    result = runner.invoke(app, ["check", "log-fro-product", *cheap, *HEAVY, *plugin_files(tmp_path, "sound"),
                                 "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    failures = [f"{r['measure']} {c['check']}: {c['detail']}" for r in document["measures"] for c in r["checks"]
                if c["passed"] is False]
    assert failures == [] and document["failures"] == 0
    assert [r["measure"] for r in document["measures"]] == ["log-fro-product", *cheap, *HEAVY]
    invariant = [r for r in document["measures"] if r["invariant"]]
    assert invariant and all(r["checks"][3]["passed"] for r in invariant)

    report = document["measures"][0]  # the sound plugin: every check passes, none left unjudged
    assert [(c["check"], c["passed"]) for c in report["checks"]] == [
        ("value", True), ("determinism", True), ("needs", True), ("invariance", True), ("cost", True),
        ("kinds", True)]
    assert set(report["checks"][3]["relative_difference"]) == {"mlp/true", "conv/true"}
    assert all(d < check.RTOL for d in report["checks"][3]["relative_difference"].values())
    assert report["checks"][4]["ratio"] < check.COST_LIMITS["instant"]


@pytest.mark.parametrize(("args", "message"), [
    ([], "name a measure to check"),
    (["l2x"], "did you mean 'l2'"),
    (["l2", "--all"], "not both"),
])
def test_bad_usage_is_one_line_and_exit_2(args, message):
    result = runner.invoke(app, ["check", *args])
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
