"""Beyond one machine: Ray backend, shards, and data-parallel training of one run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
from typer.testing import CliRunner

from cli import app

ROOT = Path(__file__).parents[2]
runner = CliRunner()


# The default measures that take most of the quick audit's scoring (about 90% of it: gradients and Jacobians
# over the train set, grad-noise alone over half). Scoring runs in the driver whatever the backend; the Ray
# store is scored with the others, which read every layer's weights and the train set's outputs.
RAY_UNSCORED = ("grad-noise", "jacobian-norm", "fisher-rao")


def test_quick_on_ray_matches_the_local_backend_and_survives_a_killed_worker(quick_run, tmp_path):
    import ray  # noqa: F401  (the README's test command installs the ray extra)

    folder, local = quick_run
    scored = [s["measure"] for s in local["summary"] if s["measure"] not in RAY_UNSCORED]
    assert len(scored) == len(local["summary"]) - len(RAY_UNSCORED)
    selection = [arg for name in scored for arg in ("--measure", name)]
    store = tmp_path / "ray"
    process = subprocess.Popen([sys.executable, "-m", "cli", "run", "--backend", "ray", "--cpus-per-run", "2",
                                *selection, "--out", str(store), "--json"], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.time() + 300
    while killed is None and time.time() < deadline and process.poll() is None:
        for lock in (store / "runs").glob("*.lock") if (store / "runs").exists() else []:
            try:
                pid = json.loads(lock.read_text())["pid"]
            except (OSError, ValueError, KeyError):
                continue
            if pid != process.pid:  # a Ray worker, mid-run
                os.kill(pid, signal.SIGKILL)
                killed = pid
                break
        time.sleep(0.2)
    out, err = process.communicate(timeout=600)
    assert killed is not None, "no worker was seen training"
    assert process.returncode == 0, err[-2000:]
    remote = json.loads(out)
    by_id = {r["run_id"]: r for r in local["runs"]}
    assert {r["run_id"] for r in remote["runs"]} == set(by_id)
    for run in remote["runs"]:
        assert run["status"] == "complete" and run["fitted"] == by_id[run["run_id"]]["fitted"]
        assert abs(run["test_acc"] - by_id[run["run_id"]]["test_acc"]) <= 0.02
    assert sorted(s["measure"] for s in remote["summary"]) == sorted(scored)

    def verdicts(root, *args):  # uncorrected p-values: the same test whether a store holds 30 measures or 33
        result = runner.invoke(app, ["report", str(root), "--correction", "none", *args, "--json"])
        assert result.exit_code == 0, result.stderr
        return {s["measure"]: s["verdict"] for s in json.loads(result.stdout)["summary"]}

    on_ray = verdicts(store)
    assert on_ray == verdicts(folder / local["store"], *selection)
    assert {"distinguishes", "fails"} <= set(on_ray.values())
    trainers = set()
    for path in (store / "runs").glob("*.h5"):
        with h5py.File(path) as f:
            trainers.add(int(f.attrs["pid"]))
    assert killed not in trainers  # every run was finished by the retried task


def test_shards_cover_the_grid_once_and_merge_into_the_single_process_report(tmp_path):
    args = ["run", "--model", "mlp-1x64", "--train-size", "300", "--variants", "true,corrupt:0.5,random-labels",
            "--seeds", "3", "--epochs", "100", "--measure", "l2-margin", "--measure", "params"]
    whole = tmp_path / "whole"
    assert runner.invoke(app, [*args, "--out", str(whole)]).exit_code == 0
    sharded = tmp_path / "sharded"
    covered = []
    for index in (1, 2, 3):
        plan = json.loads(runner.invoke(app, [*args, "--shard", f"{index}/3", "--plan", "--json",
                                              "--out", str(sharded)]).stdout)
        covered += [r["run_id"] for r in plan["runs"]]
        assert runner.invoke(app, [*args, "--shard", f"{index}/3", "--out", str(sharded)]).exit_code == 0
    assert sorted(covered) == sorted(p.stem for p in (whole / "runs").glob("*.h5"))  # each run exactly once
    merged = json.loads(runner.invoke(app, ["report", str(sharded), "--json"]).stdout)
    single = json.loads(runner.invoke(app, ["report", str(whole), "--json"]).stdout)

    def untimed(rows):  # everything but the measured seconds
        return [{k: v for k, v in row.items() if k not in ("seconds", "seconds_per_run")} for row in rows]

    assert untimed(merged["runs"]) == untimed(single["runs"])
    assert untimed(merged["summary"]) == untimed(single["summary"])
    assert {s["measure"]: s["verdict"] for s in single["summary"]}["l2-margin"] == "distinguishes"  # all runs fit
    bad = runner.invoke(app, [*args, "--shard", "4/3", "--out", str(sharded)])
    assert bad.exit_code == 2 and "--shard" in bad.stderr


def test_two_process_ddp_on_cpu_matches_single_process_training(tmp_path):
    args = ["run", "--model", "mlp-1x64", "--train-size", "300", "--variants", "random-labels", "--seeds", "1",
            "--epochs", "4", "--no-batch", "--measure", "params"]
    single = tmp_path / "single"
    assert runner.invoke(app, [*args, "--out", str(single)]).exit_code == 0
    ddp = tmp_path / "ddp"
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
                             "-m", "cli", *args, "--ddp", "--out", str(ddp)], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[:3000] + "\n...\n" + result.stderr[-1500:]  # a rank's own error first
    (a,), (b,) = list((single / "runs").glob("*.h5")), list((ddp / "runs").glob("*.h5"))
    assert a.name == b.name  # the same run id: data parallelism is operational
    with h5py.File(a) as f, h5py.File(b) as g:
        for name in f["weights/final"]:
            x, y = f["weights/final"][name][()], g["weights/final"][name][()]
            assert np.abs(x - y).max() <= 1e-5 * np.abs(x).max(), name
        assert g.attrs["epochs"] == 4
    assert not list((ddp / "runs").glob("*.lock"))


def test_ddp_without_torchrun_is_a_usage_error(tmp_path):
    result = runner.invoke(app, ["run", "--seeds", "1", "--variants", "true", "--ddp", "--out", str(tmp_path / "s")])
    assert result.exit_code == 2 and "torchrun" in result.stderr


def test_an_unknown_backend_and_a_missing_ray_are_one_line_usage_errors(tmp_path, monkeypatch):
    result = runner.invoke(app, ["run", "--seeds", "1", "--variants", "true", "--backend", "slurm",
                                 "--out", str(tmp_path / "s")])
    assert result.exit_code == 2 and "unknown backend 'slurm'" in result.stderr
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    result = runner.invoke(app, ["run", "--seeds", "1", "--variants", "true", "--backend", "ray",
                                 "--out", str(tmp_path / "s")])
    assert result.exit_code == 2 and "pip install -e '.[ray]'" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "s" / "runs").exists()
