"""audit benchmark: the leaderboard's ranks and aggregation against hand-computed cases, and the command end to
end on a tiny suite (injected through SUITE_FOLDER) cached under a temporary AUDIT_CACHE_DIR: a plugin measure
ranked among the built-ins, a resumed build that trains nothing, --measure scoring only what it names, the
JSON, Markdown and CSV outputs, and the shipped suite frozen at its version."""

import csv
import hashlib
import json
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

import experiments
import measures
from audit.judge.leaderboard import PartRows, average_ranks, leaderboard
from audit.pipeline import benchmark, plugins
from audit.store.files import read_run
from cli import app

PLUGIN = '''
from measures import measure


@measure("{name}", family="test-plugin", needs=("weights",), direction=1, cost="instant",
         reference="a benchmark test plugin", formula="sum of |w|^{power} over the weight tensors")
def value(ctx):
    return float(sum(p.detach().abs().pow({power}).sum() for n, p in ctx.model.named_parameters()
                     if n.endswith("weight")))
'''

TINY = {
    "suite": 'version = 7\nquick = ["tq", "ts"]\nfull = ["tq", "ts", "tx"]\n',
    "tq": '''name = "tq"
             [base]
             dataset = "digits"
             train_size = 200
             model = "mlp-1x32"
             epochs = 10
             [grid]
             variants = ["true", "corrupt:0.5", "random-labels"]
             seeds = 2''',
    "ts": '''name = "ts"
             [base]
             dataset = "digits"
             model = "mlp-1x16"
             epochs = 10
             [sweep]
             width = [16, 32]
             train_size = [150, 300]
             [grid]
             variants = ["true", "random-labels"]
             seeds = 1''',
    "tx": '''name = "tx"
             [base]
             dataset = "digits"
             model = "mlp-1x16"
             epochs = 3
             [grid]
             variants = ["true"]
             seeds = 1''',
}


# ---------------------------------------------------------------- the leaderboard, by hand

def test_average_ranks_share_tied_places_and_put_missing_last():
    assert average_ranks([(3.0,), (1.0,), (3.0,), None, (2.0,), None]) == [1.5, 4.0, 1.5, 5.5, 3.0, 5.5]
    assert average_ranks([(1.0, 0.5), (1.0, 0.9), (0.5, 1.0)]) == [2.0, 1.0, 3.0]  # tuples: auc, then trend


def row(family, variant, corrupt, seed, values, gap, hyper=None):
    return {"run_id": f"{family}{variant}{seed}{hyper}", "family": family, "variant": variant, "corrupt": corrupt,
            "seed": seed, "status": "complete", "fitted": True, "train_acc": 1.0, "test_acc": 1.0 - gap, "gap": gap,
            "test_size": 1_000_000, "hyperparameters": hyper or {"width": 1}, "measures": values, "seconds": {}}


def hand_parts(sweep_seeds=4):
    """R: one family of true, corrupt:0.5 and random-labels runs, 3 seeds. S: true-label runs over width 1-3,
    4 seeds (12 pairs outside test noise), the gap growing with width."""
    label_rows = []
    for variant, p in (("true", 0.0), ("corrupt", 0.5), ("random-labels", 1.0)):
        for seed in range(3):
            flat = {"true": [0, 1, 2], "corrupt": [1, 2, 0], "random-labels": [2, 0, 1]}[variant][seed]
            label_rows.append(row("R", variant, p, seed, {"up": p + 0.01 * seed, "down": -p - 0.01 * seed,
                                                          "flat": float(flat), "none": None}, 0.1 + 0.8 * p))
    sweep_rows = [row("S", "true", 0.0, seed, {"up": float(w), "down": float(w), "flat": [1.0, 3.0, 2.0][w - 1],
                                               "none": None}, 0.1 * w, {"width": w})
                  for w in (1, 2, 3) for seed in range(sweep_seeds)]
    return [PartRows("R", label_rows, False), PartRows("S", sweep_rows, True)]


JUDGED = {"up": {"direction": 1, "family": "x", "log": False}, "down": {"direction": -1, "family": "x", "log": False},
          "flat": {"direction": 1, "family": "x", "log": False}, "none": {"direction": 1, "family": "x", "log": False}}


def test_leaderboard_ranks_each_column_and_orders_the_mean_rank():
    board = leaderboard(hand_parts(), JUDGED)
    entries = {e["measure"]: e for e in board["leaderboard"]}
    # R: up and down (smaller = more complex) both separate perfectly once oriented: oriented auc 1, trend
    # τ-b = 27/sqrt(36·27); flat has auc 0.5; none has no value and takes the last place
    assert entries["down"]["R.auc"] == entries["up"]["R.auc"] == 1.0
    assert entries["down"]["R.trend"] == pytest.approx(27 / (36 * 27) ** 0.5)
    assert entries["flat"]["R.auc"] == 0.5 and entries["none"]["R.auc"] is None
    assert {m: e["ranks"]["R"] for m, e in entries.items()} == {"up": 1.5, "down": 1.5, "flat": 3.0, "none": 4.0}
    # S: Ψ along width is +1 (up), 1/3 (flat) and −1 (down: it grows with the gap but says it should shrink)
    assert entries["up"]["psi.width"] == 1.0 and entries["down"]["psi.width"] == -1.0
    assert entries["flat"]["psi.width"] == pytest.approx(1 / 3)
    assert entries["flat"]["sign_error_mean"] == pytest.approx(1 / 3) and entries["down"]["sign_error_worst"] == 1.0
    assert entries["up"]["cmi"] == pytest.approx(1.0) and entries["down"]["cmi"] == pytest.approx(-1.0)
    # flat, per seed: 2 of its 3 pairs agree with the gap, both orders counted: the table [[2, 1], [1, 2]] / 6
    flat_bits = 2 * (2 / 6) * math.log2((2 / 6) / 0.25) + 2 * (1 / 6) * math.log2((1 / 6) / 0.25)
    assert entries["flat"]["cmi"] == pytest.approx(flat_bits) and entries["flat"]["cmi_sign"] == 1
    keys = [c["key"] for c in board["columns"]]
    assert keys == ["R", "psi.width", "psi", "sign_error_mean", "sign_error_worst", "cmi"]  # S has no random labels
    for key in keys[1:]:
        assert {m: e["ranks"][key] for m, e in entries.items()} == {"up": 1, "flat": 2, "down": 3, "none": 4}
    # the score is the mean of the six column ranks; the overall rank orders it
    assert entries["up"]["score"] == pytest.approx((1.5 + 5 * 1) / 6)
    assert entries["flat"]["score"] == pytest.approx((3 + 5 * 2) / 6)
    assert entries["down"]["score"] == pytest.approx((1.5 + 5 * 3) / 6)
    assert [(e["measure"], e["rank"]) for e in board["leaderboard"]] == [("up", 1), ("flat", 2), ("down", 3),
                                                                        ("none", 4)]
    assert board["correction"] == {"method": "holm", "family": ["up", "down", "flat", "none"], "size": 4}
    assert "mean of a measure's ranks" in board["aggregation"] and board["left_out"] == []


def test_sign_error_and_cmi_on_too_few_pairs_are_not_ranked():
    board = leaderboard(hand_parts(sweep_seeds=3), JUDGED)  # 9 pairs outside test noise: fewer than 10
    assert [c["key"] for c in board["columns"]] == ["R", "psi.width", "psi"]
    assert board["left_out"] == ["sign-error and CMI are not ranked: they rest on at most 9 pairs of runs outside "
                                 "test noise, fewer than 10"]
    entries = {e["measure"]: e for e in board["leaderboard"]}
    assert entries["flat"]["sign_error_mean"] == pytest.approx(1 / 3)  # still reported
    assert entries["flat"]["score"] == pytest.approx((3 + 2 * 2) / 3)


def test_measures_tied_in_every_column_share_their_overall_place():
    judged = {"a": JUDGED["up"], "b": JUDGED["up"], "c": JUDGED["flat"]}
    parts = [PartRows("R", [{**r, "measures": {"a": r["measures"]["up"], "b": r["measures"]["up"],
                                               "c": r["measures"]["flat"]}} for r in hand_parts()[0].rows], False)]
    ranks = {e["measure"]: e["rank"] for e in leaderboard(parts, judged)["leaderboard"]}
    assert ranks == {"a": 1.5, "b": 1.5, "c": 3.0}


# ---------------------------------------------------------------- the command, on a tiny suite

def invoke(args):
    result = CliRunner().invoke(app, args)
    return result


def forget_plugins(before):
    plugins._forget(before)
    plugins.LOADED.clear()


@dataclass
class Built:
    folder: Path
    cache: Path
    plugin: Path
    document: dict
    stderr: str


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The tiny suite's --quick benchmark from an empty cache, with a plugin measure, once for the module."""
    folder = tmp_path_factory.mktemp("benchmark")
    suite = folder / "suite"
    suite.mkdir()
    for name, text in TINY.items():
        (suite / f"{name}.toml").write_text(textwrap.dedent(text) if name == "suite" else
                                            "\n".join(line.strip() for line in text.splitlines()) + "\n")
    plugin = folder / "sum_abs.py"
    plugin.write_text(PLUGIN.format(name="sum-abs", power=1))
    before = [set(registry.names()) for registry in plugins.REGISTRIES]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUDIT_CACHE_DIR", str(folder / "cache"))
        patch.delenv("AUDIT_PLUGINS", raising=False)
        patch.setattr(benchmark, "SUITE_FOLDER", suite)
        result = invoke(["benchmark", "--quick", "--plugin", str(plugin), "--json"])
        assert result.exit_code == 0, result.stderr
        yield Built(folder, folder / "cache" / "benchmark" / "v7", plugin, json.loads(result.stdout), result.stderr)
    forget_plugins(before)


def builtins():
    return [n for n in measures.names(default_only=True) if measures.get(n).plugin is None]


def test_quick_from_an_empty_cache_ranks_the_plugin_among_the_built_ins(built):
    document = built.document
    ranked = [e["measure"] for e in document["leaderboard"]]
    assert sorted(ranked) == sorted(builtins() + ["sum-abs"])
    assert document["correction"]["size"] == len(builtins()) + 1 == len(document["correction"]["family"])
    n = len(ranked)
    places = [e["rank"] for e in document["leaderboard"]]
    assert places == sorted(places) and sum(places) == n * (n + 1) / 2  # average ranks keep the sum
    keys = [c["key"] for c in document["columns"]]
    assert keys[:2] == ["tq", "ts"] and "psi.width" in keys and "psi.train_size" in keys
    for entry in document["leaderboard"]:
        assert set(entry["ranks"]) == set(keys) and entry["score"] == pytest.approx(sum(entry["ranks"].values()) / len(keys))
    plugin = next(e for e in document["leaderboard"] if e["measure"] == "sum-abs")
    assert plugin["tq.auc"] is not None and plugin["tq.verdict"] and plugin["psi.width"] is not None
    assert [(x["name"], x["runs"], x["complete"]) for x in document["benchmark"]["experiments"]] == [("tq", 6, 6),
                                                                                                  ("ts", 8, 8)]
    assert sorted(p.name for p in built.cache.iterdir()) == ["tq", "ts"]  # --quick: tx is not trained
    assert document["benchmark"]["version"] == 7 and document["benchmark"]["suite"] == "quick"
    assert "batched" in built.stderr or "training" in built.stderr


def run_files(cache):
    return {p: p.stat().st_mtime_ns for p in sorted(cache.glob("*/runs/*.h5"))}


def test_a_second_invocation_trains_and_computes_nothing_and_its_table_fits_100_columns(built):
    before = run_files(built.cache)
    result = invoke(["benchmark", "--quick", "--plugin", str(built.plugin)])
    assert result.exit_code == 0, result.stderr
    assert run_files(built.cache) == before and len(before) == 14
    assert "batched" not in result.stderr and "training" not in result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("leaderboard of benchmark v7 (quick suite)") for line in lines)
    assert max(len(line.rstrip()) for line in lines) <= 100
    assert "sum-abs" in result.stdout and "mean of a measure's ranks" in result.stdout


def test_markdown_and_csv_hold_every_rank(built, tmp_path):
    path = tmp_path / "board.csv"
    result = invoke(["benchmark", "--quick", "--plugin", str(built.plugin), "--markdown", "--csv", str(path)])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("| # | measure | score | tq | ts | Ψ ")
    expected = {e["measure"]: e for e in built.document["leaderboard"]}
    assert sum(line.startswith("| ") for line in lines) == len(expected) + 1
    with open(path, newline="") as handle:
        records = list(csv.DictReader(handle))
    assert len(records) == len(expected)
    for record in records:
        entry = expected[record["measure"]]
        assert float(record["rank"]) == entry["rank"] and float(record["rank tq"]) == entry["ranks"]["tq"]
        assert float(record["rank psi.width"]) == entry["ranks"]["psi.width"]


def cached_builtins(cache):
    return {p.stem: {n: (v.get("value"), v.get("seconds"), v.get("version"), v.get("reason"))
                     for n, v in read_run(p, weights=False, run_id=p.stem).measures.items() if n in builtins()}
            for p in sorted(cache.glob("*/runs/*.h5"))}


def test_measure_scores_only_the_named_measure_against_the_cached_built_ins(built):
    second = built.folder / "sum_sq.py"
    second.write_text(PLUGIN.format(name="sum-sq", power=2))
    before = cached_builtins(built.cache)
    result = invoke(["benchmark", "--quick", "--plugin", str(built.plugin), "--plugin", str(second),
                     "--measure", "sum-sq", "--json"])
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["benchmark"]["scored"] == ["sum-sq"] and document["benchmark"]["asked"] == ["sum-sq"]
    ranked = [e["measure"] for e in document["leaderboard"]]
    assert sorted(ranked) == sorted(builtins() + ["sum-sq"])  # the loaded but unasked sum-abs is not ranked
    assert document["correction"]["family"] == builtins() + ["sum-sq"]
    assert cached_builtins(built.cache) == before  # not one built-in recomputed
    for path in built.cache.glob("*/runs/*.h5"):
        assert read_run(path, weights=False, run_id=path.stem).measures["sum-sq"]["value"] > 0
    assert document["notices"] == []


def test_an_unknown_measure_is_refused_before_any_work(built, tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIT_CACHE_DIR", str(tmp_path / "empty"))
    result = invoke(["benchmark", "--quick", "--measure", "l2-margn"])
    assert result.exit_code == 2 and "did you mean 'l2-margin'" in result.stderr
    assert not (tmp_path / "empty").exists()


# ---------------------------------------------------------------- the shipped suite

V1_RUN_IDS_SHA256 = "3f606f8fef843bddfe7f80a1ad269151aa8b95c261fd4b72669d64cef0ff6039"  # the run ids of suite v1


def test_the_shipped_suite_is_frozen_at_its_version():
    shipped = Path(experiments.__file__).parent / "benchmark"  # SUITE_FOLDER, whatever a fixture patched it to
    suite = benchmark.load_suite(shipped)
    assert suite.version == 1
    assert [(e.name, len(e.expand())) for e in suite.full] == [("quick", 27), ("sweep", 96), ("fashion", 108),
                                                              ("conv", 9)]
    assert [e.name for e in suite.quick] == ["quick", "sweep"]
    assert all(e.expand()[0].dataset == "digits" for e in suite.quick)
    assert dict(suite.full[1].sweep) == {"width": [128, 512], "lr": [0.05, 0.1], "weight_decay": [0.0, 0.0005],
                                         "train_size": [600, 1347]}
    ids = "\n".join(f"{e.name} {s.run_id}" for e in suite.full for s in e.expand())
    assert hashlib.sha256(ids.encode()).hexdigest() == V1_RUN_IDS_SHA256, (
        "the suite's runs changed: bump the version in experiments/benchmark/suite.toml and record the new digest")
    assert not set(experiments.names()) & {"suite", "fashion", "conv"}  # not shipped experiments of their own
    assert benchmark.store_root(1, "quick").parts[-3:] == ("benchmark", "v1", "quick")
