"""Nothing lost, nothing silent: kills at any point, corrupt files, concurrent writers, full disks."""

import json
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

from audit.store.files import read_run
from audit.store.record import SCHEMA
from cli import app

ROOT = Path(__file__).parents[2]
GRID = ["--model", "mlp-1x64", "--train-size", "300", "--variants", "corrupt:0.5,random-labels", "--seeds", "1",
        "--epochs", "14", "--checkpoint-every", "1", "--measure", "l2", "--measure", "margin"]
runner = CliRunner()


def audit(*args, env=None, wait=True):
    command = [sys.executable, "-m", "cli", *map(str, args)]
    environment = dict(os.environ, **(env or {}))
    if wait:
        return subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300)
    return subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def final_weights(store):
    out = {}
    for path in sorted((store / "runs").glob("*.h5")):
        with h5py.File(path) as f:
            assert f.attrs["status"] == "complete"
            out[path.stem] = {k: f["weights/final"][k][()] for k in f["weights/final"]}
    return out


def kill_at(store, point, extra=()):
    """Start `audit run`, let it reach the pause point, SIGKILL it there; returns once it is dead."""
    mark = store.parent / f"{store.name}.mark"
    process = audit("run", *GRID, *extra, "--out", store, env={"AUDIT_PAUSE_AT": point, "AUDIT_PAUSE_MARK": str(mark)},
                    wait=False)
    deadline = time.time() + 240
    while not mark.exists():
        assert process.poll() is None, process.stderr.read()
        assert time.time() < deadline, f"never reached {point}"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.mark.parametrize("point, extra", [
    ("mid-epoch:7", ()),                      # batched group, half-way through its 7th epoch
    ("write:checkpoint:5", ("--no-batch",)),  # one run alone, inside its 5th checkpoint write
    ("write:measures:1", ()),                 # after training, inside the first measure caching
])
def test_a_kill_anywhere_resumes_to_bitwise_identical_weights(tmp_path, point, extra):
    reference = tmp_path / "reference"
    assert audit("run", *GRID, *extra, "--out", reference).returncode == 0
    store = tmp_path / "killed"
    kill_at(store, point, extra)
    leftovers = list((store / "runs").glob("*.tmp*"))
    result = audit("run", *GRID, *extra, "--out", store, "--json")
    assert result.returncode == 0, result.stderr
    expected, got = final_weights(reference), final_weights(store)
    assert expected.keys() == got.keys()
    for run_id in expected:
        for name, value in expected[run_id].items():
            assert np.array_equal(value, got[run_id][name]), (point, run_id, name)
    document = json.loads(result.stdout)
    assert all(r["measures"]["l2"] is not None for r in document["runs"])
    if point != "write:measures:1":
        assert any(read_run(p).attrs.get("resumed") for p in (store / "runs").glob("*.h5"))
    assert all(not p.exists() or p.suffix != ".h5" for p in leftovers)  # a half write never replaced a run file


def test_corrupt_truncated_foreign_and_future_files_are_named_and_the_rest_reported(tmp_path):
    store = tmp_path / "s"
    result = runner.invoke(app, ["run", "--model", "mlp-1x64", "--train-size", "200", "--variants",
                                 "true,random-labels,gaussian,shuffled-pixels", "--seeds", "1", "--epochs", "3",
                                 "--out", str(store), "--measure", "l2"])
    assert result.exit_code == 0, result.stderr
    paths = sorted((store / "runs").glob("*.h5"))
    truncated, foreign, future, older = paths
    truncated.write_bytes(truncated.read_bytes()[:2000])
    foreign.unlink()
    with h5py.File(foreign, "w") as f:
        f["something"] = np.arange(3)
    with h5py.File(future, "r+") as f:
        f.attrs["schema"] = 99
    with h5py.File(older, "r+") as f:  # a schema-1 file: no train/test sizes and no digests yet
        f.attrs["schema"] = 1
        del f.attrs["train_size"], f.attrs["test_size"], f.attrs["digests"]
    result = runner.invoke(app, ["report", str(store), "--json"])
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert [r["run_id"] for r in document["runs"]] == [older.stem]
    assert read_run(older).attrs["train_size"] == 200 and read_run(older).attrs["schema"] == SCHEMA
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3 and "Traceback" not in result.stderr
    assert any(truncated.name in line and "audit run" in line for line in lines)
    assert any(foreign.name in line and "not an audit run file" in line for line in lines)
    assert any(future.name in line and "schema 99" in line and "upgrade" in line for line in lines)
    # audit run retrains what it can rebuild and keeps the damaged files aside
    again = runner.invoke(app, ["run", "--model", "mlp-1x64", "--train-size", "200", "--variants",
                                "true,random-labels,gaussian,shuffled-pixels", "--seeds", "1", "--epochs", "3",
                                "--out", str(store), "--measure", "l2", "--json"])
    assert all(r["status"] == "complete" for r in json.loads(again.stdout)["runs"][:4])
    assert (store / "runs" / f"{truncated.name}.corrupt").exists()


def test_two_concurrent_runs_train_every_run_once(tmp_path):
    store = tmp_path / "shared"
    args = ["run", "--model", "mlp-1x64", "--train-size", "300", "--variants",
            "true,corrupt:0.3,corrupt:0.6,random-labels,gaussian,shuffled-pixels", "--seeds", "1", "--epochs", "25",
            "--no-batch", "--measure", "l2", "--out", store]
    first, second = audit(*args, wait=False), audit(*args, wait=False)
    errors = [first.communicate()[1], second.communicate()[1]]
    assert first.returncode == 0 and second.returncode == 0, errors
    trainers = set()
    for path in sorted((store / "runs").glob("*.h5")):
        record = read_run(path)
        assert record.status == "complete" and "resumed" not in record.attrs
        assert list(record.history["epoch"]) == list(range(len(record.history["epoch"])))
        trainers.add(record.attrs["pid"])
    assert len(list((store / "runs").glob("*.h5"))) == 6
    assert not list((store / "runs").glob("*.lock"))
    assert len(trainers) == 2  # both processes trained some runs, no run twice


def test_a_full_disk_stops_with_a_clear_message_and_leaves_the_store_as_it_was(tmp_path, monkeypatch):
    import errno

    import audit.store.files

    store = tmp_path / "s"
    args = ["run", "--model", "mlp-1x64", "--train-size", "200", "--variants", "true", "--seeds", "1",
            "--epochs", "2", "--out", str(store), "--measure", "l2"]
    assert runner.invoke(app, args).exit_code == 0
    before = {p.name: p.read_bytes() for p in (store / "runs").iterdir()}

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(audit.store.files.os, "fsync", full)
    result = runner.invoke(app, ["score", str(store), "--measure", "params"])
    assert result.exit_code == 1 and "no space left" in result.stderr and "Traceback" not in result.output
    assert {p.name: p.read_bytes() for p in (store / "runs").iterdir()} == before


def test_a_measure_that_fails_on_one_run_is_recorded_and_the_others_go_on(small_store, monkeypatch):
    import dataclasses

    import measures

    def flaky(ctx):
        if ctx.spec.variant == "random-labels":
            raise RuntimeError("this run breaks the measure")
        return 1.0

    broken = dataclasses.replace(measures.get("params"), name="flaky", fn=flaky)
    monkeypatch.setitem(measures.MEASURES, "flaky", broken)
    result = runner.invoke(app, ["score", str(small_store), "--measure", "flaky", "--json"])
    assert result.exit_code == 1
    runs = json.loads(result.stdout)["runs"]
    assert {r["variant"]: r["measures"]["flaky"] for r in runs if r["seed"] == 0} == {
        "true": 1.0, "corrupt": 1.0, "random-labels": None}
    assert "this run breaks the measure" in result.stderr
    with h5py.File(next(p for p in (small_store / "runs").glob("*.h5")
                        if read_run(p).spec.variant == "random-labels")) as f:
        assert f["measures/flaky"].attrs["failed"] and "RuntimeError" in f["measures/flaky"].attrs["reason"]
