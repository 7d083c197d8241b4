"""The plan reads the store and never writes it: a corrupt run file's state is reported, its name and bytes
stay; `audit run` (the grid) sets the same file aside and retrains it. One state function serves both."""

import hashlib
import json
import shutil
from pathlib import Path

import h5py
import pytest
from typer.testing import CliRunner

import experiments
from audit.pipeline.grid import pending_groups
from audit.pipeline.plan import plan_items, run_state
from audit.spec.overrides import apply_overrides, run_overrides
from audit.store.directory import Store
from audit.train.device import Operational
from cli import app

OLD = Path(__file__).resolve().parents[1] / "data" / "old_store" / "store"
# The command that made tests/data/old_store (see its README.md).
OVERRIDES = run_overrides(model="mlp-1x64", variants="true,corrupt:0.5,random-labels", seeds=1)
RUN = ["run", "--model", "mlp-1x64", "--variants", "true,corrupt:0.5,random-labels", "--seeds", "1"]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def store(tmp_path) -> Path:
    root = tmp_path / "store"
    shutil.copytree(OLD, root)
    return root


@pytest.fixture
def experiment():
    return apply_overrides(experiments.load("quick"), OVERRIDES)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:500])


def damage_weights(path: Path) -> None:
    """Change one stored final weight without its digest: only a read with weights sees it."""
    with h5py.File(path, "r+") as f:
        f["weights/final/1.bias"][0] += 1.0


def test_run_state_of_new_complete_and_corrupt_files(store):
    paths = sorted((store / "runs").glob("*.h5"))
    assert run_state(store / "runs" / "000000000000.h5") == "new"
    assert [run_state(p) for p in paths] == ["complete"] * 3
    truncate(paths[0])
    damage_weights(paths[1])
    assert run_state(paths[0]) == run_state(paths[1]) == "corrupt"
    assert sorted((store / "runs").iterdir()) == paths  # nothing renamed, nothing added


@pytest.mark.parametrize("damage", [truncate, damage_weights])
def test_the_plan_reports_a_corrupt_file_and_leaves_it(store, experiment, damage):
    victim = sorted((store / "runs").glob("*.h5"))[0]
    damage(victim)
    before = {p.name: digest(p) for p in (store / "runs").iterdir()}
    items = plan_items(experiment, store)
    states = {i["run_id"]: i["state"] for i in items}
    assert states.pop(victim.stem) == "corrupt (retrained)"
    assert set(states.values()) == {"complete"} and len(states) == 2
    assert {p.name: digest(p) for p in (store / "runs").iterdir()} == before


def test_audit_run_plan_leaves_a_corrupt_file_where_it_is(store):
    victim = sorted((store / "runs").glob("*.h5"))[0]
    truncate(victim)
    before = {p.name: digest(p) for p in store.rglob("*") if p.is_file()}
    result = CliRunner().invoke(app, [*RUN, "--out", str(store), "--plan", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["store"] == str(store)
    assert {r["run_id"]: r["state"] for r in document["runs"]}[victim.stem] == "corrupt (retrained)"
    assert {p.name: digest(p) for p in store.rglob("*") if p.is_file()} == before


def test_the_grid_sets_the_corrupt_file_aside_where_the_plan_said_retrained(store, experiment):
    victim = sorted((store / "runs").glob("*.h5"))[0]
    damage_weights(victim)
    planned = {i["run_id"]: i["state"] for i in plan_items(experiment, store)}
    pending = pending_groups(Store(store), experiment.expand(), Operational(batch=False))
    assert [s.run_id for group in pending.groups for s in group.specs] == [victim.stem]
    assert len(pending.notices) == 1 and victim.name in pending.notices[0] and "final weights" in pending.notices[0]
    assert sorted(r.run_id for r in pending.records) == sorted(k for k, v in planned.items() if v == "complete")
    assert not victim.exists() and victim.with_name(victim.name + ".corrupt").exists()
