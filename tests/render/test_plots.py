"""`audit plot`: the Figure 1 panels and measure plots carry the store's numbers."""

import sys
from collections import defaultdict
from statistics import median

import pytest
from typer.testing import CliRunner

from cli import app

runner = CliRunner()


def medians_by_p(points):
    by_p = defaultdict(list)
    for p, value in points:
        by_p[p].append(value)
    return sorted(by_p), [median(by_p[p]) for p in sorted(by_p)]


def test_plot_writes_the_panels_of_figure_1_and_each_measure(quick_run, tmp_path):
    folder, _ = quick_run
    out = tmp_path / "figures"
    result = runner.invoke(app, ["plot", str(folder / "audit-runs" / "quick"), "--out", str(out),
                                 "--measure", "l2-margin"])
    assert result.exit_code == 0, result.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["fig1a.png", "fig1b.png", "fig1c.png", "measure-l2-margin.png"]
    assert all((out / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for n in names)
    assert sorted(result.stdout.split()) == sorted(str(out / n) for n in names)
    svg = runner.invoke(app, ["plot", str(folder / "audit-runs" / "quick"), "--out", str(tmp_path / "svg"),
                              "--format", "svg", "--measure", "params"])
    assert svg.exit_code == 0 and (tmp_path / "svg" / "fig1c.svg").read_text().lstrip().startswith("<?xml")


def test_the_lines_are_the_medians_over_seeds_of_the_stored_runs(quick_run):
    from audit.render.plots import figure_1b, figure_1c, figure_measure, pyplot

    plt = pyplot()
    _, doc = quick_run
    rows = [dict(r, family=r["family"]) for r in doc["runs"]]
    labelled = [r for r in rows if r["corrupt"] is not None and r["status"] == "complete"]
    assert {r["corrupt"] for r in labelled} == {0.0, 0.2, 0.4, 0.6, 0.8, 1.0}

    line = figure_1c(plt, rows, 10).axes[0].lines[0]
    expected = medians_by_p([(r["corrupt"], 1 - r["test_acc"]) for r in labelled])
    assert list(line.get_xdata()) == expected[0]
    assert list(line.get_ydata()) == pytest.approx(expected[1])
    chance = figure_1c(plt, rows, 10).axes[0].lines[1]
    assert list(chance.get_ydata()) == [0.9, 0.9]

    reference = median(r["steps_to_fit"] for r in labelled if r["corrupt"] == 0.0)
    line = figure_1b(plt, rows).axes[0].lines[0]
    expected = medians_by_p([(r["corrupt"], r["steps_to_fit"] / reference) for r in labelled])
    assert list(line.get_ydata()) == pytest.approx(expected[1])
    assert line.get_ydata()[0] == pytest.approx(1.0) and line.get_ydata()[-1] > 1.5  # random labels fit slower

    line = figure_measure(plt, rows, "l2-margin").axes[0].lines[0]
    expected = medians_by_p([(r["corrupt"], r["measures"]["l2-margin"]) for r in labelled])
    assert list(line.get_ydata()) == pytest.approx(expected[1])
    plt.close("all")


def test_plot_without_matplotlib_says_how_to_get_it(quick_run, tmp_path, monkeypatch):
    folder, _ = quick_run
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    result = runner.invoke(app, ["plot", str(folder / "audit-runs" / "quick"), "--out", str(tmp_path / "f")])
    assert result.exit_code == 2
    assert "pip install -e '.[plot]'" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "f").exists()


def test_plot_rejects_an_unknown_format(quick_run, tmp_path):
    folder, _ = quick_run
    result = runner.invoke(app, ["plot", str(folder / "audit-runs" / "quick"), "--out", str(tmp_path / "f"),
                                 "--format", "bmp"])
    assert result.exit_code == 2 and "png, svg, pdf" in result.stderr


def test_the_chance_line_follows_the_number_of_classes_of_the_data(tmp_path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for class_name in ("a", "b", "c"):
        for i in range(8):
            folder = tmp_path / "pics" / class_name
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (6, 6), dtype=np.uint8)).save(folder / f"{i}.png")
    store = tmp_path / "store"
    trained = runner.invoke(app, ["run", "--dataset", f"folder:{tmp_path / 'pics'}", "--model", "mlp-1x16",
                                  "--variants", "true,random-labels", "--seeds", "1", "--epochs", "3",
                                  "--measure", "params", "--out", str(store)])
    assert trained.exit_code in (0, 1), trained.stderr  # 3 epochs need not fit: the plot is what is tested
    out = tmp_path / "figures"
    assert runner.invoke(app, ["plot", str(store), "--out", str(out), "--format", "svg"]).exit_code == 0
    assert "chance (0.67)" in (out / "fig1c.svg").read_text()
