"""Reading is pure: a store with a user's model reports from anywhere; experiment.json is never lost."""

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
NET = """
from torch import nn
def build(num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, num_classes))
"""


def audit_from(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """The CLI in a fresh process started in cwd, with no user module on its path."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def mixed_store(tmp_path_factory) -> Path:
    """A store with a trained digits run and an imported user model (mynet:build), both scored for l2."""
    work = tmp_path_factory.mktemp("work")
    (work / "mynet.py").write_text(textwrap.dedent(NET))
    store = work / "store"
    assert audit_from(work, "run", "--model", "mlp-1x16", "--variants", "true", "--seeds", "1", "--epochs", "3",
                      "--measure", "l2", "--out", str(store)).returncode == 0
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    torch.save(model.state_dict(), work / "init.pt")
    torch.save(model.state_dict(), work / "final.pt")
    imported = audit_from(work, "import", str(store), "--model", "mynet:build", "--init", "init.pt",
                          "--final", "final.pt")
    assert imported.returncode == 0, imported.stderr
    assert audit_from(work, "score", str(store), "--measure", "l2").returncode == 0
    return store


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_store_with_a_user_model_reports_from_anywhere(mixed_store):
    before = digests(mixed_store)
    result = audit_from(Path("/"), "report", str(mixed_store), "--json")
    assert result.returncode == 0, result.stderr
    runs = json.loads(result.stdout)["runs"]
    assert sorted(r["model"] for r in runs) == ["mlp-1x16", "mynet:build"]
    assert all(r["measures"]["l2"] is not None for r in runs)
    table = audit_from(Path("/"), "report", str(mixed_store))
    assert table.returncode == 0 and "mynet:build" not in table.stderr
    assert digests(mixed_store) == before  # reading never writes


def test_scoring_a_run_whose_model_cannot_be_imported_names_it_and_goes_on(mixed_store, tmp_path):
    store = tmp_path / "store"
    subprocess.run(["cp", "-r", str(mixed_store), str(store)], check=True)
    result = audit_from(Path("/"), "score", str(store), "--measure", "l2-init", "--json")
    assert result.returncode == 1
    runs = {r["model"]: r for r in json.loads(result.stdout)["runs"]}
    assert runs["mlp-1x16"]["measures"]["l2-init"] is not None  # the others are scored
    assert runs["mynet:build"]["measures"]["l2-init"] is None
    lines = [line for line in result.stderr.splitlines() if "mynet" in line]
    assert len(lines) == 1
    assert runs["mynet:build"]["run_id"] in lines[0] and "cannot load model 'mynet:build'" in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "\x00\xff"])
def test_a_corrupt_experiment_json_stops_run_with_one_line_and_stays_as_it_was(tmp_path, content):
    store = tmp_path / "store"
    (store / "runs").mkdir(parents=True)
    path = store / "experiment.json"
    path.write_bytes(content.encode("latin-1"))
    result = runner.invoke(app, ["run", "--model", "mlp-1x16", "--variants", "true", "--seeds", "1", "--epochs", "1",
                                 "--out", str(store)])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("audit: failed: ") and str(path) in lines[-1]
    assert "corrupt" in lines[-1] or "unreadable" in lines[-1]
    assert path.read_bytes() == content.encode("latin-1")
    assert list((store / "runs").iterdir()) == []  # nothing trained


def test_a_corrupt_experiment_json_stops_import_and_kernel_before_any_work(mixed_store, tmp_path):
    store = tmp_path / "store"
    subprocess.run(["cp", "-r", str(mixed_store), str(store)], check=True)
    path = store / "experiment.json"
    path.write_text('{"run_ids": ')
    runs_before = sorted(p.name for p in (store / "runs").iterdir())
    kernel = runner.invoke(app, ["kernel", "--dataset", "digits", "--train-size", "100", "--out", str(store)])
    assert kernel.exit_code == 1 and str(path) in kernel.stderr and kernel.stderr.count("\n") == 1
    assert path.read_text() == '{"run_ids": '
    assert sorted(p.name for p in (store / "runs").iterdir()) == runs_before


def test_experiment_json_keeps_imported_and_kernel_runs_across_runs(mixed_store, tmp_path):
    store = tmp_path / "store"
    subprocess.run(["cp", "-r", str(mixed_store), str(store)], check=True)
    assert runner.invoke(app, ["kernel", "--dataset", "digits", "--train-size", "100", "--out", str(store),
                               "--json"]).exit_code == 0
    before = json.loads((store / "experiment.json").read_text())
    assert len(before["imported"]) == 1 and len(before["kernel_runs"]) == 1
    rerun = runner.invoke(app, ["run", "--model", "mlp-1x16", "--variants", "true,random-labels", "--seeds", "1",
                                "--epochs", "2", "--measure", "l2", "--out", str(store)])
    assert rerun.exit_code == 0, rerun.stderr
    after = json.loads((store / "experiment.json").read_text())
    assert after["imported"] == before["imported"] and after["kernel_runs"] == before["kernel_runs"]
    assert set(before["run_ids"]) < set(after["run_ids"])
