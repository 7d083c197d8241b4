"""A user's own model (module:function) as a user meets it: edited between commands, raising in its factory or
forward pass, built from lazy modules. Each case as it was seen (issue 17, items 5, 7 and 13), and fixed."""

import sys
from pathlib import Path

import h5py
import pytest
from typer.testing import CliRunner

from cli import app

runner = CliRunner()

MODEL = """from torch import nn

def build(input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, {width}), nn.ReLU(), nn.Linear({width}, num_classes))
"""


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A module name unique to the test in a folder on sys.path; write(text) (re)writes it and forgets any
    imported copy, as a new `audit` process would."""
    name = f"usermod_{abs(hash(tmp_path)) % 10**8}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(text: str) -> str:
        (tmp_path / f"{name}.py").write_text(text)
        sys.modules.pop(name, None)
        return name

    yield write
    sys.modules.pop(name, None)


def run_args(module: str, store: Path, *extra: str) -> list[str]:
    return ["run", "quick", "--model", f"{module}:build", "--variants", "true,random-labels", "--seeds", "1",
            "--epochs", "3", "--out", store, "--measure", "l2", *extra]


def single_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.startswith("audit: error") or "Traceback" in line]
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


def test_editing_a_user_model_between_run_and_score_is_one_line_and_nothing_stale(tmp_path, user_module):
    module = user_module(MODEL.format(width=32))
    store = tmp_path / "s"
    assert invoke(*run_args(module, store)).exit_code == 0
    before = {p.name: p.read_bytes() for p in (store / "runs").glob("*.h5")}
    with h5py.File(next((store / "runs").glob("*.h5"))) as f:
        assert '"1.weight":[32,64]' in f.attrs["architecture"]  # recorded in the run file, plain h5py

    user_module(MODEL.format(width=48))
    for command in (["score", store, "--measure", "l2"], ["score", store, "--recompute"], run_args(module, store)):
        result = invoke(*command)
        assert result.exit_code == 2, result.output
        line = single_line(result.stderr)
        assert f"trained with another {module}:build" in line and "1.weight was 32×64, is 48×64" in line
        assert "--retrain" in line
    assert {p.name: p.read_bytes() for p in (store / "runs").glob("*.h5")} == before  # nothing written

    report = invoke("report", store)
    assert report.exit_code == 0 and f"model {module}:build: source changed" in report.stderr
    shown = invoke("show", store, next(iter(before))[:6])
    assert "model source   changed" in shown.stdout

    retrained = invoke(*run_args(module, store, "--retrain"))
    assert retrained.exit_code == 0, retrained.output
    assert retrained.stderr.count("audit: retraining run") == 2 and ".h5.replaced" in retrained.stderr
    assert sorted(p.name for p in (store / "runs").glob("*.h5.replaced")) == sorted(f"{n}.replaced" for n in before)
    for path in (store / "runs").glob("*.h5"):
        with h5py.File(path) as f:
            assert f["weights/final/1.weight"].shape == (48, 64) and f["weights/init/1.weight"].shape == (48, 64)
    assert invoke("score", store, "--measure", "l2").exit_code == 0
    assert "source" not in invoke("report", store).stderr  # unchanged now: no notice


def test_an_edit_that_keeps_every_shape_is_noticed_by_its_source(tmp_path, user_module):
    module = user_module(MODEL.format(width=16))
    store = tmp_path / "s"
    assert invoke(*run_args(module, store)).exit_code == 0
    user_module(MODEL.format(width=16).replace("nn.ReLU()", "nn.Tanh()"))  # same parameters, another model
    line = single_line(invoke("score", store).stderr)
    assert "its source" in line and "changed" in line


def test_reading_never_imports_user_code_and_says_not_checked_without_its_file(tmp_path, user_module):
    module = user_module(MODEL.format(width=16))
    store = tmp_path / "s"
    assert invoke(*run_args(module, store)).exit_code == 0
    (tmp_path / f"{module}.py").rename(tmp_path / "elsewhere.py")
    sys.modules.pop(module, None)
    report = invoke("report", store)
    assert report.exit_code == 0, report.output
    assert f"model {module}:build: source not checked" in report.stderr
    assert module not in sys.modules  # read without importing it
    run_id = next((store / "runs").glob("*.h5")).stem
    assert "not checked" in invoke("show", store, run_id).stdout


FAULTS = """import torch
from torch import nn

def factory(input_shape, num_classes):
    raise ValueError("width must be even")

class Late(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        if x.size(0) > 2:
            raise KeyError("batch too big")
        return self.fc(x.flatten(1))

def late(input_shape, num_classes):
    return Late()

def lazy(input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(32), nn.ReLU(), nn.LazyLinear(num_classes))
"""


@pytest.mark.parametrize("factory, error, line", [("factory", "ValueError: width must be even", 5),
                                                  ("late", "KeyError: 'batch too big'", 14)])
def test_an_error_in_user_code_is_one_line_with_its_file_and_leaves_no_store(tmp_path, user_module, factory,
                                                                              error, line):
    module = user_module(FAULTS)
    store = tmp_path / "s"
    result = invoke("run", "quick", "--model", f"{module}:{factory}", "--variants", "true", "--seeds", "1",
                    "--epochs", "2", "--out", store)
    assert result.exit_code == 1
    failed = [x for x in result.stderr.splitlines() if x.startswith("audit: failed")]
    assert len(failed) == 1 and "Traceback" not in result.output, result.output
    assert error in failed[0] and f"{tmp_path / module}.py:{line}" in failed[0] and "--debug" in failed[0]
    assert not store.exists()


def test_debug_shows_the_traceback(tmp_path, user_module, monkeypatch):
    module = user_module(FAULTS)
    monkeypatch.delenv("AUDIT_DEBUG", raising=False)
    result = invoke("--debug", "run", "quick", "--model", f"{module}:factory", "--seeds", "1", "--out",
                    tmp_path / "s")
    assert result.exit_code == 1
    assert "Traceback" in result.stderr and 'raise ValueError("width must be even")' in result.stderr
    again = invoke("run", "quick", "--model", f"{module}:factory", "--seeds", "1", "--out", tmp_path / "t")
    assert again.exit_code == 1 and "Traceback" not in again.stderr  # --debug holds for its own invocation only


def test_a_model_of_lazy_modules_trains_and_keeps_its_initial_weights(tmp_path, user_module):
    module = user_module(FAULTS)
    store = tmp_path / "s"
    result = invoke("run", "quick", "--model", f"{module}:lazy", "--variants", "true", "--seeds", "1",
                    "--epochs", "2", "--out", store)
    assert result.exit_code == 0, result.output
    with h5py.File(next((store / "runs").glob("*.h5"))) as f:
        init, final = f["weights/init/1.weight"][()], f["weights/final/1.weight"][()]
    assert init.shape == final.shape == (32, 64) and (init != final).any()
