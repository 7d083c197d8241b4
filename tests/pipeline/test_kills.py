"""A kill at any pause point the code has resumes to the uninterrupted run, bitwise (CPU), by both trainers.

Each test starts `audit run` in a subprocess with AUDIT_PAUSE_AT=point:count (audit/testhooks.py), SIGKILLs it
once it pauses there, reruns the same command, and compares every run file with a store trained without a
kill: final weights, the history (all but the wall-clock column) and the cached measure.
"""

import json
import os
import shutil
import signal
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

OLD_STORE = Path(__file__).parents[1] / "data" / "old_store" / "store"
# one batched group of four runs that stop at different epochs, so that the four results are written apart
GRID = ["--model", "mlp-1x64", "--train-size", "64", "--lr", "0.2", "--variants",
        "true,corrupt:0.5,random-labels,gaussian", "--seeds", "1", "--epochs", "40", "--checkpoint-every", "1",
        "--measure", "l2", "--json"]
TIMEOUT = 120
TRAINERS = ("batched", "sequential")


def grid(trainer):
    """The batched grid, or two of its runs trained one at a time (--no-batch)."""
    if trainer == "batched":
        return GRID
    variants = GRID.index("--variants") + 1
    return [*GRID[:variants], "true,gaussian", *GRID[variants + 1:], "--no-batch"]


def kill_at(zygote, point, *args):
    """Start `audit ARGS`, SIGKILL it once it pauses at point (asserting it gets there), return once dead."""
    mark = zygote.folder / f"mark-{zygote.count}"
    pid, _, err = zygote.start(*args, env={"AUDIT_PAUSE_AT": point, "AUDIT_PAUSE_MARK": str(mark)})
    deadline = time.monotonic() + TIMEOUT
    try:
        while not mark.exists():
            assert zygote.poll(pid) is None, f"ended before {point}: {err.read_text()}"
            assert time.monotonic() < deadline, f"never reached {point}"
            time.sleep(0.02)
    finally:
        os.kill(pid, signal.SIGKILL)
        zygote.wait(pid)


def contents(store):
    """Every run file's final weights, history without its wall-clock column, epochs, trainer and l2."""
    out = {}
    for path in sorted((store / "runs").glob("*.h5")):
        with h5py.File(path) as f:
            assert f.attrs["status"] == "complete", path
            out[path.stem] = {
                **{f"final/{k}": f["weights/final"][k][()] for k in f["weights/final"]},
                **{f"history/{k}": f["history"][k][()] for k in f["history"] if k != "seconds"},
                "epochs": f.attrs["epochs"], "trainer": f.attrs["trainer"], "l2": f["measures/l2"].attrs["value"]}
    return out


def assert_same(expected, got, point):
    assert expected.keys() == got.keys(), point
    for run_id, parts in expected.items():
        for name, value in parts.items():
            assert np.array_equal(value, got[run_id][name]), (point, run_id, name)


@pytest.fixture(scope="module")
def references(tmp_path_factory, zygote):
    """The grid trained without a kill, batched and run by run."""
    out = {}
    for trainer in TRAINERS:
        store = tmp_path_factory.mktemp("reference") / trainer
        code, _, stderr = zygote.run("run", *grid(trainer), "--out", store)
        assert code == 0, stderr
        out[trainer] = contents(store)
    assert {run["trainer"] for run in out["batched"].values()} == {"batched"}
    assert {run["trainer"] for run in out["sequential"].values()} == {"sequential"}
    epochs = sorted(run["epochs"] for run in out["batched"].values())
    assert len(set(epochs)) >= 3, epochs  # the results are written at different epochs
    return out


POINTS = [
    ("batched", "write:file:1"),        # the first write of experiment.json
    ("batched", "mid-epoch:3"),         # half-way through the group's third epoch
    ("batched", "write:checkpoint:6"),  # inside a checkpoint write of the group
    ("batched", "write:result:1"),      # inside each run's final write: the others then resume as a smaller
    ("batched", "write:result:2"),      # group, the last one alone (paired as in a group)
    ("batched", "write:result:3"),
    ("batched", "write:result:4"),
    ("batched", "write:measures:2"),    # inside the caching of a measure
    ("sequential", "mid-epoch:4"),
    ("sequential", "write:checkpoint:3"),
    ("sequential", "write:result:1"),
    ("sequential", "write:measures:1"),
]


@pytest.mark.parametrize("trainer, point", POINTS)
def test_a_kill_at_any_pause_point_resumes_to_the_uninterrupted_run(tmp_path, zygote, references, trainer, point):
    store = tmp_path / "killed"
    kill_at(zygote, point, "run", *grid(trainer), "--out", store)
    resumed = [a for a in grid(trainer) if a != "--no-batch"]  # without --no-batch: each run keeps its trainer
    code, _, stderr = zygote.run("run", *resumed, "--out", store)
    assert code == 0 and "Traceback" not in stderr, stderr
    assert_same(references[trainer], contents(store), point)
    assert not list((store / "runs").glob("*.tmp*")) and not list((store / "runs").glob("*.lock"))


def test_a_run_retrained_alone_after_damage_equals_the_one_its_group_trained(tmp_path, zygote, references):
    store = tmp_path / "s"
    assert zygote.run("run", *GRID, "--out", store)[0] == 0
    victims = sorted((store / "runs").glob("*.h5"))[:2]
    for victim in victims:  # one byte of the final weights changed by an editor that writes through h5py
        with h5py.File(victim, "r+") as f:
            name = sorted(f["weights/final"])[0]
            f["weights/final"][name][0] += 1
    code, _, stderr = zygote.run("run", *GRID, "--out", store)
    assert code == 0, stderr
    for victim in victims:
        assert f"retraining run {victim.stem} from scratch" in stderr and "final weights" in stderr
        assert victim.with_name(victim.name + ".corrupt").exists()
    assert_same(references["batched"], contents(store), "retrained")


def test_a_kill_inside_an_upgrade_leaves_the_old_file_and_the_rerun_upgrades_it(tmp_path, zygote):
    store = tmp_path / "old"
    shutil.copytree(OLD_STORE, store)
    before = {p.name: p.read_bytes() for p in (store / "runs").glob("*.h5")}
    kill_at(zygote, "write:upgrade:2", "verify", store, "--upgrade")
    after = {p.name: p.read_bytes() for p in (store / "runs").glob("*.h5")}
    assert sum(after[name] != before[name] for name in before) == 1  # the first upgraded, the second untouched
    code, stdout, stderr = zygote.run("verify", store, "--upgrade", "--json")
    assert code == 0, stderr
    counts = json.loads(stdout)["counts"]
    assert counts == {"upgraded": 3, "verified": 2}, counts  # two runs and the shared value; experiment.json, the first
    assert not list((store / "runs").glob("*.tmp*"))
