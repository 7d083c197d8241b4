"""Minimum-norm kernel interpolation (Zhang et al. §5) against scipy, kernel runs in a store judged by
`audit report`, and the NTK label complexity against an explicitly computed Jacobian."""

import json
import math

import h5py
import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.spatial.distance import cdist, pdist
from torch import nn
from typer.testing import CliRunner

import measures
from audit import resources
from audit.data.fitted import build_run_data
from audit.errors import UsageError
from audit.theory.kernel import fit, kernel_block, median_bandwidth, predict, random_features
from audit.theory.kernel_runs import KernelSpec, kernel_spec, parse_kernel_model
from cli import app
from measures.layers import prepare

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def sample(n=60, d=5, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    y = np.eye(classes)[rng.integers(0, classes, n)]
    return x, y


def numpy_kernel(kind, a, b, bandwidth=None, degree=2):
    if kind == "gaussian":
        return np.exp(-cdist(a, b, "sqeuclidean") / (2 * bandwidth ** 2))
    if kind == "laplace":
        return np.exp(-cdist(a, b) / bandwidth)
    if kind == "linear":
        return a @ b.T
    return (a @ b.T / a.shape[1] + 1) ** degree


@pytest.mark.parametrize("kind, ridge", [("gaussian", 0.0), ("laplace", 0.0), ("polynomial", 0.0),
                                         ("gaussian", 0.1)])
def test_solution_and_rkhs_norm_match_scipy(kind, ridge):
    x, y = sample(n=40 if kind == "polynomial" else 60, d=12)
    bandwidth = 2.5 if kind in ("gaussian", "laplace") else None
    result = fit(torch.from_numpy(x), torch.from_numpy(y), kind, bandwidth, degree=3, ridge=ridge)
    K = numpy_kernel(kind, x, x, bandwidth, degree=3)
    alpha = scipy.linalg.solve(K + ridge * np.eye(len(x)), y, assume_a="pos")
    assert result.jitter == 0.0
    np.testing.assert_allclose(result.alpha.numpy(), alpha, rtol=1e-7, atol=1e-9 * np.abs(alpha).max())
    np.testing.assert_allclose(result.train_outputs.numpy(), K @ alpha, atol=1e-8)
    direct = np.einsum("ic,ij,jc->c", alpha, K, alpha)  # α_cᵀ K α_c per class
    np.testing.assert_allclose(result.norms.numpy(), direct, rtol=1e-8)
    if ridge == 0.0:
        np.testing.assert_allclose(result.train_outputs.numpy(), y, atol=1e-8)  # it interpolates
    x_new = np.random.default_rng(9).standard_normal((7, x.shape[1]))
    np.testing.assert_allclose(predict(torch.from_numpy(x_new), torch.from_numpy(x), result.alpha, kind, bandwidth, 3),
                               numpy_kernel(kind, x_new, x, bandwidth, 3) @ alpha, rtol=1e-7, atol=1e-9)


def test_kernel_blocks_and_median_bandwidth_match_scipy():
    x, _ = sample(n=50, d=6)
    t = torch.from_numpy(x)
    for kind in ("gaussian", "laplace", "linear", "polynomial"):
        # diagonal=0: the train block's zero self-distances made exact (‖a‖² + ‖b‖² − 2a·b cancels to ~1e-15,
        # whose square root would cost the laplace kernel 1e-8)
        np.testing.assert_allclose(kernel_block(kind, t, t, 1.7, degree=2, diagonal=0), numpy_kernel(kind, x, x, 1.7),
                                   rtol=1e-10, atol=1e-12)
    assert median_bandwidth(t, seed=0) == pytest.approx(np.median(pdist(x)), rel=1e-12)


def test_duplicate_points_get_a_jitter_instead_of_failing():
    x, y = sample(n=30, d=3)
    x[5] = x[4]  # K is singular
    result = fit(torch.from_numpy(x), torch.from_numpy(y), "gaussian", 1.0)
    assert result.jitter > 0


def test_kernel_names_are_canonical():
    assert KernelSpec("gaussian", "random-conv", 2.0, 0.001).name == "kernel-gaussian,features=random-conv,bandwidth=2,ridge=0.001"
    assert parse_kernel_model("kernel-polynomial,degree=3") == KernelSpec("polynomial", degree=3)
    with pytest.raises(UsageError, match="canonical form: write 'kernel-gaussian,bandwidth=2'"):
        parse_kernel_model("kernel-gaussian,bandwidth=2.0")
    with pytest.raises(UsageError, match="no bandwidth"):
        parse_kernel_model("kernel-linear,bandwidth=2")


def test_random_conv_features_are_seeded():
    x = torch.rand(5, 1, 8, 8)
    a, b = random_features(x, 3), random_features(x, 3)
    assert a.shape == (5, 64 * 4 * 4) and torch.equal(a, b) and not torch.equal(a, random_features(x, 4))


def test_cli_json_on_digits_and_the_stored_alpha_gives_the_rkhs_norm(tmp_path):
    result = invoke("kernel", "--dataset", "digits", "--train-size", "500", "--out", tmp_path / "s", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["train_error"] == 0.0 and document["interpolates"] and document["test_error"] < 0.1
    with h5py.File(tmp_path / "s" / "runs" / f"{document['run_id']}.h5", "r") as f:
        alpha = f["weights/final/alpha"][()]
        stored = f["measures/rkhs-norm"].attrs["value"]
    spec = kernel_spec("digits", 500, "true")
    x = build_run_data(spec).x_train.reshape(500, -1).double().numpy()
    K = numpy_kernel("gaussian", x, x, document["bandwidth"])
    expected = math.sqrt(np.einsum("ic,ij,jc->", alpha, K, alpha))  # sqrt(Σ_c α_cᵀ K α_c)
    assert stored == pytest.approx(expected, rel=1e-8) and document["rkhs_norm"] == pytest.approx(expected, rel=1e-8)


def test_too_large_is_refused_before_allocating_with_the_memory_needed(monkeypatch):
    monkeypatch.setattr(resources, "available_bytes", lambda device: 2 ** 25)  # 32 MiB: 80% is 25.6 MiB
    result = runner.invoke(app, ["kernel", "--dataset", "digits", "--train-size", "1000"])
    assert result.exit_code == 0, result.output  # 1,000 points need about 15 MiB
    result = runner.invoke(app, ["kernel", "--dataset", "digits", "--train-size", "0"])
    assert result.exit_code == 1  # TooLarge, like a measure that does not fit
    line = result.stderr.strip()
    expected = 8 * (1347 ** 2 + 1347 ** 2 + (1347 + 450) * 64 + 4 * (1347 + 450) * 10) / 2 ** 30
    assert "\n" not in line and "Traceback" not in result.output
    assert f"1,347 train points would need about {expected:.3g} GiB on cpu, 0.0312 GiB available" in line
    assert "lower --train-size" in line


def test_bad_usage_is_one_line_exit_2():
    for args in (["--kernel", "gausian"], ["--features", "gabor"], ["--ridge", "-1"], ["--variant", "corrupt:2"],
                 ["--kernel", "linear", "--bandwidth", "2"]):
        result = runner.invoke(app, ["kernel", "--dataset", "digits", *args])
        assert result.exit_code == 2, (args, result.output)
        assert "\n" not in result.stderr.strip()


def test_a_kernel_experiment_is_fitted_by_run_and_judged_by_report(tmp_path):
    experiment = tmp_path / "kernel-digits.toml"
    experiment.write_text('name = "kernel-digits"\n[base]\ndataset = "digits"\ntrain_size = 400\n'
                          'model = "kernel-gaussian"\npreprocess = "none"\n'
                          '[grid]\nvariants = ["true", "corrupt:0.5", "random-labels"]\nseeds = 3\n')
    store = tmp_path / "store"
    result = invoke("run", experiment, "--out", store, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(invoke("report", store, "--json").stdout)
    assert len(report["runs"]) == 9 and all(r["status"] == "complete" and r["fitted"] for r in report["runs"])
    by_variant = {}
    for run in report["runs"]:
        by_variant.setdefault(run["variant"], []).append(run["measures"]["rkhs-norm"])
    assert min(by_variant["random-labels"]) > max(by_variant["true"])
    verdict = next(v for v in report["summary"] if v["measure"] == "rkhs-norm")
    assert verdict["verdict"] == "distinguishes"
    rerun = invoke("run", experiment, "--out", store, "--json")  # complete runs are kept
    assert rerun.exit_code == 0 and json.loads(rerun.stdout)["runs"] == json.loads(result.stdout)["runs"]


# ---------------------------------------------------------------- NTK label complexity

def explicit_jacobian(model, x):
    """∂f_c(x_i)/∂θ for f = W2 relu(W1 x + b1) + b2, written out by hand: (n, C, P), θ = (W1, b1, W2, b2)."""
    W1, b1 = model[0].weight.detach().double().numpy(), model[0].bias.detach().double().numpy()
    W2 = model[2].weight.detach().double().numpy()
    C, H = W2.shape
    rows = []
    for xi in x:
        z = W1 @ xi + b1
        h, active = np.maximum(z, 0), (z > 0).astype(float)
        per_class = []
        for c in range(C):
            dW1 = np.outer(W2[c] * active, xi)
            db1 = W2[c] * active
            dW2 = np.zeros((C, H))
            dW2[c] = h
            db2 = np.eye(C)[c]
            per_class.append(np.concatenate([dW1.ravel(), db1, dW2.ravel(), db2]))
        rows.append(per_class)
    return np.array(rows)


def test_ntk_label_complexity_equals_numpy_from_an_explicit_jacobian(seed):
    model = nn.Sequential(nn.Linear(6, 24), nn.ReLU(), nn.Linear(24, 3)).double()
    x = torch.randn(30, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (30,))
    ctx = measures.Context(model=prepare(model, torch.device("cpu")), x=x, y=y)
    value = measures.evaluate(ctx, "ntk-label-complexity", {"subset": 20, "seed": 5})
    assert value.value is not None, value.reason
    index = torch.randperm(30, generator=torch.Generator().manual_seed(5))[:20].sort().values.numpy()
    J = explicit_jacobian(model, x.numpy()[index])  # (n, C, P)
    H = np.einsum("icp,jcp->ij", J, J)  # Σ_c J_c J_cᵀ
    Y = np.eye(3)[y.numpy()[index]]
    expected = math.sqrt(2 * np.sum(Y * np.linalg.solve(H, Y)) / 20)
    assert value.value == pytest.approx(expected, rel=1e-6)
    assert value.detail["points"] == 20


def test_ntk_label_complexity_is_undefined_on_a_singular_kernel(seed):
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2))
    x = torch.randn(40, 2)
    ctx = measures.Context(model=prepare(model, torch.device("cpu")), x=x, y=torch.randint(0, 2, (40,)))
    result = measures.evaluate(ctx, "ntk-label-complexity", {"subset": 0, "seed": 0})
    assert result.value is None and "singular" in result.reason  # 40 points, 2 outputs × 17 parameters
