"""The Python API, caching by version and settings, `audit import`, and the catalogue page."""

import json
import textwrap
from pathlib import Path

import h5py
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import measures
from audit.errors import UsageError
from cli import app

runner = CliRunner()


def test_compute_works_on_any_torch_model_with_batchnorm(seed):
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    model.train()
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 3, (32,))
    model(x)  # running statistics
    model.eval()
    results = measures.compute(model, ["params", "l2", "spectral-operator", "margin", "path-l2"], train=(x, y))
    assert results["params"].value == sum(p.numel() for p in model.parameters())
    assert all(isinstance(r.value, float) and r.reason is None for r in results.values())
    assert model.training is False and isinstance(model[1], nn.BatchNorm2d)  # the caller's model is untouched


def test_compute_gives_every_name_a_value_or_its_reason_and_never_aborts(seed):
    """Item 8 as seen: every default measure on a max-pooling model, with history measures among them."""
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 3))
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,))
    init = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 3))
    names = measures.names(True)
    results = measures.compute(model, names, train=(x, y), init=init)
    assert list(results) == names
    for name, result in results.items():
        assert (result.value is None) == (result.reason is not None), name
    assert results["steps-to-fit"].value is None and "audit score" in results["steps-to-fit"].reason
    assert "MaxPool2d" in results["path-l2"].reason
    assert results["l2"].value == pytest.approx(
        sum(float(m.weight.detach().double().pow(2).sum()) for m in model if hasattr(m, "weight")) ** 0.5)
    assert not any(r.reason and r.reason.startswith("failed") for r in results.values())


def test_compute_names_every_measure_missing_its_data_in_one_error():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with pytest.raises(UsageError) as error:
        measures.compute(model, ["l2", "margin", "l2-init", "sharpness"])
    assert str(error.value) == ("margin, sharpness need train=(x, y); l2-init needs init=: "
                                "pass it to measures.compute")
    assert measures.compute(model, ["l2"])["l2"].reason is None  # weights alone need nothing else


def test_compute_reports_a_failing_measure_and_computes_the_rest(monkeypatch):
    import dataclasses

    def broken(ctx):
        raise ZeroDivisionError("boom")

    monkeypatch.setitem(measures.MEASURES, "l2", dataclasses.replace(measures.MEASURES["l2"], fn=broken))
    results = measures.compute(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), ["l2", "params"])
    assert results["l2"].value is None and results["l2"].reason.startswith("failed: ZeroDivisionError: boom")
    assert results["params"].value == 15


def test_spectral_init_of_unmoved_weights_is_undefined_not_a_crash():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    result = measures.compute(model, ["spectral-init"], init=model)["spectral-init"]
    assert result.value is None and "equal their initialization" in result.reason


def test_cached_values_are_recomputed_when_settings_or_version_change(small_store, monkeypatch):
    path = sorted((small_store / "runs").glob("*.h5"))[0]
    result = runner.invoke(app, ["score", str(small_store), "--measure", "margin", "--set", "margin.percentile=50",
                                 "--json"])
    assert result.exit_code == 0, result.stderr
    with h5py.File(path) as f:
        median_margin = f["measures/margin"].attrs["value"]
        assert json.loads(f["measures/margin"].attrs["settings"]) == {"percentile": 50.0}
    result = runner.invoke(app, ["score", str(small_store), "--measure", "margin", "--json"])
    with h5py.File(path) as f:
        assert f["measures/margin"].attrs["value"] < median_margin  # the 10th percentile again
        assert json.loads(f["measures/margin"].attrs["settings"]) == {"percentile": 10.0}
        seconds = f["measures/margin"].attrs["seconds"]
    import dataclasses
    bumped = dataclasses.replace(measures.MEASURES["margin"], version=2)
    monkeypatch.setitem(measures.MEASURES, "margin", bumped)
    runner.invoke(app, ["score", str(small_store), "--measure", "margin", "--json"])
    with h5py.File(path) as f:
        assert f["measures/margin"].attrs["version"] == 2
        assert f["measures/margin"].attrs["seconds"] != seconds


def test_import_adds_a_users_model_as_a_run(tmp_path, monkeypatch, seed):
    monkeypatch.chdir(tmp_path)
    Path("mynet.py").write_text(textwrap.dedent("""
        from torch import nn
        def build(num_classes):
            return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, num_classes))
    """))
    import importlib
    import sys
    sys.path.insert(0, str(tmp_path))
    build = importlib.import_module("mynet").build
    init = build(10)
    torch.save(init.state_dict(), "init.pt")
    from audit.data.fitted import build_run_data
    from audit.spec.run import RunSpec
    data = build_run_data(RunSpec())
    model = build(10)
    model.load_state_dict(init.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(100):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(data.x_train), data.y_train).backward()
        optimizer.step()
    torch.save(model.state_dict(), "final.pt")
    result = runner.invoke(app, ["import", "store", "--model", "mynet:build", "--init", "init.pt", "--final",
                                 "final.pt", "--json"])
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    expected = measures.compute(model, ["l2", "l2-init", "margin"], train=(data.x_train, data.y_train), init=init)
    scored = json.loads(runner.invoke(app, ["score", "store", "--measure", "l2", "--measure", "l2-init",
                                            "--measure", "margin", "--measure", "steps-to-fit", "--json"]).stdout)
    run = scored["runs"][0]
    assert run["run_id"] == summary["run_id"] and run["model"] == "mynet:build"
    for name, result in expected.items():
        assert run["measures"][name] == pytest.approx(result.value, rel=1e-6)
    assert run["measures"]["steps-to-fit"] is None  # no training history for an imported model
    bad = runner.invoke(app, ["import", "store2", "--model", "mynet:nothing", "--init", "init.pt", "--final", "final.pt"])
    assert bad.exit_code == 2 and "cannot load model" in bad.stderr


def test_the_catalogue_page_is_current():
    from audit.render.formats import catalogue_markdown

    page = (Path(__file__).parents[2] / "docs" / "measures.md").read_text()
    expected = catalogue_markdown([measures.get(n).metadata() for n in measures.names()])
    assert page.strip() == expected.strip(), "regenerate with: audit list measures --markdown > docs/measures.md"
