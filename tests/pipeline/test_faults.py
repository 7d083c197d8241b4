"""Nothing lost, nothing silent: corrupt files, concurrent writers, full disks (kills: test_kills.py)."""

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

import audit.store.files
from audit.errors import WorkError
from audit.store.analyses import make_analysis, read_analysis, store_analyses, store_analysis
from audit.store.digests import describe
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
    # a torch thread each: two processes of two threads on two cores spin against each other. Each waits, half-way
    # through the first epoch it trains, until the other is half-way through one too: both hold a run at once
    # whichever the scheduler started first (runs this small can otherwise all go to the first process)
    meet = tmp_path / "meet"
    meet.mkdir()
    one = {"OMP_NUM_THREADS": "1", "AUDIT_MEET_AT": "mid-epoch:1", "AUDIT_MEET_DIR": str(meet), "AUDIT_MEET_COUNT": "2"}
    (first, _, first_err), (second, _, second_err) = zygote.start(*args, env=one), zygote.start(*args, env=one)
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
    assert len(list(meet.iterdir())) == 2


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


# Analyses in run files (audit.store.analyses): a killed or failing write leaves the last good file, a flipped
# byte is named and never used, and a file holding analyses reads without weights as the report reads it.

ANALYSIS_WRITER = r"""
import sys
from pathlib import Path
import numpy as np
from audit.store.analyses import make_analysis, store_analysis
path, first, count = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
for i in range(first, first + count):
    store_analysis(path, "landscape/line", **make_analysis({"i": i}, 1, {"loss": np.full(1000, float(i))}))
    print(i, flush=True)
"""


def analysed_store(small_store, tmp_path):
    """A copy of the small store, and one of its run files."""
    store = tmp_path / "store"
    shutil.copytree(small_store, store)
    return store, sorted((store / "runs").glob("*.h5"))[0]


def line_entry(i):
    return make_analysis({"i": i}, 1, {"loss": np.full(1000, float(i))})


def assert_last_good(path, before, line):
    """The run file reads verified and undamaged, every part but its 1D landscape as in `before` (a record
    read with weights), and that landscape the one of write number `line` (None: absent), never a mix."""
    record = read_run(path, run_id=path.stem)
    assert record.verified and not record.damaged, record.damaged
    for name in ("init", "final", "history", "data"):
        got, expected = getattr(record, name), getattr(before, name)
        assert got.keys() == expected.keys() and all(np.array_equal(got[k], expected[k]) for k in expected), name
    assert record.attrs == before.attrs and record.measures.keys() == before.measures.keys()
    others = sorted(set(before.analyses) - {"landscape/line"})
    assert sorted(set(record.analyses) - {"landscape/line"}) == others
    for name in others:
        assert record.analyses[name]["attrs"] == before.analyses[name]["attrs"], name
        assert all(np.array_equal(v, record.analyses[name]["arrays"][k])
                   for k, v in before.analyses[name]["arrays"].items()), name
    if line is None:
        assert "landscape/line" not in record.analyses
    else:
        entry = record.analyses["landscape/line"]
        assert json.loads(entry["attrs"]["settings"]) == {"i": line}
        assert np.array_equal(entry["arrays"]["loss"], np.full(1000, float(line)))


def start_writer(path, first, count, env=None):
    """A process storing the 1D landscapes number first, first + 1, ... in turn, printing each number once
    written; in a session of its own, so that its reader process is killed with it."""
    return subprocess.Popen([sys.executable, "-c", ANALYSIS_WRITER, str(path), str(first), str(count)],
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def kill_group(process):
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.mark.parametrize("earlier", [None, 0], ids=["first-analysis", "replacing-one"])
def test_an_analysis_write_killed_before_its_rename_leaves_the_last_good_file(small_store, tmp_path, earlier):
    store, path = analysed_store(small_store, tmp_path)
    if earlier is not None:
        store_analysis(path, "landscape/line", **line_entry(earlier))
    before, raw = read_run(path, run_id=path.stem), path.read_bytes()
    mark = tmp_path / "mark"
    writer = start_writer(path, 1, 1, {"AUDIT_PAUSE_AT": "write:analysis:1", "AUDIT_PAUSE_MARK": str(mark)})
    deadline = time.monotonic() + 60
    while not mark.exists():
        assert writer.poll() is None, writer.stderr.read().decode()
        assert time.monotonic() < deadline, "never reached write:analysis"
        time.sleep(0.02)
    kill_group(writer)
    assert path.read_bytes() == raw  # the new file was written whole beside it, never renamed over it
    assert list((store / "runs").glob(f"{path.name}.tmp*")) and path.with_suffix(".lock").exists()
    assert_last_good(path, before, earlier)
    store_analysis(path, "landscape/line", **line_entry(2), wait_seconds=5)  # the dead writer's lock taken over
    assert_last_good(path, before, 2)
    assert not list((store / "runs").glob("*.tmp*")) and not path.with_suffix(".lock").exists()


def test_analysis_writes_killed_at_seeded_random_moments_always_leave_a_whole_file(small_store, tmp_path):
    store, path = analysed_store(small_store, tmp_path)
    store_analysis(path, "density", **line_entry(0))  # another analysis, which every write must keep
    before = read_run(path, run_id=path.stem)
    rng, first = random.Random(18), 1
    for _ in range(10):
        writer = start_writer(path, first, 10_000)
        done = writer.stdout.readline()  # one write finished: the loop (lock, read, write, fsync, rename) runs
        assert done, writer.stderr.read().decode()
        time.sleep(rng.uniform(0, 0.12))  # a few writes' time: the kill lands anywhere in one
        kill_group(writer)
        last = int([done, *writer.stdout.read().split()][-1])
        line = json.loads(read_run(path).analyses["landscape/line"]["attrs"]["settings"])["i"]
        assert line in (last, last + 1), (line, last)  # the last one reported, or the next one just renamed
        assert_last_good(path, before, line)
        first = line + 1
    store_analysis(path, "landscape/line", **line_entry(first), wait_seconds=5)
    assert_last_good(path, before, first)
    assert not list((store / "runs").glob("*.h5.tmp*")) and not path.with_suffix(".lock").exists()


def interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def oserror(code):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))
    return fail


def interrupted_in_analyses(group, part, original=audit.store.files._write_part):
    """_write_part, interrupted once the write reaches the analyses: the temporary file half written."""
    if group.name.startswith("/landscape"):
        raise KeyboardInterrupt
    original(group, part)


FAILURES = {"read": (audit.store.files.READER, "read", interrupt, KeyboardInterrupt),
            "hdf5-write": (audit.store.files, "_write_part", interrupted_in_analyses, KeyboardInterrupt),
            "fsync": (audit.store.files.os, "fsync", oserror(errno.ENOSPC), WorkError),
            "pause": (audit.store.files, "pause_point", interrupt, KeyboardInterrupt),
            "rename": (audit.store.files.os, "replace", oserror(errno.EIO), WorkError)}


@pytest.mark.parametrize("stage", FAILURES)
def test_an_analysis_write_failing_at_any_stage_leaves_the_last_good_file(small_store, tmp_path, monkeypatch, stage):
    store, path = analysed_store(small_store, tmp_path)
    store_analysis(path, "landscape/line", **line_entry(0))
    before, raw = read_run(path, run_id=path.stem), path.read_bytes()
    target, name, replacement, raised = FAILURES[stage]
    monkeypatch.setattr(target, name, replacement)
    with pytest.raises(raised):
        store_analysis(path, "landscape/line", **line_entry(1))
    monkeypatch.undo()
    assert path.read_bytes() == raw
    assert sorted(p.name for p in (store / "runs").iterdir() if p.name.startswith(path.stem)) == [path.name]
    assert_last_good(path, before, 0)


def byte_of(path, part, where):
    """The file offset of one byte of an analysis part: a value of its first dataset, or a digit of its
    settings attribute (xor 1 keeps it a digit, so the text still decodes)."""
    data = path.read_bytes()
    with h5py.File(path) as f:
        group = f[part]
        if where == "array":
            dataset = group[sorted(group)[0]]
            return dataset.id.get_offset() + dataset.id.get_storage_size() // 2
        settings = group.attrs["settings"].encode()
    at = data.find(settings)
    assert at >= 0 and data.find(settings, at + 1) < 0  # found once: each part's settings differ
    return at + next(i for i, c in enumerate(settings) if chr(c).isdigit())


@pytest.mark.parametrize("part, where", [("landscape/plane", "array"), ("density", "array"),
                                         ("landscape/line", "settings")])
def test_a_flipped_byte_in_an_analysis_is_named_by_verify_and_read_and_never_used(small_store, tmp_path, part,
                                                                                     where):
    store, path = analysed_store(small_store, tmp_path)
    grid = np.linspace(-1, 1, 21)
    entries = {"landscape/line": make_analysis({"points": 21}, 1, {"alpha": grid, "loss": grid ** 2}),
               "landscape/plane": make_analysis({"resolution": 21}, 1, {"loss": np.add.outer(grid, grid) ** 2}),
               "density": make_analysis({"steps": 80}, 1, {"density": np.exp(-grid ** 2)})}
    store_analyses(path, entries)
    report = runner.invoke(app, ["report", str(store), "--json"])  # read without weights, analyses and all
    assert report.exit_code == 0, report.stderr
    assert path.stem in {r["run_id"] for r in json.loads(report.stdout)["runs"]}
    assert runner.invoke(app, ["verify", str(store)]).exit_code == 0
    before = read_run(path, run_id=path.stem)

    data = bytearray(path.read_bytes())
    data[byte_of(path, part, where)] ^= 1
    path.write_bytes(bytes(data))

    for weights in (False, True):  # as the report reads, then whole
        record = read_run(path, weights=weights, run_id=path.stem)
        assert record.damaged == {part: "digest mismatch"} and read_analysis(record, part) is None
        assert sorted(record.analyses) == sorted(set(entries) - {part})  # the others still used
        assert record.measures.keys() == before.measures.keys()
    assert all(np.array_equal(record.final[k], before.final[k]) for k in before.final)
    verified = runner.invoke(app, ["verify", str(store)])
    said = " ".join(verified.stdout.split())
    assert verified.exit_code == 1 and f"{describe(part)}: digest mismatch" in said, said
    report = runner.invoke(app, ["report", str(store), "--json"])
    assert "Traceback" not in report.output
    assert any(path.name in line and f"{describe(part)} (digest mismatch)" in line
               for line in report.stderr.splitlines()), report.stderr
