"""Honest verdicts (issue 17, items 1, 2 and 4): a measure null with its reason is `undefined`, not `fails` (on a
user's conv model with max pooling, path norms are not defined, and a table built from the verdicts must not say
they fail the test); unfitted runs are said where they are judged; the auc cell informs or shows the exact p."""

import json

import pytest
from typer.testing import CliRunner

from audit.judge.verdict import judge
from cli import app

POOLED = '''
from torch import nn


def build(input_shape, num_classes):
    channels, height, width = input_shape
    return nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(8 * (height // 2) * (width // 2), num_classes))
'''


def test_path_norms_of_a_max_pooling_model_are_undefined_with_their_reason(tmp_path, monkeypatch):
    (tmp_path / "pooled_net.py").write_text(POOLED)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["run", "--model", "pooled_net:build", "--variants", "true,random-labels",
                                      "--seeds", "2", "--epochs", "3", "--measure", "path-l2", "--measure", "l2",
                                      "--out", str(tmp_path / "store"), "--json"])
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    summary = {s["measure"]: s for s in document["summary"]}
    assert summary["path-l2"]["verdict"] == "undefined"
    assert summary["path-l2"]["notes"][0] == ("not defined for these runs: path norms are not defined through "
                                              "MaxPool2d (2)")
    (family,) = [v for v in document["verdicts"] if v["measure"] == "path-l2"]
    assert (family["verdict"], family["nulls"], family["complete"]) == ("undefined", 4, 4)
    assert summary["l2"]["verdict"] == "insufficient"  # 2 seeds: a value on every run, too few runs
    assert "undefined" in document["rule"]
    # 3 epochs fit no random labels: said in the notes of every measure and family, and counted (item 2)
    assert summary["l2"]["unfitted"]["random-labels"] == 2
    assert summary["l2"]["notes"][-1].startswith("not all fitted: ") and "2 random-labels" in summary["l2"]["notes"][-1]
    assert all("did not reach the fit target" in v["note"] for v in document["verdicts"])


def rows(values, reasons=None):
    """Complete runs of one family: (variant, value) pairs, a reason where the value is None."""
    return [{"run_id": str(i), "family": "f", "variant": variant, "corrupt": {"true": 0.0}.get(variant, 1.0),
             "seed": i, "status": "complete", "gap": 0.1, "measures": {"m": value},
             "reasons": {} if value is not None else {"m": (reasons or {}).get(i, "not defined here")},
             "hyperparameters": {}}
            for i, (variant, value) in enumerate(values)]


JUDGED = {"m": {"direction": 1, "family": "norm", "log": False}}


def test_a_constant_measure_still_fails():
    constant = judge(rows([("true", 1.0)] * 3 + [("random-labels", 1.0)] * 3), JUDGED)
    assert constant["summary"][0]["verdict"] == "fails"
    assert constant["verdicts"][0]["note"].startswith("constant")


def test_runs_without_a_value_are_counted_in_the_note_when_enough_remain():
    values = [("true", 1.0), ("true", 1.1), ("true", None), ("random-labels", 3.0), ("random-labels", 3.2),
              ("random-labels", 3.1)]
    (family,) = judge(rows(values, {2: "margin γ ≤ 0"}), JUDGED)["verdicts"]
    assert family["verdict"] == "insufficient" and family["runs"] == 5
    assert "values on 5 of 6 runs (null on 1 of 6 runs: margin γ ≤ 0)" in family["note"]


@pytest.mark.parametrize("missing", ["true", "random-labels"])
def test_undefined_when_nulls_leave_fewer_than_two_runs_of_either_side(missing):
    values = [(v, None if v == missing and i else float(i)) for v in ("true", "random-labels") for i in range(3)]
    (family,) = judge(rows(values), JUDGED)["verdicts"]
    assert family["verdict"] == "undefined" and family["note"] == "null on 2 of 6 runs: not defined here"


@pytest.mark.parametrize("seeds, shown", [(3, "1.00 (p 0.05)"), (5, "1.00 [1.00,1.00]")])
def test_the_auc_cell_shows_the_exact_p_where_resampling_cannot_inform(seeds, shown):
    from audit.render.tables import interval_text

    values = [("true", float(i)) for i in range(seeds)] + [("random-labels", 10.0 + i) for i in range(seeds)]
    (family,) = judge(rows(values), JUDGED)["verdicts"]
    assert interval_text(family) == shown
    assert family["auc_interval_kind"] == ("exact-null" if seeds < 5 else "bootstrap")
    if seeds == 3:  # the exact one-sided Mann–Whitney p of 3 vs 3 completely separated: 1 / C(6, 3)
        assert family["auc_p"] == pytest.approx(1 / 20)


def test_the_header_says_1_seed_and_the_readme_sweep_snippet_matches_the_shipped_file():
    from pathlib import Path

    from audit.render.tables import header_text

    head = {"store": "s", "runs": 2, "complete": 2, "running": 0, "diverged": 0, "unfitted": 0, "families": 1,
            "seeds": 1}
    assert header_text(head).endswith("; 1 family, 1 seed")
    root = Path(__file__).resolve().parents[2]
    shipped = (root / "experiments" / "sweep.toml").read_text()
    snippet = (root / "README.md").read_text().split("[sweep]\n", 1)[1].split("```", 1)[0]
    for line in (line.split("#")[0].strip() for line in snippet.splitlines()):
        if "=" in line:
            assert line in [s.strip() for s in shipped.splitlines()], line
