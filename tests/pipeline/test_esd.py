"""Per-layer spectra of stored runs against numpy on the weights read with plain h5py, and against the α that
`ww-alpha` cached; what `audit plot STORE landscape|esd|hessian-density` is given to draw."""

import dataclasses

import h5py
import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from audit.errors import UsageError, WorkError
from audit.pipeline.analysis_figures import analysis_arrays, figure_runs
from audit.pipeline.esd import layer_esd, run_esd
from audit.store.directory import open_store
from audit.store.files import read_run
from cli import app
from measures.layers import prepare
from measures.spectra import fit_power_law


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real store: mlp-1x16 on 100 digits, true and random labels, a few epochs, ww-alpha scored."""
    root = tmp_path_factory.mktemp("esd") / "s"
    result = CliRunner().invoke(app, ["run", "--model", "mlp-1x16", "--train-size", "100", "--variants",
                                      "true,random-labels", "--seeds", "1", "--epochs", "5", "--lr", "0.1",
                                      "--measure", "ww-alpha", "--out", str(root)])
    assert result.exit_code == 0, result.output
    return root


def stored_matrices(path):
    with h5py.File(path, "r") as f:
        final = {k: f["weights/final"][k][()] for k in f["weights/final"]}
    names = sorted((k for k in final if k.endswith(".weight")), key=lambda k: int(k.split(".")[0]))
    return names, [final[k].astype(np.float64) for k in names]


def test_eigenvalues_are_the_squared_singular_values_of_the_stored_weights(store):
    for path in open_store(store).run_paths():
        names, matrices = stored_matrices(path)
        layers = run_esd(read_run(path))
        assert [layer["name"] for layer in layers] == [n.removesuffix(".weight") for n in names]
        for layer, w in zip(layers, matrices):
            expected = np.linalg.svd(w, compute_uv=False) ** 2
            assert layer["eigenvalues"].dtype == np.float64
            np.testing.assert_allclose(layer["eigenvalues"], expected, rtol=1e-9, atol=1e-12)
            assert layer["num_evals"] == min(w.shape) and layer["shape"] == w.shape


def test_alpha_is_the_cached_ww_alpha_detail_and_a_direct_fit(store):
    for path in open_store(store).run_paths():
        record = read_run(path)
        layers = run_esd(record)
        detail = record.measures["ww-alpha"]["detail"]
        fitted = [layer for layer in layers if layer["alpha"] is not None]
        assert len(fitted) == 2  # 16 and 10 eigenvalues: both layers have a tail to fit
        assert [layer["name"] for layer in fitted] == [n.decode() if isinstance(n, bytes) else n for n in detail["layers"]]
        np.testing.assert_allclose([layer["alpha"] for layer in fitted], detail["alpha"], rtol=1e-12)
        np.testing.assert_allclose([layer["xmin"] for layer in fitted], detail["xmin"], rtol=1e-12)
        assert np.mean(detail["alpha"]) == pytest.approx(record.measures["ww-alpha"]["value"], rel=1e-12)
        _, matrices = stored_matrices(path)
        for layer, w in zip(layers, matrices):
            direct = fit_power_law(np.linalg.svd(w, compute_uv=False) ** 2)
            if layer["alpha"] is None:
                assert direct is None or layer["num_evals"] < 8
            else:
                assert (layer["alpha"], layer["xmin"], layer["ks"]) == pytest.approx(direct, rel=1e-9)


def test_conv_kernels_are_reshaped_and_batch_norm_folded_as_measures_do(seed):
    model = nn.Sequential(nn.Conv2d(3, 12, 3), nn.BatchNorm2d(12), nn.ReLU(), nn.Flatten(), nn.Linear(12 * 4, 10))
    bn = model[1]
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_()
    model(torch.randn(2, 3, 4, 4))  # a training-mode pass moves the running statistics: they must be used
    scale = (bn.weight / (bn.running_var + bn.eps).sqrt()).detach().double().numpy()
    conv = model[0].weight.detach().double().numpy().reshape(12, -1) * scale[:, None]
    layers = layer_esd(prepare(model, torch.device("cpu")))
    # the fold is done in float32, like every measure's
    np.testing.assert_allclose(layers[0]["eigenvalues"], np.linalg.svd(conv, compute_uv=False) ** 2, rtol=1e-5,
                               atol=1e-9)
    linear = model[4].weight.detach().double().numpy()
    np.testing.assert_allclose(layers[1]["eigenvalues"], np.linalg.svd(linear, compute_uv=False) ** 2, rtol=1e-9)


def test_a_kernel_fit_has_no_spectra(store):
    record = read_run(open_store(store).run_paths()[0])
    record.spec = dataclasses.replace(record.spec, model="kernel-rbf")
    with pytest.raises(WorkError, match="kernel fit"):
        run_esd(record)


# ---------------------------------------------------------------- what `audit plot` draws


def test_analysis_arrays_read_prefixed_nested_and_flat_layouts(store):
    record = read_run(open_store(store).run_paths()[0])
    line = {"alpha": np.linspace(0, 1, 3), "loss": np.ones(3), "accuracy": np.zeros(3)}
    layouts = [{"attrs": {}, "arrays": {f"line/{k}": v for k, v in line.items()} | {"plane/a": np.zeros(2)}},
               {"attrs": {}, "arrays": {"line": line}}, {"attrs": {}, "arrays": line}]
    layouts.append({"attrs": {}, "arrays": line})  # the store's own: analyses["landscape/line"]
    for index, layout in enumerate(layouts):
        record.analyses = {"landscape/line" if index == 3 else "landscape": layout}
        got = analysis_arrays(record, "landscape", "line")
        assert sorted(got) == ["accuracy", "alpha", "loss"] and np.array_equal(got["alpha"], line["alpha"])
    assert analysis_arrays(record, "landscape", "plane") is None  # the flat layout holds no plane
    assert analysis_arrays(record, "density", "density") is None
    record.analyses = {"density": {"attrs": {}, "arrays": {"grid": np.arange(3.0), "density": np.ones(3)}}}
    assert sorted(analysis_arrays(record, "density", "density")) == ["density", "grid"]


def test_figure_runs_gives_spectra_and_cached_analyses_and_names_the_command_for_the_rest(store):
    records = [read_run(p) for p in open_store(store).run_paths()]
    true = next(r for r in records if r.spec.variant == "true")
    true.analyses = {"landscape/line": {"attrs": {}, "arrays": {"alpha": np.linspace(-0.5, 1.5, 5),
                                                                "loss": np.ones(5), "accuracy": np.ones(5)}}}
    runs, notes = figure_runs(records, ["landscape", "esd", "hessian-density"], root="S")
    assert sorted(runs) == ["esd", "landscape-1d"]
    assert [r["run_id"] for r in runs["landscape-1d"]] == [true.run_id]
    assert runs["landscape-1d"][0]["label"] == "true · seed 0" and runs["landscape-1d"][0]["num_classes"] == 10
    assert sorted(r["variant"] for r in runs["esd"]) == ["random-labels", "true"]
    assert all(len(r["layers"]) == 2 and "eigenvalues" in r["layers"][0] for r in runs["esd"])
    assert notes == ["landscape-1d: drawn for the 1 of 2 runs that have it cached (`audit landscape S [RUN...]` "
                     "computes it)",
                     "landscape-2d: drawn for the 0 of 2 runs that have it cached (`audit landscape S [RUN...]` "
                     "computes it)",
                     "hessian-density: drawn for the 0 of 2 runs that have it cached (`audit density S [RUN...]` "
                     "computes it)"]
    with pytest.raises(UsageError, match="unknown figure 'spectra': use one of landscape, esd, hessian-density"):
        figure_runs(records, ["spectra"])
