"""Measures along training: weights kept at chosen epochs or loss levels, judged at matched training loss."""

import json
import math

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from audit.errors import UsageError
from audit.spec.experiment import experiment_from_dict
from audit.spec.run import RunSpec
from audit.store.files import read_run
from audit.train.device import Operational
from audit.train.loop import train_run
from cli import app


def test_kept_weights_equal_a_run_stopped_at_that_epoch(tmp_path):
    spec = RunSpec(variant="random-labels", corrupt=1.0, epochs=30)
    record = train_run(spec, tmp_path / "a.h5", Operational(keep=("epoch:2", "loss:1.5")))
    short = train_run(RunSpec(variant="random-labels", corrupt=1.0, epochs=2), tmp_path / "b.h5")
    kept = read_run(tmp_path / "a.h5").kept
    assert set(kept) == {"epoch:2", "loss:1.5"}
    for name, value in short.final.items():
        assert np.array_equal(kept["epoch:2"]["weights"][name], value)
    loss_point = kept["loss:1.5"]["attrs"]
    history = record.history
    first = int(np.argmax(history["train_loss"] <= 1.5))
    assert loss_point["epoch"] == history["epoch"][first] and loss_point["train_loss"] <= 1.5
    assert history["train_loss"][first - 1] > 1.5  # the first time the level is reached


def test_score_and_report_at_a_keep_point(tmp_path):
    runner = CliRunner()
    store = tmp_path / "s"
    result = runner.invoke(app, ["run", "--variants", "true,random-labels", "--seeds", "1", "--model", "mlp-1x64",
                                 "--keep", "epoch:3", "--measure", "l2", "--out", str(store), "--json"])
    assert result.exit_code == 0, result.stderr
    scored = json.loads(runner.invoke(app, ["score", str(store), "--at", "epoch:3", "--measure", "l2",
                                            "--json"]).stdout)
    for run in scored["runs"]:
        with h5py.File(store / "runs" / f"{run['run_id']}.h5") as f:
            point = f["weights/kept/epoch:3"]
            expected = math.sqrt(sum(float((point[k][()].astype(np.float64) ** 2).sum()) for k in point
                                     if k.endswith("weight")))
            assert run["measures"]["l2"] == pytest.approx(expected, rel=1e-9)
            assert run["train_acc"] == point.attrs["train_acc"] and run["epochs"] == 3
            assert f["measures/l2@epoch:3"].attrs["value"] == pytest.approx(expected)
            assert f["measures/l2"].attrs["value"] != pytest.approx(expected)  # the end of training differs
    report = json.loads(runner.invoke(app, ["report", str(store), "--at", "epoch:3", "--json"]).stdout)
    assert [r["measures"]["l2"] for r in report["runs"]] == [r["measures"]["l2"] for r in scored["runs"]]
    bad = runner.invoke(app, ["report", str(store), "--at", "loss"])
    assert bad.exit_code == 2 and "keep" in bad.stderr


def test_keep_points_are_validated():
    with pytest.raises(UsageError):
        experiment_from_dict({"keep": ["epoch:0"]}, "x.toml")
    with pytest.raises(UsageError):
        experiment_from_dict({"keep": ["step:5"]}, "x.toml")
    assert experiment_from_dict({"keep": ["loss:0.1", "epoch:5"]}, "x.toml").keep == ("loss:0.1", "epoch:5")
