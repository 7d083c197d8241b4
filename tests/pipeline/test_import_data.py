"""`audit import --labels/--data` and `audit export-data`: a model trained elsewhere on audit's exact data (or
on the user's own) comes back as the run it is, its labels' or data's SHA-256 in the run id."""

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from audit.data.fitted import array_sha256, build_run_data
from audit.errors import UsageError, WorkError
from audit.spec.run import RunSpec
from audit.store.files import read_run
from cli import app

runner = CliRunner()

MODEL = "roundtrip_mlp:build"  # a module name of its own: other tests' mynet modules differ
NET = """
from torch import nn
def build(num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, num_classes))
"""
SPEC = ["--dataset", "digits", "--variant", "random-labels", "--seed", "0"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A folder with d.npz (exported: digits, random labels, seed 0), the model module, and init.pt / final.pt
    of that model trained by hand on d.npz's x_train and y_train to train accuracy 1.0."""
    folder = tmp_path_factory.mktemp("roundtrip")
    (folder / "roundtrip_mlp.py").write_text(textwrap.dedent(NET))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.syspath_prepend(str(folder))
        result = runner.invoke(app, ["export-data", "digits", "--variant", "random-labels", "--seed", "0",
                                     "--out", "d.npz"])
        assert result.exit_code == 0, result.stderr
        assert "--dataset digits --variant random-labels --seed 0" in result.stdout
        arrays = np.load(folder / "d.npz")
        x, y = torch.from_numpy(arrays["x_train"]), torch.from_numpy(arrays["y_train"])
        from roundtrip_mlp import build
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = build(10)
        torch.save(model.state_dict(), folder / "init.pt")
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        for step in range(1, 2001):  # full batch; about 150 steps on 2 cores, under a second
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            if step % 25 == 0 and bool((model(x).argmax(1) == y).all()):
                break
        assert bool((model(x).argmax(1) == y).all()), "the MLP did not fit the random labels"
        torch.save(model.state_dict(), folder / "final.pt")
        yield folder


def audit(*args: str):
    return runner.invoke(app, [*args])


def imported(store: Path, *extra: str) -> dict:
    result = audit("import", str(store), "--model", MODEL, "--init", "init.pt", "--final", "final.pt", *extra,
                   "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_export_writes_exactly_the_data_a_run_of_the_spec_fits(work):
    arrays = np.load(work / "d.npz")
    data = build_run_data(RunSpec(variant="random-labels", corrupt=1.0, seed=0))
    assert sorted(arrays.files) == ["x_test", "x_train", "y_test", "y_train"]
    for name, tensor in (("x_train", data.x_train), ("y_train", data.y_train), ("x_test", data.x_test),
                         ("y_test", data.y_test)):
        assert arrays[name].dtype == (np.float32 if name.startswith("x") else np.int64)
        assert np.array_equal(arrays[name], tensor.numpy()), name
    clean = build_run_data(RunSpec())
    assert not np.array_equal(arrays["y_train"], clean.y_train.numpy())  # the random labels, not the true ones
    assert np.array_equal(arrays["y_test"], clean.y_test.numpy())  # test labels stay clean


def test_export_data_json_and_refusing_to_overwrite(work, tmp_path):
    out = tmp_path / "sub" / "e.npz"
    result = audit("export-data", "digits", "--train-size", "200", "--seed", "3", "--out", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["arrays"]["x_train"] == {"shape": [200, 1, 8, 8], "dtype": "float32"}
    assert document["import_options"] == "--dataset digits --variant true --seed 3 --train-size 200"
    assert [p.name for p in out.parent.iterdir()] == ["e.npz"]  # no temporary file left
    before = out.read_bytes()
    again = audit("export-data", "digits", "--out", str(out))
    assert again.exit_code == 2 and again.stderr.startswith("audit: error: --out") and "exists" in again.stderr
    assert out.read_bytes() == before


def test_round_trip_fitted_then_other_labels_then_own_data(work, monkeypatch):
    monkeypatch.chdir(work)
    store = work / "store"
    plain = imported(store, *SPEC)
    assert plain["fitted"] is True and plain["train_acc"] == 1.0
    assert plain["run_id"] == RunSpec(model=MODEL, variant="random-labels", corrupt=1.0).run_id  # no digest: as before

    y = np.load("d.npz")["y_train"]
    np.save("same.npy", y)
    again = audit("import", str(store), "--model", MODEL, "--init", "init.pt", "--final", "final.pt", *SPEC,
                  "--labels", "same.npy")
    assert again.exit_code == 2 and plain["run_id"] in again.stderr  # audit's own labels: the same run

    permuted = np.random.default_rng(0).permutation(y)
    np.save("permuted.npy", permuted)
    other = imported(store, *SPEC, "--labels", "permuted.npy")
    assert other["run_id"] != plain["run_id"] and other["fitted"] is False and other["train_acc"] < 0.3
    record = read_run(store / "runs" / f"{other['run_id']}.h5")
    assert record.verified and record.spec.labels_sha256 == array_sha256(permuted.astype(np.int64))
    assert np.array_equal(record.data["train_labels"], permuted)
    assert record.attrs["labels_file"] == "permuted.npy"
    rebuilt = build_run_data(record.spec, stored=record.data)  # the fitted data, from the run file
    assert rebuilt.record["fingerprint_train"] == record.data["fingerprint_train"]
    assert np.array_equal(rebuilt.y_train.numpy(), permuted)
    with pytest.raises(WorkError, match="imported with its own train labels"):
        build_run_data(record.spec)  # without the run file's data they cannot be rebuilt
    assert record.spec.family_key() == read_run(store / "runs" / f"{plain['run_id']}.h5").spec.family_key()

    own = imported(store, "--variant", "random-labels", "--data", "d.npz")
    assert own["fitted"] is True and own["train_acc"] == 1.0
    assert own["run_id"] not in (plain["run_id"], other["run_id"])
    record = read_run(store / "runs" / f"{own['run_id']}.h5")
    assert record.verified and record.spec.dataset == "npz" and record.spec.preprocess == "none"
    arrays = np.load("d.npz")
    assert record.spec.data_sha256 == array_sha256(arrays["x_train"], arrays["y_train"], arrays["x_test"],
                                                   arrays["y_test"])
    assert np.array_equal(record.data["x_train"], arrays["x_train"])
    assert np.array_equal(record.data["test_labels"], arrays["y_test"])
    assert own["test_acc"] == pytest.approx(plain["test_acc"])  # the same model on the same test data
    rebuilt = build_run_data(record.spec, stored=record.data)
    assert rebuilt.record["fingerprint_train"] == record.data["fingerprint_train"]
    assert sorted(p.name for p in (store / "runs").glob("*.h5")) == sorted(
        f"{r['run_id']}.h5" for r in (plain, other, own))
    scored = audit("score", str(store), "--measure", "margin", "--json")  # from the run files' own data
    assert scored.exit_code == 0, scored.stderr
    margins = {run["run_id"]: run["measures"]["margin"] for run in json.loads(scored.stdout)["runs"]}
    assert margins[own["run_id"]] == pytest.approx(margins[plain["run_id"]], rel=1e-6)  # the same fitted data
    assert margins[other["run_id"]] < 0 < margins[plain["run_id"]]  # the permuted labels are not fitted


def refused(work: Path, store: Path, *extra: str) -> str:
    """The one stderr line of an import that must fail with exit 2, no run file written."""
    result = audit("import", str(store), "--model", MODEL, "--init", "init.pt", "--final", "final.pt", *extra)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("audit: error:"), result.stderr
    assert not list(store.glob("runs/*.h5"))
    return lines[0]


@pytest.mark.parametrize("labels, says", [
    (lambda y: y[:-1], "of shape (1346,); expected integers in [0, 10) of shape (1347,)"),
    (lambda y: y.reshape(1, -1), "of shape (1, 1347)"),
    (lambda y: y.astype(np.float64), "dtype float64 are not integers; expected integers in [0, 10) of shape (1347,)"),
    (lambda y: y.astype(bool), "dtype bool are not integers"),
    (lambda y: y + 1, "range over [1, 10]; expected integers in [0, 10)"),
    (lambda y: y - 1, "range over [-1, 8]"),
])
def test_wrong_labels_are_refused_in_one_line(work, tmp_path, monkeypatch, labels, says):
    monkeypatch.chdir(work)
    path = tmp_path / "labels.npy"
    np.save(path, labels(np.load("d.npz")["y_train"]))
    line = refused(work, tmp_path / "store", *SPEC, "--labels", str(path))
    assert f"--labels {path}" in line and says in line


def test_labels_files_that_are_no_array_are_refused(work, tmp_path, monkeypatch):
    monkeypatch.chdir(work)
    store = tmp_path / "store"
    assert "does not exist" in refused(work, store, "--labels", str(tmp_path / "none.npy"))
    (tmp_path / "text.npy").write_text("1,2,3\n")
    assert "cannot be read with numpy.load" in refused(work, store, "--labels", str(tmp_path / "text.npy"))
    assert "is an .npz archive" in refused(work, store, "--labels", "d.npz")
    np.save(tmp_path / "objects.npy", np.array([1, "a"], dtype=object))
    assert "cannot be read" in refused(work, store, "--labels", str(tmp_path / "objects.npy"))


def changed(arrays, **changes):
    out = {k: arrays[k] for k in arrays.files}
    out.update(changes)
    return {k: v for k, v in out.items() if v is not None}


@pytest.mark.parametrize("change, says", [
    (lambda a: changed(a, y_test=None), "no array y_test; expected x_train, y_train, x_test, y_test"),
    (lambda a: changed(a, y_train=a["y_train"][:-1]), "x_train of shape (1347, 1, 8, 8) and y_train of shape (1346,)"),
    (lambda a: changed(a, x_test=a["x_test"].reshape(450, 64)), "disagree past the first axis"),
    (lambda a: changed(a, y_train=a["y_train"].astype(np.float32)), "y_train: labels of dtype float32 are not integers"),
    (lambda a: changed(a, y_test=a["y_test"] - 1), "y_test holds the negative label -1"),
    (lambda a: changed(a, x_train=np.where(np.arange(64).reshape(1, 1, 8, 8) == 5, np.nan, a["x_train"])),
     "x_train holds NaN or infinite values"),
    (lambda a: changed(a, x_test=a["x_test"].astype(np.complex64)), "x_test of dtype complex64; expected real"),
])
def test_wrong_data_are_refused_in_one_line(work, tmp_path, monkeypatch, change, says):
    monkeypatch.chdir(work)
    path = tmp_path / "bad.npz"
    np.savez(path, **change(np.load("d.npz")))
    line = refused(work, tmp_path / "store", "--data", str(path))
    assert f"--data {path}" in line and says in line


def test_data_takes_no_options_that_rebuild_data(work, tmp_path, monkeypatch):
    monkeypatch.chdir(work)
    store = tmp_path / "store"
    assert "drop --dataset" in refused(work, store, "--data", "d.npz", "--dataset", "digits")
    assert "drop --labels, --train-size, --preprocess" in refused(
        work, store, "--data", "d.npz", "--labels", "x.npy", "--train-size", "10", "--preprocess", "standard")
    np.save(tmp_path / "one.npy", np.zeros(3))
    assert "holds one array" in refused(work, store, "--data", str(tmp_path / "one.npy"))
    assert not store.exists()  # refused before the store is created


def test_new_spec_fields_leave_old_run_ids_alone():
    spec = RunSpec()
    assert "labels_sha256" not in spec.canonical() and "data_sha256" not in spec.to_dict()
    digest = "0" * 64
    labelled = RunSpec(labels_sha256=digest)
    assert labelled.run_id != spec.run_id and labelled.family_key() == spec.family_key()
    assert RunSpec.from_dict(labelled.to_dict()) == labelled
    with pytest.raises(UsageError, match="64 lowercase hex"):
        RunSpec(labels_sha256="abc")
    with pytest.raises(UsageError, match="needs data_sha256"):
        RunSpec(dataset="npz", preprocess="none")
    with pytest.raises(UsageError, match="preprocess none"):
        RunSpec(dataset="npz", data_sha256=digest)


def test_family_names_leave_out_the_digests_of_user_data():
    from audit.judge.rows import family_labels
    specs = [RunSpec(model=MODEL, lr=0.01, variant="random-labels", corrupt=1.0, labels_sha256="ab" * 32),
             RunSpec(model=MODEL, lr=0.01), RunSpec(model=MODEL, lr=0.1)]
    labels = family_labels(specs)
    assert len(labels) == 2 and all("sha256" not in label and "lr=" in label for label in labels.values())
