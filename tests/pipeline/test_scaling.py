"""How cost grows (issue 19, item 4): the power-law fit of bench/scaling.py recovers a known exponent; the plans'
estimates are the fits' formula at this machine's rate; `audit score --plan` lists exactly what `audit score`
then computes, and computes nothing itself; it refuses what `audit score` refuses, in one line."""

import hashlib
import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

import measures
from audit.models.registry import build_model
from audit.pipeline import scaling
from audit.render import items as render_items
from cli import app

runner = CliRunner()
FIT_RATE, HERE_RATE = 200e9, 50e9  # the rate kept with the synthetic fits, and the rate "probed" here


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_fit_recovers_a_known_exponent_from_noise_free_timings():
    sizes = [1000, 2000, 5000, 10000, 20000]
    for c, k in [(3e-4, 1.0), (2.5e-7, 1.37), (0.8, -0.25)]:
        fit = scaling.fit_power(sizes, [c * n ** k for n in sizes])
        assert fit.k == pytest.approx(k, abs=1e-9) and fit.c == pytest.approx(c, rel=1e-9)
        assert scaling.worst_factor(fit, sizes, [c * n ** k for n in sizes]) == pytest.approx(1.0)
    noisy = scaling.fit_power(sizes, [2e-6 * n * (1.1 if i % 2 else 0.9) for i, n in enumerate(sizes)])
    assert 0.9 < noisy.k < 1.1
    with pytest.raises(ValueError):
        scaling.fit_power([1000, 1000], [1.0, 2.0])


def synthetic_fits() -> dict:
    """Fits of made-up exponents that cover digits-sized MLPs (so that no dataset download is needed), every
    family of the registry timed, every measure 1 s at the reference run (a family's share: its count)."""
    names = measures.names()
    families = list(dict.fromkeys(measures.get(n).family for n in names))
    fits = {quantity: {"params": {"c": 1e-6 * (i + 1), "k": 0.5 + 0.05 * i, "sizes": [5000, 2_000_000]},
                       "size": {"c": 1e-3, "k": 0.8 + 0.02 * i, "sizes": [200, 1300]}}
            for i, quantity in enumerate([scaling.TRAIN, *families])}
    return {"version": 1, "quick": False, "date": "2026-12-03", "matmul_rate": FIT_RATE, "input_shape": [1, 28, 28],
            "classes": 10, "reference": {"model": "mlp-1x256", "params": 203530, "train_size": 1000},
            "axes": {"params": {"model": "mlp-1xW", "widths": [], "train_size": 1000, "params": [5000, 2_000_000]},
                     "size": {"model": "mlp-1x256", "sizes": [200, 1300]}},
            "fits": fits, "models": {}, "measure_seconds": {n: 1.0 for n in names},
            "measure_family": {n: measures.get(n).family for n in names}, "undefined": {}}


@pytest.fixture
def fits(tmp_path, monkeypatch) -> dict:
    data = synthetic_fits()
    path = tmp_path / "scaling.json"
    path.write_text(json.dumps(data))
    monkeypatch.setattr(scaling, "DATA", path)
    monkeypatch.setattr(scaling, "probe_rate", lambda seconds=1.0: HERE_RATE)
    return data


def formula(data: dict, quantity: str, params: int, size: int) -> float:
    p, n = data["fits"][quantity]["params"], data["fits"][quantity]["size"]
    return p["c"] * params ** p["k"] * (size / data["reference"]["train_size"]) ** n["k"] * FIT_RATE / HERE_RATE


def test_run_plan_of_a_covered_model_is_the_fits_formula_at_this_rate(fits, tmp_path):
    result = invoke("run", "quick", "--model", "mlp-1x512", "--train-size", 1000, "--epochs", 7, "--seeds", 1,
                    "--variants", "true,random-labels", "--plan", "--json", "--out", tmp_path / "s")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    params = sum(p.numel() for p in build_model("mlp-1x512", (1, 8, 8), 10).parameters())
    names = measures.names(default_only=True)
    by_family = {}
    for name in names:
        by_family.setdefault(measures.get(name).family, []).append(name)
    scoring = sum(formula(fits, f, params, 1000) * len(members) / sum(
        measures.get(n).family == f for n in measures.names()) for f, members in by_family.items())
    for run in document["runs"]:
        assert run["estimate_from"] == scaling.FROM_FITS
        assert run["seconds_at_most"] == pytest.approx(7 * formula(fits, scaling.TRAIN, params, 1000), abs=0.06)
        assert run["measures_to_score"] == len(names) and run["not_estimated"] == []
        assert sum(run["score_families"].values()) == pytest.approx(scoring, abs=0.01)  # each rounded to ms
    estimate = document["estimate"]
    assert estimate["matmul_gflops"] == HERE_RATE / 1e9 and estimate["fits"]["matmul_gflops"] == FIT_RATE / 1e9
    assert estimate["training_from"] == {scaling.FROM_FITS: 2, scaling.FROM_FLOPS: 0}
    assert estimate["scoring"]["seconds"] == pytest.approx(2 * scoring, abs=0.06)
    table = invoke("run", "quick", "--model", "mlp-1x512", "--train-size", 1000, "--epochs", 7, "--seeds", 1,
                   "--variants", "true,random-labels", "--plan", "--out", tmp_path / "s").stdout
    assert "from bench/scaling.py fits" in " ".join(table.split()) and "from FLOPs" not in table


def test_run_plan_outside_the_fits_is_from_flops_and_says_so(fits, tmp_path):
    result = invoke("run", "quick", "--model", "mlp-3x512", "--seeds", 1, "--variants", "true", "--plan", "--json",
                    "--out", tmp_path / "s")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    (run,) = document["runs"]
    assert run["estimate_from"] == scaling.FROM_FLOPS
    assert run["not_estimated"] == measures.names(default_only=True)  # a depth the fits never timed
    table = " ".join(invoke("run", "quick", "--model", "mlp-3x512", "--seeds", 1, "--variants", "true", "--plan",
                            "--out", tmp_path / "s").stdout.split())
    assert "from FLOPs" in table and "not estimated" in table


def test_beyond_the_fitted_sizes_an_estimate_never_shrinks_below_the_edge_and_grows_by_k_above(fits):
    scale = scaling.Scaling(fits, HERE_RATE)
    inside = scale.seconds("norm", "mlp-1x512", 100_000, 1000)
    assert inside == pytest.approx(formula(fits, "norm", 100_000, 1000), rel=1e-12)
    assert scale.seconds("norm", "mlp-1x512", 10, 1000) == pytest.approx(formula(fits, "norm", 5000, 1000))
    k = fits["fits"]["norm"]["params"]["k"]
    assert scale.seconds("norm", "mlp-1x512", 8_000_000, 1000) == pytest.approx(
        formula(fits, "norm", 2_000_000, 1000) * 4 ** k)
    fits["fits"]["norm"]["params"]["k"] = -0.5  # timings noisy enough to fall: beyond the edge, held flat
    assert scale.seconds("norm", "mlp-1x512", 8_000_000, 1000) == pytest.approx(
        formula(fits, "norm", 2_000_000, 1000))


def test_the_renderer_names_the_estimates_as_the_pipeline_does():
    assert (render_items.FROM_FITS, render_items.FROM_FLOPS) == (scaling.FROM_FITS, scaling.FROM_FLOPS)


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory) -> Path:
    """Two complete runs of a tiny MLP on digits (2 epochs), l2 scored by `audit run`."""
    root = tmp_path_factory.mktemp("tiny") / "store"
    result = invoke("run", "quick", "--model", "mlp-1x16", "--epochs", 2, "--seeds", 1, "--variants",
                    "true,random-labels", "--measure", "l2", "--out", root, "--json")
    assert result.exit_code in (0, 1), result.output
    return root


def cached_entries(root: Path) -> dict[str, dict[str, float]]:
    """Per run file, each cached measure's stored seconds (a recomputed value gets new ones)."""
    import h5py

    out = {}
    for path in sorted((root / "runs").glob("*.h5")):
        with h5py.File(path, "r") as f:
            out[path.stem] = {k: float(f["measures"][k].attrs["seconds"]) for k in f.get("measures", {})}
    return out


def test_score_plan_lists_exactly_what_score_then_computes_and_computes_nothing(tiny_store, fits):
    asked = ["l2", "spectral", "margin", "path-l2"]
    options = [a for name in asked for a in ("--measure", name)]
    before = {p.name: digest(p) for p in (tiny_store / "runs").glob("*.h5")}
    cached = cached_entries(tiny_store)
    result = invoke("score", tiny_store, *options, "--plan", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert {p.name: digest(p) for p in (tiny_store / "runs").glob("*.h5")} == before  # nothing computed or written
    planned = {run["run_id"]: run["to_compute"] for run in document["runs"]}
    assert set(planned) == set(cached) and len(planned) == 2
    scored = invoke("score", tiny_store, *options, "--json")
    assert scored.exit_code in (0, 1), scored.output
    after = cached_entries(tiny_store)
    for run_id, todo in planned.items():
        computed = [n for n in asked if n not in cached[run_id] or after[run_id][n] != cached[run_id][n]]
        assert todo == computed and "l2" not in todo
    assert document["estimate"]["computations"] == sum(len(t) for t in planned.values())
    families = {f["family"]: f for f in document["families"]}
    assert set(families) == {measures.get(n).family for t in planned.values() for n in t}
    assert document["estimate"]["seconds"] == pytest.approx(sum(f["seconds"] for f in families.values()), abs=0.1)
    again = json.loads(invoke("score", tiny_store, *options, "--plan", "--json").stdout)
    assert all(run["to_compute"] == [] for run in again["runs"]) and again["estimate"]["computations"] == 0


def test_score_plan_prints_a_line_of_total(tiny_store, fits):
    result = runner.invoke(app, ["score", str(tiny_store), "--measure", "frobenius", "--measure", "spectral-init",
                                 "--plan"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert f"store {tiny_store}: " in text and "on this machine (from bench/scaling.py fits" in text
    assert "frobenius" in text and "spectral-init" in text
    total = [line for line in result.stdout.splitlines() if line.startswith("store ")]
    assert len(total) == 1 and "measure values to compute on 2 of 2 complete runs" in total[0]


@pytest.mark.parametrize("options, message", [
    (["--measure", "l3"], "unknown measure 'l3'"),
    (["--set", "margin.nope=1"], "nope"),
    (["--set", "margin"], "--set"),
    (["--at", "epoch:x"], "--at"),
])
def test_score_plan_refuses_what_score_refuses_with_the_same_line(tiny_store, options, message):
    before = {p.name: digest(p) for p in (tiny_store / "runs").glob("*.h5")}
    lines = {}
    for plan in (["--plan"], []):
        result = invoke("score", tiny_store, *options, *plan)
        assert result.exit_code == 2, result.output
        lines[bool(plan)] = result.stderr.strip()
        assert message in lines[bool(plan)] and lines[bool(plan)].count("\n") == 0
    assert lines[True] == lines[False]
    assert {p.name: digest(p) for p in (tiny_store / "runs").glob("*.h5")} == before


def test_score_plan_of_a_missing_store_is_one_line(tmp_path):
    result = invoke("score", tmp_path / "nowhere", "--plan")
    assert result.exit_code == 2 and result.stderr.strip().count("\n") == 0 and "does not exist" in result.stderr


def test_no_fits_file_means_flops_for_training_and_nothing_estimated_for_measures(tmp_path, monkeypatch):
    monkeypatch.setattr(scaling, "DATA", tmp_path / "absent.json")
    monkeypatch.setattr(scaling, "probe_rate", lambda seconds=1.0: HERE_RATE)
    result = invoke("run", "quick", "--model", "mlp-1x512", "--seeds", 1, "--variants", "true", "--plan", "--json",
                    "--out", tmp_path / "s")
    assert result.exit_code == 0, result.output
    (run,) = json.loads(result.stdout)["runs"]
    assert run["estimate_from"] == scaling.FROM_FLOPS and run["score_seconds"] == 0
    assert run["not_estimated"] == measures.names(default_only=True)
    assert math.isfinite(run["seconds_at_most"])
