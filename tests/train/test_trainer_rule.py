"""The trainer rule: which runs train batched and which run by run, fixed by the spec and recorded in the run file."""

import dataclasses
import json

from audit.pipeline.grid import pending_groups, prepare_store, run_grid, trainer_by_rule
from audit.spec.experiment import ExperimentSpec
from audit.spec.run import RunSpec
from audit.store.files import read_run
from audit.train.batched import batchable, groupable, groups_of
from audit.train.device import Operational

OPS = Operational(device="cpu", checkpoint_seconds=0)
CONV = RunSpec(dataset="digits", model="alexnet-small", train_size=64, epochs=1)
MLP = RunSpec(dataset="digits", model="mlp-1x16", train_size=64, epochs=1)


def experiment(*models: str) -> ExperimentSpec:
    return ExperimentSpec(name="rule", base={"dataset": "digits", "train_size": 64, "epochs": 1},
                          grid={"seeds": [0, 1]}, runs=tuple({"model": model} for model in models))


def test_the_rule_reads_the_model_kind_only():
    assert batchable(MLP) and batchable(dataclasses.replace(MLP, model="mlp-3x512", lr=0.3, weight_decay=1e-3))
    assert not batchable(CONV) and groupable(CONV)  # it could vmap, but a conv model trains run by run
    assert not batchable(dataclasses.replace(CONV, model="inception-small-nobn"))
    assert not batchable(dataclasses.replace(CONV, model="inception-small"))  # batch norm: cannot group at all
    for spec in (MLP, CONV, dataclasses.replace(MLP, seed=3), dataclasses.replace(CONV, train_size=None)):
        assert {trainer_by_rule(spec, OPS) for _ in range(3)} == {"batched" if spec.model == MLP.model else "sequential"}
    assert trainer_by_rule(MLP, dataclasses.replace(OPS, batch=False)) == "sequential"  # --no-batch


def test_a_conv_spec_trains_run_by_run_and_an_mlp_spec_batched_and_the_files_say_so(tmp_path):
    for attempt in ("first", "again"):  # the same specs take the same paths every time
        root = tmp_path / attempt
        outcome = run_grid(experiment("alexnet-small", "mlp-1x16"), root, OPS)
        assert not outcome.errors and len(outcome.records) == 4
        recorded = json.loads((root / "experiment.json").read_text())["trainers"]
        for record in outcome.records:
            expected = "sequential" if record.spec.model == "alexnet-small" else "batched"
            assert read_run(root / "runs" / f"{record.spec.run_id}.h5").attrs["trainer"] == expected
            assert recorded[record.spec.run_id] == expected
        finals = {r.spec.run_id: r.final for r in outcome.records}
        if attempt == "first":
            first = finals
    for run_id, weights in first.items():  # and end in the same weights
        assert all((weights[name] == value).all() for name, value in finals[run_id].items())


def test_a_conv_run_recorded_as_batched_keeps_its_path(tmp_path):
    """A store started when conv runs were batched: its runs resume and retrain batched, grouped as before."""
    spec = experiment("alexnet-small")
    store = prepare_store(spec, tmp_path, OPS)
    store.update_experiment(lambda doc: {**doc, "trainers": {run_id: "batched" for run_id in doc["trainers"]}})
    pending = pending_groups(store, spec.expand(), OPS)
    assert [(group.trainer, len(group.specs)) for group in pending.groups] == [("batched", 2)]
    assert groups_of(spec.expand()) == [spec.expand()]
