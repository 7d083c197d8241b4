"""Theorem 1's construction (Zhang et al. §4) against numpy on small cases, and `audit expressivity`."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from audit.errors import UsageError
from audit.theory.expressivity import biases, construct, merge_duplicates, outputs, triangular_system
from cli import app


def points(n, d, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.standard_normal(n)


def test_exactly_2n_plus_d_weights_and_exact_interpolation_by_numpy():
    x, y = points(40, 7)
    built = construct(x, y, seed=3)
    params = dict(built.model.named_parameters())
    assert sum(p.numel() for p in params.values()) == 2 * 40 + 7
    a = params["project.weight"].detach().numpy().reshape(-1)
    b = params["biases"].detach().numpy()
    w = params["output.weight"].detach().numpy().reshape(-1)
    assert (a.size, b.size, w.size) == (7, 40, 40)
    # c(x) = Σ_j w_j max(⟨a, x⟩ − b_j, 0), evaluated in numpy from the weights alone
    c = np.maximum(x @ a[:, None] - b[None, :], 0.0) @ w
    np.testing.assert_allclose(c, y, atol=1e-9)
    np.testing.assert_allclose(outputs(built.model, x), c, atol=1e-12)
    assert built.model.project.weight.dtype == torch.float64


def test_triangular_system_interleaves_biases_and_matches_its_definition():
    x, y = points(25, 4, seed=1)
    built = construct(x, y)
    a = built.model.project.weight.detach().numpy().reshape(-1)
    z = np.sort(x @ a)
    b = biases(z)
    assert np.all(b[:-1] < z[:-1]) and np.all(z[:-1] < b[1:]) and b[-1] < z[-1]  # b_1 < z_1 < b_2 < … < b_n < z_n
    system = triangular_system(z, b)
    expected = np.array([[max(zi - bj, 0.0) for bj in b] for zi in z])
    np.testing.assert_array_equal(system, expected)
    assert np.allclose(np.triu(system, 1), 0) and np.all(np.diag(system) > 0)
    np.testing.assert_allclose(built.system, system)
    w_numpy = np.linalg.solve(system, y[np.argsort(x @ a, kind="stable")])
    np.testing.assert_allclose(built.model.output.weight.detach().numpy().reshape(-1), w_numpy, rtol=1e-8, atol=1e-8)


def test_duplicates_are_merged_and_conflicting_duplicates_refused():
    x, y = points(10, 3, seed=2)
    x_dup, y_dup = np.vstack([x, x[[2, 5]]]), np.concatenate([y, y[[2, 5]]])
    merged_x, merged_y, merged = merge_duplicates(x_dup, y_dup)
    assert merged == 2 and len(merged_x) == 10
    np.testing.assert_array_equal(merged_x, x)
    built = construct(x_dup, y_dup)
    assert built.merged == 2 and sum(p.numel() for p in built.model.parameters()) == 2 * 10 + 3
    np.testing.assert_allclose(outputs(built.model, x_dup), y_dup, atol=1e-10)
    y_dup[-1] += 1.0  # the same input now has two targets
    with pytest.raises(UsageError, match="1 input appears more than once with different targets"):
        construct(x_dup, y_dup)


def test_near_tie_draws_another_direction():
    x, y = points(30, 2, seed=4)
    x[1] = x[0] + np.array([1e-13, 0.0])  # distinct, but nearly the same projection in almost every direction
    built = construct(x, y, seed=0)
    np.testing.assert_allclose(outputs(built.model, x), y, atol=1e-3 * np.abs(y).max())
    assert built.relative_gap > 0


def test_cli_json_random_labels_on_1000_gaussian_points_and_on_digits():
    runner = CliRunner()
    result = runner.invoke(app, ["expressivity", "--n", "1000", "--d", "50", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["weights"] == 2 * 1000 + 50 and document["max_error"] < 1e-6
    assert document["accuracy"] == 1.0 and document["variant"] == "random-labels"
    assert [row["n"] for row in document["growth"]] == [100, 200, 400, 800, 1000]
    result = runner.invoke(app, ["expressivity", "--dataset", "digits", "--train-size", "600", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["weights"] == 2 * document["points"] + 64 and document["points"] + document["merged_duplicates"] == 600
    assert document["max_error"] < 1e-6 and document["accuracy"] == 1.0


def test_cli_bad_usage_is_one_line_exit_2():
    runner = CliRunner()
    for args in (["--dataset", "digits", "--n", "10"], ["--targets", "both"], ["--n", "0"],
                 ["--variant", "true"]):
        result = runner.invoke(app, ["expressivity", *args])
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.output


@pytest.mark.parametrize("depth", [3, 4, 7])
def test_the_depth_k_network_computes_the_two_layer_function_with_o_n_plus_d_weights(depth):
    from audit.theory.expressivity import deepen

    rng = np.random.default_rng(depth)
    n, d = 60, 7
    x, y = rng.standard_normal((n, d)), rng.integers(0, 10, n).astype(float)
    built = construct(x, y, seed=1)
    deep = deepen(built.model, depth)
    linears = [m for m in deep if isinstance(m, torch.nn.Linear)]
    assert len(linears) == depth
    assert max(m.out_features for m in linears[:-1]) == -(-n // (depth - 2)) + 3
    nonzero = sum(int((p != 0).sum()) for p in deep.parameters())
    assert nonzero <= d + 1 + 5 * n + 4 * depth  # O(n + d), though the dense layers hold far more entries
    # numpy forward through the deep network's own matrices, against c(x) = Σ_j w_j max(⟨a, x⟩ − b_j, 0)
    a = built.model.project.weight.detach().numpy()[0]
    b = built.model.biases.detach().numpy()
    w = built.model.output.weight.detach().numpy()[0]
    probes = np.concatenate([built.x, 3 * rng.standard_normal((40, d))])  # the points, and points far off them
    expected = np.maximum(probes @ a[:, None] - b[None, :], 0) @ w
    h = probes
    for layer in linears[:-1]:
        h = np.maximum(h @ layer.weight.detach().numpy().T + layer.bias.detach().numpy(), 0)
    got = h @ linears[-1].weight.detach().numpy()[0]
    assert np.abs(got - expected).max() <= 1e-9 * max(1.0, np.abs(expected).max())
    assert np.abs(got[:n] - built.y).max() < 1e-6


def test_cli_depth_reports_the_deep_network_and_refuses_a_depth_below_2():
    runner = CliRunner()
    result = runner.invoke(app, ["expressivity", "--n", "200", "--d", "10", "--depth", "4", "--json"])
    assert result.exit_code == 0, result.stderr
    deep = json.loads(result.stdout)["deep"]
    assert deep["depth"] == 4 and deep["width"] == 103 and deep["max_error"] < 1e-6
    assert deep["max_difference_from_two_layer"] < 1e-6 and deep["nonzero_weights"] < deep["dense_parameters"]
    bad = runner.invoke(app, ["expressivity", "--n", "200", "--d", "10", "--depth", "1"])
    assert bad.exit_code == 2 and "--depth" in bad.stderr and "Traceback" not in bad.stderr
