import json

import h5py
import numpy as np
import pytest

from audit.errors import UsageError, WorkError
from audit.spec.run import RunSpec
from audit.store.directory import create_store, open_store
from audit.store.files import read_run, write_run
from audit.store.locks import RunLocked, run_lock
from audit.store.record import RunRecord


def test_a_store_reads_with_plain_h5py(small_store):
    experiment = json.loads((small_store / "experiment.json").read_text())
    paths = sorted((small_store / "runs").glob("*.h5"))
    assert len(paths) == 6 and sorted(experiment["run_ids"]) == sorted(p.stem for p in paths)
    for path in paths:
        with h5py.File(path, "r") as f:
            spec = json.loads(f.attrs["spec"])
            assert f.attrs["schema"] == 3 and f.attrs["run_id"] == path.stem
            assert set(json.loads(f.attrs["digests"])) >= {"attrs", "weights/final", "weights/init", "history", "data", "measures/l2"}
            assert f.attrs["status"] == "complete" and bool(f.attrs["fitted"])
            assert set(f["weights/final"]) == {"1.weight", "1.bias", "3.weight", "3.bias"}
            assert f["weights/final/1.weight"].shape == (256, 64)
            assert f["weights/init/1.weight"].shape == (256, 64)
            assert not np.array_equal(f["weights/init/1.weight"][()], f["weights/final/1.weight"][()])
            history = {k: f["history"][k][()] for k in f["history"]}
            assert history["epoch"][0] == 0 and history["epoch"][-1] == f.attrs["epochs"]
            assert history["train_acc"][-1] == f.attrs["train_acc"] == 1.0
            labels = f["data/train_labels"][()]
            assert labels.shape == (1347,) and f["data/train_index"].shape == (1347,)
            if spec["variant"] == "true":
                assert "label_seed" not in f["data"].attrs
            else:
                assert "label_seed" in f["data"].attrs
            assert f["measures/l2"].attrs["value"] > 0 and "seconds" in f["measures/l2"].attrs
            assert "resume" not in f  # complete runs keep no resume state


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path):
    record = RunRecord(spec=RunSpec(), final={"w": np.ones(3, dtype=np.float32)})
    path = tmp_path / "r.h5"
    write_run(path, record)
    write_run(path, record)
    assert [p.name for p in tmp_path.iterdir()] == ["r.h5"]
    assert read_run(path).final["w"].tolist() == [1, 1, 1]


def test_corrupt_and_tampered_files_are_named(tmp_path):
    path = tmp_path / "r.h5"
    write_run(path, RunRecord(spec=RunSpec(), final={"w": np.ones(3, dtype=np.float32)}))
    with h5py.File(path, "r+") as f:
        f["weights/final/w"][0] = 5.0
    record = read_run(path)
    assert record.damaged == {"weights/final": "digest mismatch"} and record.final == {}
    path.write_bytes(b"not hdf5 at all")
    with pytest.raises(WorkError, match="r.h5"):
        read_run(path)


def test_a_lock_is_exclusive_and_stale_locks_are_taken_over(tmp_path):
    path = tmp_path / "r.h5"
    with run_lock(path) as lock:
        assert lock.exists()
        with pytest.raises(RunLocked):
            with run_lock(path):
                pass
    assert not lock.exists()
    lock.write_text(json.dumps({"pid": 999999999, "host": __import__("socket").gethostname(), "heartbeat": 0}))
    with run_lock(path):
        pass


def test_store_paths_are_checked(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        create_store(tmp_path / "file")
    with pytest.raises(UsageError, match="does not exist"):
        open_store(tmp_path / "missing")


def test_a_shared_value_is_checked_against_its_digest(tmp_path):
    store = create_store(tmp_path / "s")
    store.put_shared("rademacher", "k", {"value": 0.25, "draws": [0.2, 0.3]})
    assert store.get_shared("rademacher", "k") == {"value": 0.25, "draws": [0.2, 0.3]}
    path = store.shared_path("rademacher", "k")
    assert store.check_shared(path) == ("verified", "")
    path.write_text(path.read_text().replace("0.25", "0.75"))  # an edit that keeps the JSON valid
    assert store.get_shared("rademacher", "k") is None  # recomputed, never trusted
    assert store.check_shared(path)[0] == "damaged" and "fails its digest" in store.check_shared(path)[1]
    path.write_text(json.dumps({"value": 0.5}))  # written before digests: read as it is
    assert store.get_shared("rademacher", "k") == {"value": 0.5}
    assert store.check_shared(path)[0] == "unverified"
    assert store.check_shared(path, upgrade=True)[0] == "upgraded" and store.check_shared(path)[0] == "verified"
    assert store.get_shared("rademacher", "k") == {"value": 0.5}
