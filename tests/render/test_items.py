"""Item tables: one JSON list (or document) with --json, else a table with its note; the plan counts what is
left to train; a run document prints without the run file."""

import json

from audit.render.items import print_items, print_plan
from audit.render.show import print_run

ITEMS = [{"name": "a", "runs": 3, "needs": ["weights"], "settings": {"q": 10}},
         {"name": "b", "runs": None, "needs": [], "settings": {}}]


def test_print_items_as_json_is_the_items(capsys):
    print_items(ITEMS, True, ["name", "runs"])
    assert json.loads(capsys.readouterr().out) == ITEMS


def test_print_items_as_a_table_shows_the_columns_and_the_note(capsys):
    print_items(ITEMS, False, ["name", "runs", "needs", "settings"], note="a note")
    out = capsys.readouterr().out
    assert "name" in out and "settings" in out and "a note" in out
    assert '["weights"]' in out and '{"q": 10}' in out and "—" in out  # lists and dicts as JSON, None as —


def test_print_plan_counts_the_runs_to_train(capsys):
    items = [{"run_id": f"r{i}", "variant": "true", "seed": i, "model": "m", "dataset": "d", "state": state,
              "spec": {}} for i, state in enumerate(["complete", "new", "corrupt (retrained)"])]
    document = {"store": "somewhere", "runs": items}
    print_plan(document, False)
    out = capsys.readouterr().out
    assert "store somewhere: 2 of 3 runs to train" in out and "corrupt (retrained)" in out
    print_plan(document, True)
    assert json.loads(capsys.readouterr().out) == document


def test_print_run_prints_a_document(capsys):
    history = {c: [0.0, 1.0] for c in ("epoch", "step", "lr", "train_loss", "train_acc", "test_loss", "test_acc")}
    document = {"run_id": "abc", "path": "p/abc.h5", "spec": {"model": "mlp-1x64"}, "status": "complete",
                "fitted": True, "integrity": "verified (every part matches its digest)", "verified": True,
                "damaged": {}, "attrs": {"train_seconds": 1.5}, "data": {}, "history": history,
                "measures": {"l2": {"value": 2.0, "seconds": 0.1, "reason": None}}}
    print_run(document, False)
    out = capsys.readouterr().out
    assert "run abc  p/abc.h5" in out and "status complete, fitted yes, verified" in out and "mlp-1x64" in out
    assert "history (every evaluation)" in out and "measures" in out and "l2" in out
    print_run(document, True)
    assert json.loads(capsys.readouterr().out) == document
