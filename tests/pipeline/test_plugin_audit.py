"""A researcher's own measure, from a file outside the repository, AUDIT_PLUGINS or an installed package's entry
point, goes through `audit run`, `score` and `report` like a built-in: its values equal numpy on the weights
read with h5py, its cached values record the plugin and are judged without it, a changed plugin recomputes."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from audit.pipeline import plugins
from audit.registry import source_digest
from cli import app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "my_measure.py"
PACKAGE = ROOT / "examples" / "plugin_package"
runner = CliRunner()


BUILT_IN = [set(registry.names()) for registry in plugins.REGISTRIES]


def unload() -> None:
    """As a new `audit` process starts: no plugin registered (in-process commands share the registries)."""
    plugins._forget(BUILT_IN)
    plugins.LOADED.clear()


def invoke(*args, env=None):
    unload()
    return runner.invoke(app, [str(a) for a in args], env=env)


@pytest.fixture
def store(small_store, tmp_path):
    """A copy of the session's small store (true, corrupt:0.5, random-labels; 2 seeds), to write into."""
    return Path(shutil.copytree(small_store, tmp_path / "store"))


@pytest.fixture
def plugin_file(tmp_path):
    """The example plugin, copied to a folder outside the repository."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    return Path(shutil.copy(EXAMPLE, folder / "their_measure.py"))


def weights(path, which="final"):
    with h5py.File(path, "r") as f:
        group = f[f"weights/{which}"]
        return [group[k][()].astype(np.float64) for k in sorted(group) if k.endswith("weight")]


def l1_by_numpy(path, power=1.0):
    return sum(float((np.abs(w) ** power).sum()) for w in weights(path))


def values(document, name):
    return {run["run_id"]: run["measures"][name] for run in document["runs"]}


def summary_of(document, name):
    return next(s for s in document["summary"] if s["measure"] == name)


def test_a_plugin_measure_is_scored_judged_and_equals_numpy_on_the_stored_weights(store, plugin_file):
    scored = invoke("score", store, "--plugin", plugin_file, "--measure", "weight-l1", "--json")
    assert scored.exit_code == 0, scored.stderr
    document = json.loads(scored.stdout)
    for run_id, value in values(document, "weight-l1").items():
        assert value == pytest.approx(l1_by_numpy(store / "runs" / f"{run_id}.h5"), rel=1e-9)
    assert summary_of(document, "weight-l1")["measure_family"] == "my-norms"
    path = next((store / "runs").glob("*.h5"))
    with h5py.File(path, "r") as f:
        entry = dict(f["measures/weight-l1"].attrs)
    recorded = json.loads(entry["plugin"])
    assert recorded["file"] == str(plugin_file) and entry["direction"] == 1 and entry["family"] == "my-norms"
    assert recorded["source_sha256"] == source_digest(plugin_file)

    rerun = invoke("run", "--model", "mlp-1x256", "--variants", "true,corrupt:0.5,random-labels", "--seeds", "2",
                   "--lr", "0.1", "--out", store, "--plugin", plugin_file, "--measure", "weight-l1", "--json")
    assert rerun.exit_code == 0, rerun.stderr
    assert values(json.loads(rerun.stdout), "weight-l1") == values(document, "weight-l1")  # trained nothing, cached

    with_plugin = invoke("report", store, "--plugin", plugin_file, "--json")
    without = invoke("report", store, "--json")
    assert with_plugin.exit_code == 0 and without.exit_code == 0, without.stderr
    judged, unloaded = summary_of(json.loads(with_plugin.stdout), "weight-l1"), summary_of(json.loads(without.stdout),
                                                                                           "weight-l1")
    assert unloaded["verdict"] == judged["verdict"] and unloaded["direction"] == 1
    assert unloaded["measure_family"] == "my-norms"
    assert [line for line in without.stderr.splitlines() if "weight-l1" in line] == [
        f"audit: measure weight-l1: from plugin {plugin_file}, which is not loaded; judged from its cached values "
        "and their recorded direction (+1); --plugin loads it"]
    assert "weight-l1" not in with_plugin.stderr


def test_a_changed_plugin_recomputes_and_report_says_the_cache_is_of_another_version(store, plugin_file):
    assert invoke("score", store, "--plugin", plugin_file, "--measure", "weight-l1").exit_code == 0
    plugin_file.write_text(plugin_file.read_text().replace('settings={"power": 1.0}', 'settings={"power": 2.0}'))
    stale = invoke("report", store, "--plugin", plugin_file, "--measure", "weight-l1", "--json")
    assert "cached values come from another version of its plugin" in stale.stderr
    rescored = invoke("score", store, "--plugin", plugin_file, "--measure", "weight-l1", "--json")
    assert rescored.exit_code == 0, rescored.stderr
    for run_id, value in values(json.loads(rescored.stdout), "weight-l1").items():
        assert value == pytest.approx(l1_by_numpy(store / "runs" / f"{run_id}.h5", power=2.0), rel=1e-9)


def test_the_same_measure_through_audit_plugins(store, plugin_file):
    result = invoke("score", store, "--measure", "weight-l1", "--json", env={"AUDIT_PLUGINS": str(plugin_file)})
    assert result.exit_code == 0, result.stderr
    for run_id, value in values(json.loads(result.stdout), "weight-l1").items():
        assert value == pytest.approx(l1_by_numpy(store / "runs" / f"{run_id}.h5"), rel=1e-9)


def test_the_installed_example_package_registers_through_its_entry_point(store, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(target), str(PACKAGE)], check=True, capture_output=True)
    audit = shutil.which("audit", path=str(Path(sys.executable).parent))
    env = {"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(target), "HOME": str(tmp_path)}
    result = subprocess.run([audit, "score", str(store), "--measure", "init-distance-ratio", "--json"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    for run_id, value in values(json.loads(result.stdout), "init-distance-ratio").items():
        path = store / "runs" / f"{run_id}.h5"
        final, init = weights(path), weights(path, "init")
        expected = np.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(final, init))) / np.sqrt(
            sum((b ** 2).sum() for b in init))
        assert value == pytest.approx(expected, rel=1e-9)


def test_a_broken_plugin_is_one_line_exit_2_and_writes_nothing(store, tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("from measures import measure\n\n@measure('x', family='norm', needs=('weights',), "
                      "direction=0, cost='instant', reference='r', formula='f')\ndef x(ctx):\n    return 1.0\n")
    before = {p: p.stat().st_mtime_ns for p in (store / "runs").iterdir()}
    result = invoke("score", store, "--plugin", broken, "--measure", "l2")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"audit: error: plugin {broken}: measure 'x': direction must be 1 (larger = "
                                          "more complex) or -1, got 0"]
    assert {p: p.stat().st_mtime_ns for p in (store / "runs").iterdir()} == before


def test_a_broken_installed_plugin_is_a_warning_and_the_command_goes_on(store, tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "broken_measures-0.1.dist-info").mkdir(parents=True)
    (site / "broken_measures-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-measures\n"
                                                                     "Version: 0.1\n")
    (site / "broken_measures-0.1.dist-info" / "entry_points.txt").write_text("[audit.plugins]\nbroken = "
                                                                             "broken_measures\n")
    (site / "broken_measures.py").write_text("import numpy\nraise ImportError('needs a library not installed')\n")
    monkeypatch.syspath_prepend(str(site))
    result = invoke("report", store)
    monkeypatch.delitem(sys.modules, "broken_measures", raising=False)
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "broken_measures" in line]
    assert warnings == [f"audit: warning: plugin broken_measures: importing it raised ImportError: needs a library "
                        f"not installed (at {site / 'broken_measures.py'}:2); fix it or leave it out (found through "
                        "entry point broken; audit goes on without it)"]
    assert "verdict" in result.stdout


def test_an_exception_in_a_plugin_measure_is_recorded_for_that_run_with_its_file_and_line(store, tmp_path):
    plugin = tmp_path / "fragile.py"
    plugin.write_text("from measures import measure\n\n@measure('fragile', family='norm', needs=('weights',), "
                      "direction=1, cost='instant', reference='r', formula='f')\ndef fragile(ctx):\n"
                      "    if ctx.spec.variant == 'random-labels':\n        raise RuntimeError('no labels for me')\n"
                      "    return 1.0\n")
    result = invoke("score", store, "--plugin", plugin, "--measure", "fragile", "--json")
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    by_variant = {(run["variant"], run["run_id"]): run["measures"]["fragile"] for run in document["runs"]}
    assert sorted(v for (variant, _), v in by_variant.items() if variant != "random-labels") == [1.0] * 4
    failures = [line for line in result.stderr.splitlines() if "measure fragile" in line]
    assert len(failures) == 2 and all(line.endswith(f"failed: RuntimeError: no labels for me (at {plugin}:6)")
                                      for line in failures)
