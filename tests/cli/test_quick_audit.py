"""The README's first command: the quick audit on digits, and what its table must show."""

import json

from typer.testing import CliRunner

from cli import app


def test_quick_audit_end_to_end(quick_run, monkeypatch):
    folder, document = quick_run
    monkeypatch.chdir(folder)
    assert document["store"] == "audit-runs/quick"
    runs = document["runs"]
    assert len(runs) == 27 and all(r["status"] == "complete" for r in runs)
    for run in runs:
        if run["variant"] == "random-labels":
            assert run["train_acc"] == 1.0 and run["test_acc"] < 0.2
        if run["variant"] == "true":
            assert run["test_acc"] > 0.9
    summary = {s["measure"]: s for s in document["summary"]}
    assert summary["params"]["verdict"] == "fails"
    normalized = ("l2-margin", "spectral-margin", "path-l2-margin")
    assert all(summary[name]["verdict"] == "distinguishes" for name in normalized)
    assert all(summary[name]["trend_p_adj"] < 0.001 for name in normalized)  # Holm-corrected over every measure
    # the Rademacher proxy: the same MLP fits any ±1 labelling, so it is 1 everywhere and cannot separate
    scored = CliRunner().invoke(app, ["score", "--measure", "rademacher", "--measure", "params",
                                      "--set", "rademacher.draws=1", "--json"])
    rademacher = json.loads(scored.stdout)
    values = {r["measures"]["rademacher"] for r in rademacher["runs"]}
    assert values == {1.0}
    assert {s["measure"]: s["verdict"] for s in rademacher["summary"]} == {"rademacher": "fails", "params": "fails"}
    # a second run skips every complete run and reports the same verdicts
    again = json.loads(CliRunner().invoke(app, ["run", "--json"]).stdout)
    assert [v["verdict"] for v in again["summary"]] == [v["verdict"] for v in document["summary"]]
