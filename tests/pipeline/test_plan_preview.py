"""`audit run --plan` previews what the run will do (issue 17, item 12): it refuses what the run refuses, in the
same line, shows the settings that differ between runs, and estimates the time on this machine."""

import json

import pytest
from typer.testing import CliRunner

from audit.models.flops import training_flops
from audit.models.registry import build_model
from cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("options, message", [
    (["--dataset", "mnist", "--data-dir", "EMPTY"], "mnist not found: looked in"),
    (["--train-size", "99999"], "train size 99999 is larger than the 1347 training images of digits"),
])
def test_plan_refuses_what_run_refuses_with_the_same_line(tmp_path, options, message):
    options = [str(tmp_path / "empty") if o == "EMPTY" else o for o in options]
    (tmp_path / "empty").mkdir()
    lines = {}
    for plan in (["--plan"], []):
        result = invoke("run", "quick", "--seeds", "1", "--out", tmp_path / "s", *options, *plan)
        assert result.exit_code == 2, result.output
        lines[bool(plan)] = result.stderr.strip()
        assert message in lines[bool(plan)] and lines[bool(plan)].count("\n") == 0
    assert lines[True] == lines[False]
    assert not (tmp_path / "s").exists()


def test_sweep_plan_shows_the_swept_settings_and_an_estimate(tmp_path):
    result = invoke("run", "sweep", "--plan", "--json", "--out", tmp_path / "s")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    settings = {item["settings"] for item in document["runs"]}
    assert len(settings) == 8  # 96 runs: lr × weight decay × train size, each at 2 widths (the model), 2 variants, 3 seeds
    assert all("lr=" in s and "weight_decay=" in s and "train_size=" in s for s in settings)
    assert len({(i["settings"], i["model"], i["variant"], i["seed"]) for i in document["runs"]}) == 96
    first = document["runs"][0]
    spec = first["spec"]
    flops = training_flops(build_model(spec["model"], (1, 8, 8), 10), (1, 8, 8)) * spec["train_size"] * spec["epochs"]
    rate = document["estimate"]["matmul_gflops"] * 1e9 * document["estimate"]["training_fraction"]
    assert first["seconds_at_most"] == pytest.approx(flops / rate, rel=0.05, abs=0.1)
    assert document["estimate"]["seconds_at_most"] == pytest.approx(
        sum(i["seconds_at_most"] for i in document["runs"]), abs=0.2)
    table = invoke("run", "sweep", "--plan", "--out", tmp_path / "s").stdout
    assert "settings" in table and "on this machine" in table and "96 of 96 runs to train" in table
