"""The store in tests/data/old_store was written by audit before the move into packages (see its README.md):
the current code must read it, report the same numbers, resume it without retraining and never write to it.

Every test works on a copy in tmp_path; the committed copy is hashed before and after the module."""

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import cli
import measures

OLD = Path(__file__).resolve().parents[1] / "data" / "old_store"
REPORTS = {"report.json": [], "report-epoch2.json": ["--at", "epoch:2"], "report-loss0.5.json": ["--at", "loss:0.5"]}
RUN_FIELDS = ("status", "fitted", "train_acc", "test_acc", "gap")
VERDICT_FIELDS = ("measure", "family", "verdict", "auc", "trend", "tau",
                  "auc_p", "trend_p", "tau_p", "auc_p_adj", "trend_p_adj", "tau_p_adj")
# The command of the README that made the store, run again on it.
RESUME = ["run", "--model", "mlp-1x64", "--variants", "true,corrupt:0.5,random-labels", "--seeds", "1",
          "--keep", "epoch:2,loss:0.5"]


def hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under root, keyed by its path relative to root."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def stored(name: str) -> dict:
    return json.loads((OLD / name).read_text())


def invoke(args: list[str]) -> dict:
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return json.loads(result.stdout)


def same(old, new) -> bool:
    """A stored statistic against a current one: both null, or floats within rel 1e-12, or equal."""
    if old is None or new is None:
        return old is None and new is None
    if isinstance(old, float) or isinstance(new, float):
        return math.isclose(old, new, rel_tol=1e-12)
    return old == new


def assert_runs_match(old: dict, new: dict) -> None:
    old_runs = {r["run_id"]: r for r in old["runs"]}
    new_runs = {r["run_id"]: r for r in new["runs"]}
    assert len(old_runs) == len(old["runs"]) == 3 and len(new_runs) == len(new["runs"])
    assert set(new_runs) == set(old_runs)
    for run_id, was in old_runs.items():
        now = new_runs[run_id]
        for field in RUN_FIELDS:
            assert now[field] == was[field], (run_id, field, was[field], now[field])
        assert set(was["measures"]) <= set(now["measures"]), (run_id, set(was["measures"]) - set(now["measures"]))
        for name, value in was["measures"].items():
            # exactly equal, or both null (None == None)
            assert now["measures"][name] == value, (run_id, name, value, now["measures"][name])


def assert_verdicts_match(old_rows: list[dict], new: dict) -> None:
    new_rows = {(r["measure"], r["family"]): r for r in new["verdicts"]}
    assert len(new_rows) == len(new["verdicts"])
    for was in old_rows:
        key = (was["measure"], was["family"])
        assert key in new_rows, f"verdict row {key} of the stored report is gone"
        now = new_rows[key]
        for field in VERDICT_FIELDS:
            if field in was:
                assert same(was[field], now[field]), (key, field, was[field], now[field])


@pytest.fixture(scope="module", autouse=True)
def committed_copy_untouched():
    before = hashes(OLD)
    assert {"store/experiment.json", "report.json", "report-epoch2.json", "report-loss0.5.json"} <= set(before)
    yield
    assert hashes(OLD) == before, "a test wrote to the committed old store"


@pytest.fixture
def old_store(tmp_path) -> Path:
    """A fresh copy of the old store, per test."""
    return Path(shutil.copytree(OLD / "store", tmp_path / "store"))


@pytest.mark.parametrize("name", list(REPORTS))
def test_report_of_the_old_store_matches_the_stored_report(old_store, name):
    old = stored(name)
    new = invoke(["report", str(old_store), "--json", *REPORTS[name]])
    assert_runs_match(old, new)
    assert_verdicts_match(old["verdicts"], new)
    assert new["errors"] == []
    if name == "report-loss0.5.json":  # no measure is cached at loss:0.5: the runs, and no verdict rows
        assert old["verdicts"] == [] and all(r["measures"] == {} for r in old["runs"])


def test_run_resumes_the_old_store_without_training(old_store):
    old = stored("report.json")
    runs = sorted((old_store / "runs").glob("*.h5"))
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in runs}
    files_before = set(hashes(old_store))
    result = CliRunner().invoke(cli.app, [*RESUME, "--out", str(old_store), "--json"])
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    # `audit run` prints a "[i/n] RUN_ID VARIANT seed S: training|batched" line on stderr for each run it
    # trains, and nothing else when every run is complete and every measure cached: no line means no training.
    assert result.stderr == ""
    new = json.loads(result.stdout)
    assert {r["run_id"] for r in new["runs"]} == {r["run_id"] for r in old["runs"]} == {p.stem for p in runs}
    assert all(r["status"] == "complete" for r in new["runs"])
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in (old_store / "runs").glob("*.h5")} == before
    assert set(hashes(old_store)) == files_before  # nothing retrained aside (*.corrupt) or added
    assert new["errors"] == []
    # Its document has the shape of `audit report --json`, judged on the default measures; all are cached
    # in the old store, so the numbers are the stored report's for those measures.
    defaults = measures.names(default_only=True)
    assert [r["measure"] for r in new["verdicts"]] == defaults
    assert {r["measure"] for r in stored("report-epoch2.json")["verdicts"]} == set(defaults)
    assert set(new) >= {"store", "header", "rule", "runs", "verdicts", "summary", "errors"}
    assert_verdicts_match([r for r in old["verdicts"] if r["measure"] in defaults], new)
    default_runs = {"runs": [dict(r, measures={m: v for m, v in r["measures"].items() if m in defaults})
                             for r in old["runs"]]}
    assert_runs_match(default_runs, new)
    assert all(set(r["measures"]) == set(defaults) for r in new["runs"])


def test_reading_the_old_store_never_writes(old_store):
    before = hashes(old_store)
    for args in REPORTS.values():
        invoke(["report", str(old_store), "--json", *args])
        assert hashes(old_store) == before, args
    result = CliRunner().invoke(cli.app, ["report", str(old_store)])  # the table, too
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    assert hashes(old_store) == before


def test_verify_upgrade_adds_digests_and_changes_no_number(old_store):
    checked = invoke(["verify", str(old_store), "--json"])
    assert checked["counts"] == {"unverified": 4, "verified": 1}  # runs and a shared value; experiment.json
    before = hashes(old_store)
    assert hashes(old_store) == before  # verify without --upgrade wrote nothing
    assert invoke(["show", str(old_store), sorted((old_store / "runs").glob("*.h5"))[0].stem, "--json"])[
        "integrity"].startswith("unverified")
    assert invoke(["verify", str(old_store), "--upgrade", "--json"])["counts"] == {"upgraded": 4, "verified": 1}
    assert invoke(["verify", str(old_store), "--json"])["counts"] == {"verified": 5}
    for name, args in REPORTS.items():
        new = invoke(["report", str(old_store), "--json", *args])
        assert_runs_match(stored(name), new)
        assert_verdicts_match(stored(name)["verdicts"], new)
