import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app

runner = CliRunner()


def invoke(*args, cwd=None):
    return runner.invoke(app, [str(a) for a in args])


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.startswith("audit ")


def test_score_spectral_json_equals_numpy_on_weights_read_with_h5py(small_store):
    result = invoke("score", small_store, "--measure", "spectral", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["store"] == str(small_store)
    assert len(document["runs"]) == 6
    for run in document["runs"]:
        with h5py.File(small_store / "runs" / f"{run['run_id']}.h5", "r") as f:
            final = f["weights/final"]
            matrices = [final[k][()].astype(np.float64) for k in sorted(final) if k.endswith("weight")]
        expected = sum(math.log(np.linalg.svd(w, compute_uv=False)[0]) for w in matrices)
        assert run["measures"]["spectral"] == pytest.approx(expected, rel=1e-6)
    assert {v["measure"] for v in document["verdicts"]} == {"spectral"}


def test_run_report_and_score_print_the_same_document_shape(small_store):
    report = json.loads(invoke("report", small_store, "--json").stdout)
    assert set(report) >= {"store", "rule", "runs", "verdicts"}
    keys = {"run_id", "family", "model", "dataset", "variant", "corrupt", "seed", "status", "fitted", "train_acc",
            "test_acc", "gap", "steps_to_fit", "measures"}
    for run in report["runs"]:
        assert keys <= set(run)
        assert run["gap"] == pytest.approx(run["train_acc"] - run["test_acc"])
        assert run["corrupt"] == {"true": 0.0, "random-labels": 1.0}.get(run["variant"], run["corrupt"])
    names = {v["measure"] for v in report["verdicts"]}
    assert {"params", "l2", "l2-margin", "steps-to-fit"} <= names
    by_name = {v["measure"]: v for v in report["verdicts"]}
    assert by_name["params"]["auc"] is None
    assert next(s for s in report["summary"] if s["measure"] == "params")["verdict"] == "fails"
    assert "distinguishes" in report["rule"] and "Holm" in report["rule"]["correction"]
    assert report["header"]["runs"] == 6 and report["header"]["complete"] == 6


def test_json_statistics_recompute_from_the_runs_in_the_same_document(small_store):
    from scipy import stats

    report = json.loads(invoke("report", small_store, "--json").stdout)
    runs = report["runs"]
    for verdict in report["verdicts"]:
        name = verdict["measure"]
        mine = [r for r in runs if r["family"] == verdict["family"] and r["measures"].get(name) is not None]
        if verdict["auc"] is None:
            continue
        random_values = [r["measures"][name] for r in mine if r["variant"] == "random-labels"]
        true_values = [r["measures"][name] for r in mine if r["variant"] == "true"]
        wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in random_values for b in true_values)
        assert verdict["auc"] == pytest.approx(wins / (len(random_values) * len(true_values)))
        tau = stats.kendalltau([r["measures"][name] for r in mine], [r["gap"] for r in mine]).statistic
        assert verdict["tau"] == pytest.approx(tau)


def test_report_writes_csv_and_markdown(small_store, tmp_path):
    import csv

    result = invoke("report", small_store, "--markdown", "--csv", tmp_path / "v.csv")
    assert result.exit_code == 0
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("| measure |") and len(lines) == 2 + len(json.loads(
        invoke("report", small_store, "--json").stdout)["summary"])
    with open(tmp_path / "v.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {"measure", "auc", "auc_p_adj", "trend_p_adj", "psi", "verdict"} <= set(rows[0])


def test_report_measure_shows_one_measure_by_run(small_store):
    result = invoke("report", small_store, "--measure", "l2-margin")
    assert result.exit_code == 0
    assert "l2-margin" in result.stdout and "random-labels" in result.stdout


def test_show_prints_one_run(small_store):
    run_id = sorted((small_store / "runs").glob("*.h5"))[0].stem
    result = invoke("show", small_store, run_id[:6], "--json")
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert document["run_id"] == run_id and document["status"] == "complete"
    assert len(document["history"]["epoch"]) == document["attrs"]["epochs"] + 1
    text = invoke("show", small_store, run_id).stdout
    assert "history" in text and run_id in text


@pytest.mark.parametrize("kind", ["models", "measures", "variants", "datasets", "experiments"])
def test_list_json(kind):
    result = invoke("list", kind, "--json")
    assert result.exit_code == 0
    items = json.loads(result.stdout)
    assert items and all("name" in item for item in items)
    if kind == "models":
        counts = {i["name"]: i["params_cifar28"] for i in items}
        assert counts["mlp-1x512"] == 1_209_866 and counts["mlp-3x512"] == 1_735_178
    if kind == "experiments":
        assert {"name": "quick", "runs": 27} .items() <= next(i for i in items if i["name"] == "quick").items()


@pytest.mark.parametrize("args, needle", [
    (["run", "--model", "mlp-fancy"], "unknown model"),
    (["run", "--variants", "true,corrupt:1.5"], "[0, 1]"),
    (["run", "--epochs", "0"], "epochs must be positive"),
    (["run", "nosuchexperiment"], "unknown experiment"),
    (["score", "--measure", "spectrl", "/nonexistent"], "unknown measure"),
    (["score", "/nonexistent/store"], "does not exist"),
    (["report", "/nonexistent/store"], "does not exist"),
    (["score", "--set", "margin.percentil=5", "/tmp"], "percentil"),
    (["run", "--epochs", "x"], "--epochs"),
    (["run", "--dataset", "a\rb\nc"], "'a\\rb\\nc'"),  # refused, its control characters echoed escaped
    (["run", "--bad\ropt"], "No such option: --bad"),  # and in click's own usage errors
])
def test_bad_input_is_one_line_with_exit_code_2(args, needle, tmp_path):
    result = invoke(*args, "--out", tmp_path / "s") if args[0] == "run" else invoke(*args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "s").exists()  # nothing written


def test_a_killed_run_is_resumed_not_restarted(tmp_path):
    store = tmp_path / "store"
    command = [sys.executable, "-m", "cli", "run", "--variants", "random-labels", "--seeds", "1", "--lr", "0.02",
               "--checkpoint-every", "1", "--out", str(store)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen(command, cwd=Path(__file__).parents[2], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    epochs_before = 0
    while time.time() < deadline:
        files = list((store / "runs").glob("*.h5")) if (store / "runs").exists() else []
        if files:
            try:
                with h5py.File(files[0], "r") as f:
                    epochs_before = int(f.attrs.get("epochs", 0))
            except OSError:
                epochs_before = 0
            if epochs_before >= 5:
                break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert epochs_before >= 5, "the run never reached 5 epochs"
    with h5py.File(files[0], "r") as f:
        assert f.attrs["status"] == "running"
        checkpoint_epochs = int(f.attrs["epochs"])
    result = invoke("run", "--variants", "random-labels", "--seeds", "1", "--lr", "0.02", "--out", store, "--json")
    assert result.exit_code == 0, result.stderr
    with h5py.File(files[0], "r") as f:
        assert f.attrs["status"] == "complete" and f.attrs["resumed"] == 1
        history_epochs = f["history/epoch"][()]
        assert list(history_epochs) == list(range(len(history_epochs)))  # continuous: not restarted
        assert f.attrs["epochs"] > checkpoint_epochs
