"""Plugins load from a file, a module or AUDIT_PLUGINS, register like the built-ins, and a bad one is one line
naming the plugin, where it failed and the fix, with nothing of it left registered."""

import hashlib
import json
import textwrap

import numpy as np
import pytest
import torch

import measures
from audit.errors import UsageError
from audit.pipeline import plugins

GOOD = '''
import torch
from measures import measure


@measure("sum-abs", family="my-family", needs=("weights",), direction=1, cost="instant",
         reference="a test plugin", formula="sum of |w| over the weight matrices", settings={"power": 1.0})
def sum_abs(ctx, power):
    return float(sum(p.detach().abs().pow(power).sum() for n, p in ctx.model.named_parameters()
                     if n.endswith("weight")))
'''


def write(folder, name, text):
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def test_a_plugin_file_registers_a_measure_that_computes_like_numpy(tmp_path):
    path = write(tmp_path, "mine.py", GOOD)
    plugin = plugins.load(str(path))
    assert plugin.file == str(path.resolve())
    assert plugin.source_sha256 == hashlib.sha256(b"mine.py\0" + path.read_bytes()).hexdigest()
    entry = measures.get("sum-abs")
    assert entry.family == "my-family" and entry.plugin == plugin.record()
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    weights = [model[0].weight.detach().numpy(), model[2].weight.detach().numpy()]
    value = measures.compute(model, ["sum-abs"], settings={"sum-abs": {"power": 2.0}})["sum-abs"].value
    assert value == pytest.approx(sum(float((w.astype(np.float64) ** 2).sum()) for w in weights), rel=1e-6)
    assert plugins.load(str(path)) is plugin  # loaded once


def test_a_plugin_module_on_the_path_is_loaded_by_name(tmp_path, monkeypatch):
    write(tmp_path, "their_measures.py", GOOD)
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins.load("their_measures")
    assert measures.get("sum-abs").plugin["module"] == "their_measures"


BAD = {
    "syntax": ("def broken(:\n", r"syntax error at .*bad\.py:1"),
    "import": ("import no_such_module_anywhere\n", r"importing it raised ModuleNotFoundError.*bad\.py:1"),
    "duplicate": (GOOD.replace('"sum-abs"', '"l2"'), r"measure 'l2' is registered twice"),
    "signature": (GOOD.replace("def sum_abs(ctx, power):", "def sum_abs():"), r"must take \(ctx, power=\.\.\.\)"),
    "needs": (GOOD.replace('needs=("weights",)', 'needs=("labels",)'), r"needs \('labels',\) must be drawn"),
    "cost": (GOOD.replace('cost="instant"', 'cost="cheap"'), r"cost 'cheap' is not one of"),
    "direction": (GOOD.replace("direction=1", "direction=2"), r"direction must be 1"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_a_bad_plugin_is_one_line_naming_it_and_leaves_nothing_registered(tmp_path, kind):
    text, message = BAD[kind]
    first = GOOD.replace('"sum-abs"', '"registered-first"').replace("def sum_abs", "def first")
    path = write(tmp_path, "bad.py", first + "\n" + text)  # a good measure before the bad part
    with pytest.raises(UsageError, match=message) as caught:
        plugins.load(str(path))
    assert str(caught.value).startswith(f"plugin {path}:") and "\n" not in str(caught.value)
    assert "registered-first" not in measures.names() and "sum-abs" not in measures.names()
    assert measures.get("l2").plugin is None  # the built-in is untouched


def test_a_missing_plugin_is_named(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        plugins.load(str(tmp_path / "none.py"))
    with pytest.raises(UsageError, match="no module of that name"):
        plugins.load("no_such_plugin_module")


def test_audit_plugins_loads_good_ones_and_warns_of_bad_ones(tmp_path, monkeypatch):
    good, bad = write(tmp_path, "good.py", GOOD), write(tmp_path, "bad.py", "raise RuntimeError('boom')\n")
    monkeypatch.setenv("AUDIT_PLUGINS", f"{bad}:{good}")
    warnings = plugins.load_plugins([])
    assert "sum-abs" in measures.names()
    assert len(warnings) == 1 and str(bad) in warnings[0] and "RuntimeError: boom" in warnings[0]
    assert "found through AUDIT_PLUGINS" in warnings[0] and "\n" not in warnings[0]
    with pytest.raises(UsageError, match="boom"):  # given explicitly, the same plugin is an error
        plugins.load_plugins([str(bad)])


MODEL_PLUGIN = '''
from torch import nn
from audit.models import register_model


@register_model("tiny-net", "a plugin's MLP: one hidden layer of 16")
def tiny_net(input_shape, num_classes):
    size = 1
    for n in input_shape:
        size *= n
    return nn.Sequential(nn.Flatten(), nn.Linear(size, 16), nn.ReLU(), nn.Linear(16, num_classes))
'''


def test_a_plugin_registers_a_model_that_audit_run_trains(tmp_path):
    from typer.testing import CliRunner

    from cli import app

    path = write(tmp_path, "models_plugin.py", MODEL_PLUGIN)
    result = CliRunner().invoke(app, ["run", "--plugin", str(path), "--model", "tiny-net", "--variants", "true",
                                      "--seeds", "1", "--epochs", "3", "--measure", "params", "--out",
                                      str(tmp_path / "store"), "--json"])
    assert result.exit_code == 0, result.stderr
    (run,) = json.loads(result.stdout)["runs"]
    assert run["model"] == "tiny-net" and run["measures"]["params"] == 64 * 16 + 16 + 16 * 10 + 10


VARIANT_PLUGIN = '''
from audit.data.variants import register_variant


@register_variant("inverted", "every pixel x replaced by 1 - x, train and test")
def inverted(spec, varied, num_classes):
    varied.x_train, varied.x_test = 1 - varied.x_train, 1 - varied.x_test
'''


def test_a_plugin_variant_is_trained_judged_on_the_input_axis_and_read_without_it(tmp_path):
    from typer.testing import CliRunner

    from cli import app

    path, store = write(tmp_path, "variants_plugin.py", VARIANT_PLUGIN), tmp_path / "store"
    result = CliRunner().invoke(app, ["run", "--plugin", str(path), "--variants", "true,random-labels,inverted",
                                      "--seeds", "1", "--epochs", "3", "--measure", "l2", "--out", str(store),
                                      "--json"])
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert [run["variant"] for run in document["runs"]] == ["true", "random-labels", "inverted"]
    assert [run["corrupt"] for run in document["runs"]] == [0.0, 1.0, None]
    (verdict,) = document["verdicts"]
    assert set(verdict["input"]) == {"inverted"}
    plugins._forget([set(registry.names()) - {"inverted"} for registry in plugins.REGISTRIES])
    plugins.LOADED.clear()
    unknown = CliRunner().invoke(app, ["run", "--variants", "true,inverted", "--seeds", "1", "--out", str(store)])
    assert unknown.exit_code == 2 and "unknown variant 'inverted'" in unknown.stderr
    report = CliRunner().invoke(app, ["report", str(store), "--json"])  # reading needs no plugin
    assert report.exit_code == 0, report.stderr
    assert len(json.loads(report.stdout)["runs"]) == 3
