"""The family of tests the p-values are corrected over is fixed and stated: every measure cached in the store,
whatever `--measure` shows, so a verdict never changes with the filter (issue 17, item 3)."""

import json
import shutil

from typer.testing import CliRunner

from cli import app

runner = CliRunner()


def report(*args):
    result = runner.invoke(app, ["report", *map(str, args)])
    assert result.exit_code == 0, result.stderr
    return result


def test_a_verdict_does_not_change_with_the_measure_filter_and_the_family_is_stated(small_store):
    everything = json.loads(report(small_store, "--json").stdout)
    only_l2 = json.loads(report(small_store, "--measure", "l2", "--json").stdout)
    cached = [s["measure"] for s in everything["summary"]]
    assert len(cached) > 10 and only_l2["correction"]["size"] == everything["correction"]["size"] == len(cached)
    assert [s["measure"] for s in only_l2["summary"]] == ["l2"]
    (mine,) = only_l2["summary"]
    (same,) = [s for s in everything["summary"] if s["measure"] == "l2"]
    assert mine["trend_p_adj"] == same["trend_p_adj"] and mine["verdict"] == same["verdict"]
    assert set(only_l2["runs"][0]["measures"]) == {"l2"}
    table = report(small_store, "--measure", "l2").stdout
    assert f"p-values corrected over {len(cached)} measures (every measure cached in the store)" in " ".join(
        table.split())


def test_scoring_a_new_measure_into_the_store_widens_the_family(small_store, tmp_path):
    store = shutil.copytree(small_store, tmp_path / "store")
    before = json.loads(report(store, "--json").stdout)["correction"]["size"]
    scored = runner.invoke(app, ["score", str(store), "--measure", "sharpness", "--json"])
    assert scored.exit_code == 0, scored.stderr
    assert json.loads(scored.stdout)["correction"]["size"] == before + 1
    assert json.loads(report(store, "--json").stdout)["correction"]["size"] == before + 1
