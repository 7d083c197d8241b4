"""Analyses in run files (audit.store.analyses): written under the run lock with every other part kept, read
back as the README documents them with plain h5py, reused only for exactly the same settings and version,
refused when they could not be judged or would lose something, and absent from older files."""

import json
import os
import shutil
import socket
import statistics
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from audit.errors import WorkError
from audit.spec.run import RunSpec
from audit.store.analyses import (
    analysis_matches,
    make_analysis,
    read_analysis,
    settings_stamp,
    store_analyses,
    store_analysis,
    write_analyses,
)
from audit.store.digests import ANALYSIS_PARTS, damage_report, describe, manifest, recomputable
from audit.store.files import read_run, record_parts, write_run
from audit.store.locks import RunLocked, run_lock
from audit.store.record import ANALYSES, ANALYSIS_GROUPS, RunRecord

OLD_RUNS = Path(__file__).resolve().parents[1] / "data" / "old_store" / "store" / "runs"
LINE = {"points": 5, "stretch": 0.25, "examples": 64, "seed": 0}
PLANE = {"resolution": 3, "span": 1.0, "examples": 64, "seed": 0}


def run_file(folder: Path, status: str = "complete") -> Path:
    """A run file with a part of every kind: data, init/final weights, history, a measure with a detail, a
    kept point, named by its run id as in a store."""
    rng = np.random.default_rng(0)
    weights = {"0.weight": rng.normal(size=(4, 3)).astype(np.float32), "0.bias": np.zeros(4, np.float32)}
    record = RunRecord(
        spec=RunSpec(), status=status, fitted=status == "complete",
        attrs={"train_acc": 1.0, "test_acc": 0.5, "epochs": 3, "trainer": "sequential"},
        data={"train_labels": np.arange(10) % 3, "label_seed": 7},
        init={k: v * 0.5 for k, v in weights.items()}, final=weights,
        history={"epoch": np.arange(4.0), "train_loss": np.linspace(2, 0.1, 4)},
        measures={"l2": {"value": 1.5, "version": 1, "settings": "{}", "detail": {"per_layer": np.ones(2)}}},
        kept={"epoch:1": {"attrs": {"epoch": 1, "train_loss": 1.0}, "weights": {k: v + 1 for k, v in weights.items()}}},
        resume=b"opaque" if status == "running" else None)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{record.run_id}.h5"
    write_run(path, record)
    return path


def line_entry(loss_offset: float = 0.0, **settings):
    alpha = np.linspace(-0.25, 1.25, 5)
    return make_analysis({**LINE, **settings}, 1, {"alpha": alpha, "loss": (alpha - 1) ** 2 + loss_offset,
                                                   "accuracy": np.full(5, 0.5)}, seconds=0.25, reference="Li 2018")


def plane_entry():
    a = np.linspace(-1, 1, 3)
    return make_analysis(PLANE, 1, {"a": a, "b": a, "loss": np.add.outer(a ** 2, 2 * a ** 2),
                                    "accuracy": np.ones((3, 3))}, seconds=0.5)


def density_entry():
    grid = np.linspace(-1, 5, 50)
    density = np.exp(-grid ** 2)
    return make_analysis({"probes": 2, "steps": 8}, 1, {"grid": grid, "density": density / np.trapezoid(density, grid)},
                         trace_estimate=3.0)


def h5_contents(path: Path, skip: tuple[str, ...] = ()) -> dict:
    """Every attribute and dataset of the file, by path, with plain h5py (the groups in skip left out)."""
    out = {}
    with h5py.File(path) as f:
        out["/"] = {k: v for k, v in f.attrs.items() if k not in ("digests", "schema")}

        def visit(name, obj):
            if name.split("/")[0] in skip:
                return
            out[name] = dict(obj.attrs) if isinstance(obj, h5py.Group) else (dict(obj.attrs), obj[()])

        f.visititems(visit)
    return out


def assert_same_contents(expected: dict, got: dict) -> None:
    assert expected.keys() == got.keys()
    for name, value in expected.items():
        if isinstance(value, tuple):
            assert value[0] == got[name][0] and np.array_equal(value[1], got[name][1]), name
        else:
            assert value == got[name], name


def test_analyses_read_with_plain_h5py_as_documented_and_every_other_part_is_kept(tmp_path):
    path = run_file(tmp_path)
    before, digests_before = h5_contents(path), json.loads(h5py.File(path).attrs["digests"])
    line, plane = line_entry(), plane_entry()
    written = store_analyses(path, {"landscape/line": line, "landscape/plane": plane})
    with h5py.File(path) as f:
        assert f.attrs["schema"] == 4
        group = f["landscape/line"]
        assert sorted(group) == ["accuracy", "alpha", "loss"]
        assert np.array_equal(group["loss"][()], line["arrays"]["loss"])
        assert json.loads(group.attrs["settings"]) == LINE and group.attrs["version"] == 1
        assert group.attrs["seconds"] == 0.25 and group.attrs["reference"] == "Li 2018"
        assert f["landscape/plane/loss"].shape == (3, 3) and dict(f["landscape"].attrs) == {}
        digests = json.loads(f.attrs["digests"])
    assert set(digests) - set(digests_before) == {"landscape", "landscape/line", "landscape/plane"}
    assert {k: digests[k] for k in digests_before} == digests_before  # every other part's digest unchanged
    assert_same_contents(before, h5_contents(path, skip=("landscape",)))
    record = read_run(path)
    assert record.verified and not record.damaged
    assert np.array_equal(read_analysis(record, "landscape/plane")["arrays"]["loss"], plane["arrays"]["loss"])
    assert manifest(record_parts(written)) == manifest(record_parts(record))  # returned as written


@pytest.mark.parametrize("settings, version, matches", [
    (LINE, 1, True),
    ({"seed": 0, "examples": 64, "stretch": 0.25, "points": 5}, 1, True),  # key order is no difference
    ({**LINE, "points": 7}, 1, False),
    ({**LINE, "stretch": 1}, 1, False),  # not 0.25
    ({**LINE, "seed": 0.0}, 1, False),  # 0.0 is not 0: a float setting where an int was stored
    ({k: v for k, v in LINE.items() if k != "seed"}, 1, False),
    ({**LINE, "extra": 1}, 1, False),
    (LINE, 2, False),
])
def test_a_cached_analysis_matches_only_exactly_its_settings_and_version(tmp_path, settings, version, matches):
    path = run_file(tmp_path)
    store_analysis(path, "landscape/line", **line_entry())
    record = read_run(path, weights=False)
    assert analysis_matches(record, "landscape/line", settings, version=version) is matches
    assert not analysis_matches(record, "landscape/plane", LINE, version=1)  # not cached at all


def test_a_stamp_that_cannot_be_judged_never_matches(tmp_path):
    record = RunRecord(spec=RunSpec())
    for attrs in ({"version": 1}, {"settings": "not json", "version": 1}, {"settings": "[1]", "version": 1},
                  {"settings": settings_stamp(LINE), "version": "1"}, {"settings": settings_stamp(LINE)}):
        record.analyses["landscape/line"] = {"attrs": attrs, "arrays": {}}
        assert not analysis_matches(record, "landscape/line", LINE, version=1), attrs


def test_a_new_analysis_keeps_the_others_and_replaces_only_its_own(tmp_path):
    path = run_file(tmp_path)
    store_analyses(path, {"landscape/line": line_entry(), "landscape/plane": plane_entry()})
    store_analysis(path, "density", **density_entry())
    store_analysis(path, "landscape/line", **line_entry(loss_offset=1.0, points=9))
    record = read_run(path)
    assert sorted(record.analyses) == ["density", "landscape/line", "landscape/plane"]
    assert analysis_matches(record, "landscape/line", {**LINE, "points": 9}, version=1)
    assert not analysis_matches(record, "landscape/line", LINE, version=1)
    with h5py.File(path) as f:
        assert np.array_equal(f["landscape/line/loss"][()], line_entry(loss_offset=1.0)["arrays"]["loss"])
        assert np.array_equal(f["landscape/plane/loss"][()], plane_entry()["arrays"]["loss"])
        assert f["density"].attrs["trace_estimate"] == 3.0
    assert record.measures["l2"]["value"] == 1.5 and sorted(record.kept) == ["epoch:1"]
    assert record.final["0.weight"].shape == (4, 3) and record.verified and not record.damaged


def test_text_arrays_and_container_attributes_are_stored_as_a_read_gives_them(tmp_path):
    path = run_file(tmp_path)
    entry = make_analysis({"layers": ["0"]}, 1, {"layers": np.array(["0.weight", "2.weight"]), "x": [1, 2]},
                          bounds=[0.0, 1.0], unset=None)
    store_analysis(path, "density", **entry)
    stored = read_analysis(read_run(path), "density")
    assert stored["attrs"] == {"settings": '{"layers": ["0"]}', "version": 1, "bounds": "[0.0, 1.0]"}
    assert [v.decode() for v in stored["arrays"]["layers"]] == ["0.weight", "2.weight"]
    assert stored["arrays"]["x"].tolist() == [1, 2]


@pytest.mark.parametrize("entries, says", [
    ({"landscape": line_entry()}, "unknown analysis part 'landscape'"),
    ({"spectrum": line_entry()}, "unknown analysis part 'spectrum': one of landscape/line, landscape/plane, density"),
    ({"density": {"attrs": {"version": 1}, "arrays": {}}}, "lacks attribute settings"),
    ({"density": {"attrs": {"settings": "{}"}, "arrays": {}}}, "lacks attribute version"),
    ({"density": {"attrs": {"settings": "{not json", "version": 1}, "arrays": {}}}, "settings must be JSON text"),
    ({"density": {"attrs": {"settings": "{}", "version": 1.5}, "arrays": {}}}, "version an integer"),
    ({"density": make_analysis({}, 1, {"when": np.array(["2024-01-01"], dtype="datetime64[D]")})},
     "array 'when' of dtype datetime64"),
])
def test_an_entry_that_could_not_be_judged_or_stored_is_refused_before_anything_is_written(tmp_path, entries, says):
    path = run_file(tmp_path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=says.replace("(", r"\(")):
        store_analyses(path, entries)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_a_running_or_damaged_run_is_refused_and_left_as_it_is(tmp_path):
    running = run_file(tmp_path / "a", status="running")
    before = running.read_bytes()
    with pytest.raises(WorkError, match="still training"):
        store_analysis(running, "density", **density_entry())
    assert running.read_bytes() == before
    damaged = run_file(tmp_path)
    with h5py.File(damaged, "r+") as f:
        f["weights/final/0.weight"][0, 0] += 1
    before = damaged.read_bytes()
    with pytest.raises(WorkError, match=r"damaged: the final weights \(digest mismatch\); `audit run` retrains"):
        store_analysis(damaged, "density", **density_entry())
    assert damaged.read_bytes() == before and not damaged.with_suffix(".lock").exists()


def test_damaged_caches_are_dropped_by_the_write_never_kept(tmp_path):
    path = run_file(tmp_path)
    store_analysis(path, "density", **density_entry())
    with h5py.File(path, "r+") as f:
        f["measures/l2"].attrs["value"] = 2.5
        f["density/density"][0] += 1
    record = store_analysis(path, "landscape/line", **line_entry())
    assert "l2" not in record.measures and sorted(record.analyses) == ["landscape/line"]
    reread = read_run(path)
    assert reread.verified and not reread.damaged and "l2" not in reread.measures
    assert sorted(reread.analyses) == ["landscape/line"]  # the damaged density is gone, not re-blessed


def test_write_analyses_needs_the_run_lock_and_store_analyses_waits_for_another_holder(tmp_path):
    path = run_file(tmp_path)
    with pytest.raises(RuntimeError, match="needs the run lock"):
        write_analyses(path, {"density": density_entry()})
    with run_lock(path):
        record = write_analyses(path, {"density": density_entry()})
    assert "density" in record.analyses and not path.with_suffix(".lock").exists()
    before = path.read_bytes()
    other = {"owner": "x", "pid": os.getppid(), "host": socket.gethostname(), "started": time.time(),
             "heartbeat": time.time()}  # a live process that is not this one
    path.with_suffix(".lock").write_text(json.dumps(other))
    with pytest.raises(RunLocked, match=f"held by pid {os.getppid()}"):
        store_analysis(path, "landscape/line", **line_entry(), wait_seconds=0)
    with pytest.raises(RuntimeError, match="needs the run lock"):
        write_analyses(path, {"density": density_entry()})
    assert path.read_bytes() == before and json.loads(path.with_suffix(".lock").read_text()) == other


def test_files_without_analyses_read_as_before(tmp_path):
    path = run_file(tmp_path)
    record = read_run(path)
    assert record.analyses == {} and read_analysis(record, "density") is None
    with h5py.File(path) as f:
        assert f.attrs["schema"] == 3 and "landscape" not in f and "density" not in f
    for old in sorted(OLD_RUNS.glob("*.h5")):  # written before digests, read and migrated in memory
        record = read_run(old, run_id=old.stem)
        assert record.analyses == {} and not record.damaged
        assert not analysis_matches(record, "landscape/line", LINE, version=1)


def test_an_analysis_stored_in_an_older_files_copy_keeps_its_weights_and_verifies(tmp_path):
    old = sorted(OLD_RUNS.glob("*.h5"))[0]
    path = tmp_path / old.name
    shutil.copy(old, path)
    before = read_run(path)
    assert not before.verified
    store_analysis(path, "density", **density_entry())
    after = read_run(path)
    assert after.verified and not after.damaged and "density" in after.analyses
    assert before.final.keys() == after.final.keys()
    assert all(np.array_equal(before.final[k], after.final[k]) for k in before.final)
    assert before.measures.keys() == after.measures.keys() and before.kept.keys() == after.kept.keys()


def test_a_file_with_analyses_reads_without_weights_as_fast_as_one_without(tmp_path):
    plain, analysed = run_file(tmp_path), run_file(tmp_path / "b")
    grid = np.linspace(-1, 1, 51)
    store_analyses(analysed, {"landscape/plane": make_analysis(PLANE, 1, {"a": grid, "b": grid,
                                                                           "loss": np.add.outer(grid, grid),
                                                                           "accuracy": np.ones((51, 51))}),
                              "density": density_entry()})
    record = read_run(analysed, weights=False)
    assert record.final == {} and record.init == {} and record.kept["epoch:1"]["weights"] == {}
    assert record.analyses["landscape/plane"]["arrays"]["loss"].shape == (51, 51)  # the report draws these

    def median_seconds(path):
        times = []
        for _ in range(7):
            start = time.perf_counter()
            read_run(path, weights=False)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    assert median_seconds(analysed) < 2 * median_seconds(plain) + 0.02


def test_every_analysis_part_is_named_in_damage_lines_and_counts_as_a_cache():
    assert set(ANALYSIS_PARTS) == {*ANALYSES, *ANALYSIS_GROUPS} and ANALYSIS_GROUPS == ("landscape",)
    assert [describe(p) for p in ANALYSES] == ["the cached 1D loss landscape", "the cached 2D loss landscape",
                                               "the cached Hessian density"]
    assert recomputable("density") and recomputable("landscape/line") and recomputable("measures/l2")
    assert not recomputable("weights/final") and not recomputable("history") and not recomputable("measures")
    assert f"is damaged: {describe('landscape/plane')} (digest mismatch)" in damage_report(
        "r.h5", {"landscape/plane": "digest mismatch"})
    assert damage_report("r.h5", {"measures/l2": "missing"}).endswith("(`audit score` recomputes it)")


def test_record_parts_refuses_an_analysis_name_outside_the_schema():
    record = RunRecord(spec=RunSpec(), analyses={"landscape": {"attrs": {}, "arrays": {}}})
    with pytest.raises(ValueError, match="unknown analysis part 'landscape'"):
        record_parts(record)
    with pytest.raises(ValueError, match="unknown analysis part"):
        read_analysis(record, "landscape")
