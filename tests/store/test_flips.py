"""Fault injection: damaged run files are named, never read as different values, never a traceback.

Seeded single-byte flips in every region of a run file (its attributes, the digest manifest, the history, the
fitted-data record, the init, final and kept weights, the cached measures and their detail, and anywhere at
all), truncations, zero-filled blocks, foreign and non-regular files, a swapped file and schema changes. For
each, `audit report --json` and `audit score --recompute --json` either give exactly the clean store's values,
or name the damaged file while every other run is reported unchanged; a damaged run is never reported with a
changed value. Flips run in process; the FIFO, which could hang a reader, runs in a forked command.
"""

import contextlib
import json
import os
import random
import shutil
import signal
import struct
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app

MEASURES = ["--measure", "l2", "--measure", "margin", "--measure", "ww-alpha"]  # ww-alpha keeps a detail
FLIPS = {"attrs": 16, "manifest": 6, "history": 12, "data": 12, "weights/init": 12, "weights/final": 12,
         "weights/kept": 12, "measures": 12, "anywhere": 16}  # 110 flips
runner = CliRunner()


@contextlib.contextmanager
def deadline(seconds=60):
    """Fail a command that runs over a minute instead of hanging the suite."""
    def stop(signum, frame):
        raise TimeoutError(f"a command ran over {seconds} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def invoke(*args):
    with deadline():
        result = runner.invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output and result.exit_code in (0, 1), (result.exit_code, result.output)
    return result


def strip(document):
    """A JSON document without what differs between two identical computations (timings)."""
    if isinstance(document, dict):
        return {k: strip(v) for k, v in document.items() if k not in ("seconds", "seconds_per_run", "errors")}
    if isinstance(document, list):
        return [strip(v) for v in document]
    return document


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A scored store of three runs (one with a kept point), its run files' bytes, and the clean outputs."""
    store = tmp_path_factory.mktemp("flips") / "store"
    result = runner.invoke(app, ["run", "--model", "mlp-1x16", "--train-size", "120", "--lr", "0.2", "--variants",
                                 "true,random-labels,gaussian", "--seeds", "1", "--epochs", "8", "--keep", "epoch:2",
                                 *MEASURES, "--out", str(store), "--json"])
    assert result.exit_code == 0, result.stderr
    files = {p: p.read_bytes() for p in sorted((store / "runs").glob("*.h5"))}
    outputs = {"report": json.loads(invoke("report", store, "--json").stdout),
               "score": json.loads(invoke("score", store, "--recompute", *MEASURES, "--json").stdout)}
    restore(store, files)
    return store, files, outputs


def restore(store, files):
    for path in (store / "runs").iterdir():
        if path not in files or path.is_symlink() or path.is_dir():
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    for path, data in files.items():
        path.write_bytes(data)


def regions(path, data):
    """Byte ranges of each region of a run file: dataset values by their offsets, attribute values by search."""
    out = {name: [] for name in FLIPS}
    with h5py.File(path) as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and obj.id.get_offset() is not None:
                region = next(r for r in ("weights/init", "weights/final", "weights/kept", "history", "data",
                                          "measures") if name.startswith(r))
                out[region].append((obj.id.get_offset(), obj.id.get_storage_size()))

        f.visititems(visit)
        texts = [f.attrs["spec"], f.attrs["status"], f.attrs["run_id"]]
        numbers = [f.attrs[k] for k in ("test_acc", "train_acc", "test_loss", "train_seconds")]
        for needle, region in ([(t.encode(), "attrs") for t in texts]
                               + [(struct.pack("<d", v), "attrs") for v in numbers]
                               + [(f.attrs["digests"].encode(), "manifest")]
                               + [(struct.pack("<d", f[f"measures/{m}"].attrs["value"]), "measures")
                                  for m in f["measures"]]):
            at = data.find(needle)
            assert at >= 0, (region, needle[:20])
            out[region].append((at, len(needle)))
    out["anywhere"] = [(0, len(data))]
    return out


def flip_plan(files):
    """(file, region, offset, xor) for every flip, from a fixed seed, spread over the files and regions."""
    rng = random.Random(15)
    per_file = {path: regions(path, data) for path, data in files.items()}
    plan = []
    for region, count in FLIPS.items():
        for _ in range(count):
            path = rng.choice(sorted(files))
            start, size = rng.choice(per_file[path][region])
            plan.append((path, region, start + rng.randrange(size), rng.randrange(1, 256)))
    return plan


def check(result, clean_document, victim):
    """Exit 0 and exactly the clean values, or exit 1 naming the victim with every other run unchanged."""
    document = json.loads(result.stdout)
    if result.exit_code == 0:
        assert strip(document) == strip(clean_document)
        return "same"
    assert victim.name in result.stderr, result.stderr
    expected = {r["run_id"]: strip(r) for r in clean_document["runs"]}
    got = {r["run_id"]: strip(r) for r in document["runs"]}
    assert set(expected) - set(got) <= {victim.stem} and set(got) <= set(expected)
    for run_id, entry in got.items():
        assert entry == expected[run_id], run_id  # a damaged run is left out, never shown changed
    return "named"


def test_seeded_byte_flips_in_every_region_are_caught_or_harmless(clean):
    store, files, outputs = clean
    outcomes = {}
    for path, region, offset, xor in flip_plan(files):
        data = bytearray(files[path])
        data[offset] ^= xor
        path.write_bytes(bytes(data))
        for command, args in (("report", ("--json",)), ("score", ("--recompute", *MEASURES, "--json"))):
            try:
                outcome = check(invoke(command, store, *args), outputs[command], path)
            except AssertionError as err:
                raise AssertionError(f"{command} after a flip of byte {offset} ({region}) of {path.name}") from err
            outcomes.setdefault((region, command), []).append(outcome)
        restore(store, files)
    assert sum(len(v) for v in outcomes.values()) == 2 * sum(FLIPS.values()) >= 200
    for region in FLIPS:  # each region's flips were caught, not only landed in padding
        assert "named" in outcomes[(region, "report")], region
    for region in ("history", "weights/final", "weights/init", "weights/kept", "data", "manifest"):
        assert all(o == "named" for o in outcomes[(region, "report")]), region  # every value byte is digested


def damage_cases(files):
    victim = sorted(files)[1]
    data = files[victim]
    cases = {f"truncated to {n}": (victim, data[:n]) for n in (0, 1, 512, len(data) // 2, len(data) - 1)}
    for at in (0, 2048, len(data) // 3, len(data) - 4096):
        cases[f"zero-filled at {at}"] = (victim, data[:at] + bytes(4096) + data[at + 4096:])
    cases["random bytes"] = (victim, np.random.default_rng(0).bytes(len(data)))
    return victim, cases


def test_truncated_and_zero_filled_files_are_named_and_the_rest_reported(clean):
    store, files, outputs = clean
    victim, cases = damage_cases(files)
    for what, (path, data) in cases.items():
        path.write_bytes(data)
        for command, args in (("report", ("--json",)), ("score", ("--recompute", *MEASURES, "--json"))):
            result = invoke(command, store, *args)
            assert check(result, outputs[command], path) == "named", what
        restore(store, files)


def test_foreign_swapped_and_non_regular_files_are_refused_by_name(clean, tmp_path):
    store, files, outputs = clean
    first, second, third = sorted(files)
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["x"] = np.arange(3)
    cases = {
        "foreign": lambda: shutil.copy(tmp_path / "foreign.h5", first),
        "swapped": lambda: shutil.copy(second, first),  # second's run under first's name
        "directory": lambda: (first.unlink(), first.mkdir()),
        "link to a directory": lambda: (first.unlink(), first.symlink_to(tmp_path)),
        "dangling link": lambda: (first.unlink(), first.symlink_to(tmp_path / "gone.h5")),
    }
    for what, damage in cases.items():
        damage()
        result = invoke("report", store, "--json")
        assert check(result, outputs["report"], first) == "named", what
        lines = [line for line in result.stderr.splitlines() if first.name in line]
        assert len(lines) == 1, (what, result.stderr)
        if what == "swapped":  # the run it holds is reported once, from its own file
            runs = [r["run_id"] for r in json.loads(result.stdout)["runs"]]
            assert runs.count(second.stem) == 1 and first.stem not in runs and "holds run" in lines[0]
        restore(store, files)
    assert third.read_bytes() == files[third]


def test_a_fifo_named_like_a_run_file_is_refused_without_a_hang(clean, zygote):
    store, files, _ = clean
    fifo = store / "runs" / "000000000000.h5"
    os.mkfifo(fifo)
    try:
        for command, args in (("report", ()), ("score", MEASURES)):
            code, stdout, stderr = zygote.run(command, store, *args, "--json")
            assert code == 1 and "Traceback" not in stderr, stderr
            assert [line for line in stderr.splitlines() if fifo.name in line] == [
                line for line in stderr.splitlines() if "is a FIFO, not a run file" in line] != []
            assert len(json.loads(stdout)["runs"]) == len(files)
        code, stdout, stderr = zygote.run("verify", store, "--json")
        checked = {Path(f["path"]).name: f for f in json.loads(stdout)["files"]}
        assert code == 1 and checked[fifo.name]["state"] == "unreadable" and "FIFO" in checked[fifo.name]["message"]
        assert sum(f["state"] == "verified" for f in checked.values()) == len(files) + 1  # and experiment.json
    finally:
        restore(store, files)


def test_schema_changes_newer_is_refused_older_reads_unverified(clean):
    store, files, outputs = clean
    first, second, _ = sorted(files)
    with h5py.File(first, "r+") as f:  # from a newer audit
        f.attrs["schema"] = 9
    with h5py.File(second, "r+") as f:  # from audit before digests (schema 2)
        f.attrs["schema"] = 2
        del f.attrs["digests"]
    result = invoke("report", store, "--json")
    assert check(result, outputs["report"], first) == "named"
    assert "schema 9" in result.stderr and "upgrade audit" in result.stderr and second.name not in result.stderr
    shown = json.loads(invoke("show", store, second.stem, "--json").stdout)
    assert shown["verified"] is False and shown["integrity"].startswith("unverified")
    assert json.loads(invoke("show", store, sorted(files)[2].stem, "--json").stdout)["verified"] is True
    restore(store, files)


def test_fifos_in_place_of_experiment_json_or_a_lock_hang_nothing(clean, zygote, tmp_path):
    store, files, _ = clean
    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    (copy / "experiment.json").unlink()
    os.mkfifo(copy / "experiment.json")
    code, _, stderr = zygote.run("run", "--model", "mlp-1x16", "--train-size", "120", "--variants", "true",
                                 "--seeds", "1", "--epochs", "1", "--out", copy)
    assert code == 1 and "experiment.json is unreadable" in stderr and "not a regular file" in stderr, stderr
    victim = sorted((copy / "runs").glob("*.h5"))[0]
    os.mkfifo(victim.with_suffix(".lock"))  # garbage in place of a lock: taken over
    code, stdout, stderr = zygote.run("score", copy, "--measure", "params", "--json")
    assert code == 0 and all(r["measures"]["params"] for r in json.loads(stdout)["runs"]), stderr
    assert not victim.with_suffix(".lock").exists()


def test_a_damaged_cached_value_is_recomputed_and_said_so(clean):
    store, files, outputs = clean
    victim = sorted(files)[0]
    with h5py.File(victim, "r+") as f:  # an edit through h5py: HDF5's own checksums would pass it
        f["measures/l2"].attrs["value"] = 3.0
    report = invoke("report", store, "--json")
    assert report.exit_code == 1 and f"{victim} is damaged: the cached measure l2 (digest mismatch)" in report.stderr
    assert "`audit score` recomputes it" in report.stderr
    result = invoke("score", store, *MEASURES, "--json")
    assert result.exit_code == 0 and "the cached measure l2 was damaged (digest mismatch); recomputed" in result.stderr
    assert strip(json.loads(result.stdout)) == strip(outputs["score"])
    assert strip(json.loads(invoke("report", store, "--json").stdout)) == strip(outputs["report"])  # healed
    restore(store, files)
