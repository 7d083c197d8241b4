"""Nothing lost, nothing silent: corrupt files, concurrent writers, full disks (kills: test_kills.py)."""

import json

import h5py
import numpy as np
from typer.testing import CliRunner

from audit.store.files import read_run
from audit.store.record import SCHEMA
from cli import app

runner = CliRunner()


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
    # audit run retrains what it can rebuild and keeps the damaged files aside; the newer file it refuses
    future_bytes = future.read_bytes()
    again = runner.invoke(app, ["run", "--model", "mlp-1x64", "--train-size", "200", "--variants",
                                "true,random-labels,gaussian,shuffled-pixels", "--seeds", "1", "--epochs", "3",
                                "--out", str(store), "--measure", "l2", "--json"])
    assert again.exit_code == 1
    runs = {r["run_id"]: r for r in json.loads(again.stdout)["runs"]}
    assert future.stem not in runs and all(r["status"] == "complete" for r in runs.values()) and len(runs) == 3
    assert (store / "runs" / f"{truncated.name}.corrupt").exists()
    assert future.read_bytes() == future_bytes and not (store / "runs" / f"{future.name}.corrupt").exists()
    assert any(future.name in line and "upgrade audit" in line and "does not retrain" in line
               for line in again.stderr.splitlines())
    assert sum(f"retraining run {path.stem}" in again.stderr for path in (truncated, foreign)) == 2


def test_two_concurrent_runs_train_every_run_once(tmp_path, zygote):
    store = tmp_path / "shared"
    args = ["run", "--model", "mlp-1x64", "--train-size", "300", "--variants",
            "true,corrupt:0.3,corrupt:0.6,random-labels,gaussian,shuffled-pixels", "--seeds", "1", "--epochs", "25",
            "--no-batch", "--measure", "l2", "--out", store]
    (first, _, first_err), (second, _, second_err) = zygote.start(*args), zygote.start(*args)
    codes = [zygote.wait(first), zygote.wait(second)]
    assert codes == [0, 0], [first_err.read_text(), second_err.read_text()]
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
