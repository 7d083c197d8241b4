"""`audit landscape` and `audit density` (issue 18): endpoint losses equal the stored weights' losses, values
cached in the run file in the documented schema (plain h5py), reused while the settings match, a damaged
analysis named, a killed write leaving the last good file, and bad settings refused in one line."""

import json
import os
import shutil
import signal
import subprocess
import time

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from audit.analyses.landscape import subset
from audit.data.fitted import build_run_data
from audit.models.registry import build_model
from audit.store.files import read_run
from cli import app

runner = CliRunner()
LANDSCAPE = ["--set", "examples=64", "--set", "points=11", "--set", "resolution=5"]
DENSITY = ["--set", "examples=64", "--set", "probes=2", "--set", "steps=8"]


@pytest.fixture
def store(small_store, tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(small_store, copy)
    return copy


def invoke(*args):
    result = runner.invoke(app, [*map(str, args)])
    return result


def stored_loss(f: h5py.File, group: str, x: torch.Tensor, y: torch.Tensor, model_name: str) -> float:
    """The train loss of the weights in a run file's group, computed here from h5py arrays alone."""
    model = build_model(model_name, (64,), 10)
    model.load_state_dict({k: torch.from_numpy(f[group][k][()]) for k in f[group]})
    with torch.no_grad():
        return float(F.cross_entropy(model.eval()(x), y))


def test_landscape_endpoints_are_the_stored_weights_losses_and_the_schema_reads_with_h5py(store):
    result = invoke("landscape", store, *LANDSCAPE, "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert sorted(r["variant"] for r in document["runs"]) == ["random-labels", "true"]  # the default choice
    assert all(r["computed"] for r in document["runs"]) and len(document["figures"]) == 2
    assert all((store / "figures" / name).is_file() for name in ("landscape-1d.png", "landscape-2d.png"))
    assert "to compute" in result.stderr and "on this machine" in result.stderr  # the estimate came first
    for run in document["runs"]:
        path = store / "runs" / f"{run['run_id']}.h5"
        record = read_run(path)
        data = build_run_data(record.spec, stored=record.data)
        index = subset(data.x_train, data.y_train, 64, 0)
        x, y = data.x_train[index], data.y_train[index]
        with h5py.File(path) as f:
            assert f.attrs["schema"] == 4
            line, plane = f["landscape/line"], f["landscape/plane"]
            alpha, loss = line["alpha"][()], line["loss"][()]
            assert json.loads(line.attrs["settings"])["points"] == 11 and plane["loss"].shape == (5, 5)
            for at, group in ((0.0, "weights/init"), (1.0, "weights/final")):
                assert loss[alpha == at][0] == pytest.approx(stored_loss(f, group, x, y, record.spec.model), rel=1e-5)
            assert plane["loss"][2, 2] == pytest.approx(loss[alpha == 1.0][0], rel=1e-5)  # the centre is θ*
        assert run["final_loss"] == pytest.approx(float(loss[alpha == 1.0][0]))
        assert record.verified and not record.damaged
    assert invoke("verify", store).exit_code == 0


def test_a_second_landscape_reuses_the_cache_and_a_changed_setting_recomputes(store):
    first = json.loads(invoke("landscape", store, *LANDSCAPE, "--json").stdout)
    paths = [store / "runs" / f"{r['run_id']}.h5" for r in first["runs"]]
    before = [p.read_bytes() for p in paths]
    again = invoke("landscape", store, *LANDSCAPE, "--json")
    assert [r["computed"] for r in json.loads(again.stdout)["runs"]] == [False, False]
    assert "every one cached with these settings" in again.stderr
    assert [p.read_bytes() for p in paths] == before
    changed = json.loads(invoke("landscape", store, *LANDSCAPE, "--set", "span=0.5", "--json").stdout)
    assert [r["computed"] for r in changed["runs"]] == [True, True]
    with h5py.File(paths[0]) as f:
        assert f["landscape/plane/a"][()].max() == pytest.approx(0.5)
        assert "measures/l2" in f  # every other part kept
    assert read_run(paths[0]).measures["l2"]["value"] == read_run(paths[0]).measures["l2"]["value"]


def test_density_is_cached_normalized_and_named_when_damaged(store):
    result = invoke("density", store, *DENSITY, "--json")
    assert result.exit_code == 0, result.stderr
    run = json.loads(result.stdout)["runs"][0]
    path = store / "runs" / f"{run['run_id']}.h5"
    with h5py.File(path) as f:
        group = f["density"]
        assert np.trapezoid(group["density"][()], group["grid"][()]) == pytest.approx(1.0, abs=1e-6)
        assert np.allclose(group["weights"][()].sum(axis=1), 1.0)
        assert group.attrs["trace_estimate"] == pytest.approx(run["trace_estimate"])
    with h5py.File(path, "r+") as f:  # one value changed behind audit's back
        f["density/density"][0] += 1.0
    record = read_run(path)
    assert record.damaged == {"density": "digest mismatch"} and "density" not in record.analyses
    verified = invoke("verify", store)
    said = " ".join(verified.stdout.split())
    assert verified.exit_code == 1 and "damaged the cached Hessian density: digest mismatch" in said, said
    assert (store / "figures" / "hessian-density.png").is_file()


def test_files_without_analyses_stay_schema_3(store):
    path = sorted((store / "runs").glob("*.h5"))[0]
    with h5py.File(path) as f:
        assert f.attrs["schema"] == 3  # an older audit still reads and rewrites them


@pytest.mark.parametrize("args, says", [
    (["--set", "nonsense=1"], "--set nonsense=1: use KEY=VALUE with KEY one of examples, seed, points"),
    (["--set", "resolution=4"], "--set resolution must be odd"),
    (["--set", "examples=many"], "--set examples must be a int, got 'many'"),
    (["nosuchrun"], "no run in"),
])
def test_bad_landscape_input_is_one_line(store, args, says):
    result = invoke("landscape", store, *args)
    assert result.exit_code == 2, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], result.stderr


@pytest.mark.skipif(shutil.which("audit") is None, reason="the audit command is not installed (pip install -e .)")
def test_a_landscape_killed_while_writing_leaves_the_last_good_file(store, tmp_path):
    mark = tmp_path / "mark"
    env = {**os.environ, "AUDIT_PAUSE_AT": "write:analysis:1", "AUDIT_PAUSE_MARK": str(mark)}
    process = subprocess.Popen(["audit", "landscape", str(store), *LANDSCAPE], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not mark.exists():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "never reached write:analysis"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    for path in (store / "runs").glob("*.h5"):
        record = read_run(path)
        assert record.verified and not record.damaged and not record.analyses  # as before the kill
    result = invoke("landscape", store, *LANDSCAPE, "--json")
    assert result.exit_code == 0, result.stderr
    assert all(r["computed"] for r in json.loads(result.stdout)["runs"])
    assert not list((store / "runs").glob("*.tmp*"))


def test_the_html_report_holds_the_cached_pictures_and_fetches_nothing(store, tmp_path):
    assert invoke("landscape", store, *LANDSCAPE).exit_code == 0
    page = tmp_path / "audit.html"
    result = invoke("report", store, "--html", page)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(f"wrote {page} (") and "MB in" in result.stdout
    text = page.read_text()
    assert page.stat().st_size < 5e6 and "http://" not in text and "https://" not in text
    for title in ("Loss along the line from init to final weights", "Loss around the final weights",
                  "Spectra of WᵀW per layer"):
        assert title in text
    missing = invoke("report", store, "--html", tmp_path / "no" / "such.html")
    assert missing.exit_code == 2 and "give a file in an existing folder" in missing.stderr
