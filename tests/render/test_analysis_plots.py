"""The landscape, spectrum and Hessian-density figures carry their input's numbers, label their axes with
units, name every run in a legend, colour each variant as every figure does, and save files that decode."""

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from audit.render import analysis_plots as ap
from audit.render.palette import variant_colour
from audit.spec.run import RunSpec


def colour(artist):
    from matplotlib.colors import to_hex

    return to_hex(artist.get_color() if hasattr(artist, "get_color") else artist.get_edgecolor())


def legend_texts(legend):
    return [t.get_text() for t in legend.get_texts()]


def line_runs():
    alpha = np.linspace(-0.5, 1.5, 41)
    true = 2.3 * np.exp(-5 * alpha.clip(0)) + 1e-3
    rand = 2.3 * np.exp(-3 * alpha.clip(0)) + 1e-2
    return [{"label": "random-labels · seed 0", "variant": "random-labels",
             "line": {"alpha": alpha, "loss": rand, "accuracy": 1 - 0.9 * np.exp(-2 * alpha.clip(0))}},
            {"label": "true · seed 0", "variant": "true",
             "line": {"alpha": alpha, "loss": true, "accuracy": 1 - 0.9 * np.exp(-6 * alpha.clip(0))}}]


def plane_runs():
    a = b = np.linspace(-1, 1, 21)
    radius = a[:, None] ** 2 + 2 * b[None, :] ** 2  # loss[i, j] at (a[i], b[j]): twice as steep along b
    return [{"label": "true · seed 0", "variant": "true",
             "plane": {"a": a, "b": b, "loss": 0.01 + radius, "accuracy": np.exp(-radius)}},
            {"label": "random-labels · seed 0", "variant": "random-labels",
             "plane": {"a": a, "b": b, "loss": 0.02 + 20 * radius, "accuracy": np.exp(-8 * radius)}}]


def spectra_runs():
    rng = np.random.default_rng(0)

    def layer(name, n, scale, fitted=True):
        evals = np.sort(scale * rng.pareto(2.0, n) + 1e-3)[::-1]
        return {"name": name, "shape": (n, 2 * n), "eigenvalues": evals,
                "alpha": 2.5 if fitted else None, "xmin": float(np.median(evals)) if fitted else None}

    return [{"label": "true · seed 0", "variant": "true",
             "layers": [layer("0", 64, 1.0), layer("2", 32, 2.0), layer("4", 10, 1.0, fitted=False)]},
            {"label": "random-labels · seed 0", "variant": "random-labels",
             "layers": [layer("0", 64, 3.0), layer("2", 32, 5.0), layer("4", 10, 1.0)]}]


def density_runs():
    grid = np.linspace(-1, 10, 500)
    out = []
    for label, variant, top in (("true · seed 0", "true", 4.0), ("random-labels · seed 0", "random-labels", 8.0)):
        nodes = np.sort(np.random.default_rng(1).uniform(-0.5, top, (3, 20)), axis=1)
        density = np.exp(-grid ** 2 / 0.02) + 1e-3 * np.exp(-(grid - top) ** 2 / 0.01)
        out.append({"label": label, "variant": variant,
                    "density": {"grid": grid, "density": density / np.trapezoid(density, grid), "nodes": nodes,
                                "weights": np.full((3, 20), 1 / 20)}})
    return out


def assert_readable(figure):
    """No text under 8 pt at the saved size; the figure fits a printed page's width."""
    from matplotlib.text import Text

    figure.canvas.draw()
    small = [(t.get_text(), t.get_fontsize()) for t in figure.findobj(Text)
             if t.get_visible() and t.get_text().strip() and t.get_fontsize() < 8]
    assert not small
    assert figure.get_size_inches()[0] <= 7.0


def test_landscape_1d_draws_the_line_data_with_ends_marked():
    runs = line_runs()
    figure = ap.landscape_1d(runs, chance=0.1)
    loss_axes, accuracy_axes = figure.axes
    assert loss_axes.get_xlabel() == "α (0 = init, 1 = final)"
    assert loss_axes.get_ylabel() == "train loss (cross-entropy, nats)"
    assert accuracy_axes.get_ylabel() == "train accuracy (fitted labels)"
    assert loss_axes.get_yscale() == "log"  # the losses span three decades
    assert legend_texts(loss_axes.get_legend()) == ["true · seed 0", "random-labels · seed 0", "init (α = 0)",
                                                    "final (α = 1)"]  # true first, whatever the input order
    assert legend_texts(accuracy_axes.get_legend()) == ["chance (0.10)"]
    for run in runs:
        line = next(x for x in loss_axes.lines if x.get_label() == run["label"])
        assert np.array_equal(line.get_xdata(), run["line"]["alpha"])
        assert np.array_equal(line.get_ydata(), run["line"]["loss"])
        assert colour(line) == variant_colour(run["variant"]).lower()
        line = next(x for x in accuracy_axes.lines if x.get_label() == f"_{run['label']}")
        assert np.array_equal(line.get_ydata(), run["line"]["accuracy"])
        ends = [x for x in loss_axes.lines if x.get_label() == "_end" and colour(x) == colour(line)]
        assert [(x.get_xdata()[0], x.get_ydata()[0]) for x in ends] == [(0.0, run["line"]["loss"][10]),
                                                                          (1.0, run["line"]["loss"][30])]
    assert_readable(figure)


def test_landscape_1d_is_linear_when_the_loss_spans_less_than_two_decades():
    runs = [{**r, "line": {**r["line"], "loss": r["line"]["loss"] + 1.0}} for r in line_runs()]
    assert ap.landscape_1d(runs).axes[0].get_yscale() == "linear"


def test_landscape_2d_shares_one_colour_scale_per_row_and_marks_the_final_weights():
    from matplotlib.colors import LogNorm
    from matplotlib.contour import QuadContourSet

    runs = plane_runs()
    figure = ap.landscape_2d(runs)
    panels = [a for a in figure.axes if a.get_label() != "<colorbar>"]
    assert len(panels) == 4
    assert [a.get_title() for a in panels[:2]] == ["true · seed 0", "random-labels · seed 0"]
    assert panels[0].get_ylabel() == "b (direction η)" and panels[2].get_xlabel() == "a (direction δ)"
    for row, key in ((0, "loss"), (1, "accuracy")):
        sets = [next(c for c in a.collections if isinstance(c, QuadContourSet) and c.filled)
                for a in panels[2 * row:2 * row + 2]]
        assert np.array_equal(sets[0].levels, sets[1].levels)
        for contours, run in zip(sets, runs):
            assert (contours.zmin, contours.zmax) == (run["plane"][key].min(), run["plane"][key].max())
        if key == "loss":
            assert isinstance(sets[0].norm, LogNorm)  # 0.01 to 60: log
            assert sets[0].levels[0] == pytest.approx(0.01) and sets[0].levels[-1] == pytest.approx(60.02)
        else:
            assert (sets[0].levels[0], sets[0].levels[-1]) == (0.0, 1.0)
    for axes in panels[:2]:  # a contour is wider along a than along b: the plane is not drawn transposed
        line = next(c for c in axes.collections if isinstance(c, QuadContourSet) and not c.filled)
        extents = np.ptp(np.concatenate([p.vertices for p in line.get_paths() if len(p.vertices)]), axis=0)
        assert extents[0] > 1.2 * extents[1]
    for axes in panels:
        star = next(x for x in axes.lines if x.get_label() == "final weights")
        assert (star.get_xdata()[0], star.get_ydata()[0]) == (0, 0)
    bars = [a for a in figure.axes if a.get_label() == "<colorbar>"]
    assert [b.get_ylabel() for b in bars] == ["train loss (cross-entropy, nats)", "train accuracy (fitted labels)"]
    assert_readable(figure)


def test_esd_histograms_are_the_eigenvalue_densities_with_the_fitted_tail():
    from matplotlib.patches import StepPatch

    runs = spectra_runs()
    figure = ap.esd(runs)
    panels = [a for a in figure.axes if a.get_visible()]
    assert [a.get_title() for a in panels] == ["layer 0 (64×128)", "layer 2 (32×64)", "layer 4 (10×20)"]
    assert all(a.get_xscale() == a.get_yscale() == "log" for a in panels)
    assert all(a.get_xlabel() == "eigenvalue λ of WᵀW" for a in panels)
    assert panels[0].get_ylabel() == "density (per unit λ)"
    assert legend_texts(figure.legends[0]) == ["true · seed 0", "random-labels · seed 0", "power-law fit from xmin",
                                               "xmin"]
    for axes, index in zip(panels, range(3)):
        steps = [p for p in axes.patches if isinstance(p, StepPatch)]
        assert len(steps) == 2
        evals = [run["layers"][index]["eigenvalues"] for run in runs]
        edges = steps[0].get_data().edges
        assert np.array_equal(edges, steps[1].get_data().edges)  # shared bins
        assert edges[0] <= min(e.min() for e in evals) and edges[-1] >= max(e.max() for e in evals)
        for step, values, run in zip(steps, evals, runs):
            counts = np.histogram(values, bins=edges)[0]
            expected = counts / (len(values) * np.diff(edges))
            got = step.get_data().values
            assert np.array_equal(np.isnan(got), counts == 0)
            np.testing.assert_allclose(got[counts > 0], expected[counts > 0], rtol=1e-12)
            assert np.sum(got[counts > 0] * np.diff(edges)[counts > 0]) == pytest.approx(1.0)
            assert colour(step) == variant_colour(run["variant"]).lower()
        texts = [t.get_text() for t in axes.texts]
        assert texts == (["α = 2.50", "α = 2.50"] if index < 2 else ["no fit", "α = 2.50"])
    # the fit: f·(α − 1)/xmin·(λ/xmin)^−α from xmin, f the fraction of eigenvalues at or above it
    layer = runs[0]["layers"][0]
    fit = next(x for x in panels[0].lines if x.get_label() == "_fit")
    xmin, values = layer["xmin"], layer["eigenvalues"]
    assert fit.get_xdata()[0] == pytest.approx(xmin) and fit.get_xdata()[-1] == pytest.approx(values.max())
    expected = np.mean(values >= xmin) * 1.5 / xmin * (fit.get_xdata() / xmin) ** -2.5
    np.testing.assert_allclose(fit.get_ydata(), expected, rtol=1e-12)
    marks = [x for x in panels[0].lines if x.get_label() == "_xmin"]
    assert [x.get_xdata()[0] for x in marks] == [xmin, runs[1]["layers"][0]["xmin"]]
    assert not [x for x in panels[2].lines if x.get_label() == "_xmin" and colour(x) == variant_colour("true").lower()]
    assert_readable(figure)


def test_esd_small_multiples_wrap_into_rows_and_hide_the_empty_panels():
    runs = [{**r, "layers": r["layers"] * 1} for r in spectra_runs()]
    for run in runs:
        run["layers"] = [dict(layer, name=f"{i}") for i, layer in enumerate(run["layers"] * 3)]  # 9 layers
    figure = ap.esd(runs, columns=4)
    assert len(figure.axes) == 12 and sum(a.get_visible() for a in figure.axes) == 9
    assert_readable(figure)


def test_hessian_density_draws_each_density_on_a_log_axis():
    runs = density_runs()
    figure = ap.hessian_density(runs)
    axes = figure.axes[0]
    assert axes.get_yscale() == "log"
    assert axes.get_xlabel() == "Hessian eigenvalue λ (train loss, nats per unit weight²)"
    assert axes.get_ylabel() == "spectral density (per unit λ)"
    assert legend_texts(axes.get_legend()) == ["true · seed 0", "random-labels · seed 0",
                                               "largest Ritz value (λ_max)"]
    for run in runs:
        line = next(x for x in axes.lines if x.get_label() == run["label"])
        assert np.array_equal(line.get_xdata(), run["density"]["grid"])
        assert np.array_equal(line.get_ydata(), run["density"]["density"])
        assert colour(line) == variant_colour(run["variant"]).lower()
        top = next(x for x in axes.lines if x.get_label() == "_top" and colour(x) == colour(line))
        assert top.get_xdata()[0] == run["density"]["nodes"].max()
    padded = {**runs[0], "density": {**runs[0]["density"], "nodes": np.array([[-2.0, 1.0, 0.0]]),
                                     "weights": np.array([[0.5, 0.5, 0.0]])}}  # a breakdown's padding
    figure = ap.hessian_density([padded])
    top = next(x for x in figure.axes[0].lines if x.get_label() == "_top")
    assert top.get_xdata()[0] == 1.0
    peak = max(r["density"]["density"].max() for r in runs)
    assert axes.get_ylim()[0] == pytest.approx(peak * ap.DENSITY_FLOOR)
    assert_readable(figure)


def test_seeds_of_a_variant_share_its_colour_and_differ_in_style():
    runs = line_runs() + [{**line_runs()[1], "label": "true · seed 1"}]
    lines = {x.get_label(): x for x in ap.landscape_1d(runs).axes[0].lines}
    assert colour(lines["true · seed 0"]) == colour(lines["true · seed 1"])
    assert lines["true · seed 0"].get_linestyle() != lines["true · seed 1"].get_linestyle()
    assert {colour(lines["true · seed 0"]), colour(lines["random-labels · seed 0"])} == {
        variant_colour("true").lower(), variant_colour("random-labels").lower()}


def assert_decodes(path):
    """The saved file decodes as its format: a PNG that is not blank, an SVG document, a whole PDF."""
    import matplotlib.image

    if path.suffix == ".png":
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[1] >= 600 and image[..., :3].std() > 0.05  # not blank
    elif path.suffix == ".svg":
        assert ET.parse(path).getroot().tag.endswith("svg")
    else:
        assert path.suffix == ".pdf", path
        pdf = path.read_bytes()
        assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")


# Each figure is saved in one format, the formats taken in turn (a save re-renders the whole figure, most of
# a second each), and the Hessian density in all three: every figure and every format is written and decoded.
@pytest.mark.parametrize("draw,runs,formats", [(ap.landscape_1d, line_runs, ("png",)),
                                               (ap.landscape_2d, plane_runs, ("svg",)),
                                               (ap.esd, spectra_runs, ("pdf",)),
                                               (ap.hessian_density, density_runs, ("png", "svg", "pdf"))],
                         ids=["landscape_1d-png", "landscape_2d-svg", "esd-pdf", "hessian_density-png-svg-pdf"])
def test_every_figure_saves_and_each_of_png_svg_and_pdf_decodes(draw, runs, formats, tmp_path):
    paths = ap.save(draw(runs()), tmp_path / "figure", formats)
    assert [p.name for p in paths] == [f"figure.{f}" for f in formats]
    for path in paths:
        assert_decodes(path)


def test_an_unknown_format_is_a_usage_error(tmp_path):
    from audit.errors import UsageError

    with pytest.raises(UsageError, match="unknown figure format 'gif'"):
        ap.save(ap.hessian_density(density_runs()), tmp_path / "x", ("gif",))


def test_write_analysis_figures_writes_one_file_per_kind_and_family(tmp_path):
    def with_spec(runs, **spec):
        return [{**run, "spec": RunSpec(variant=run["variant"], corrupt=1.0 if run["variant"] != "true" else 0.0,
                                        **spec), "num_classes": 10} for run in runs]

    runs = {"landscape-1d": with_spec(line_runs()), "esd": with_spec(spectra_runs()),
            "hessian-density": with_spec(density_runs()) + with_spec(density_runs(), lr=0.01)}
    paths = ap.write_analysis_figures(runs, tmp_path / "figures", ("png",))
    assert sorted(p.name for p in paths) == ["esd.png", "hessian-density-mlp-1x512_digits_lr=0.01.png",
                                             "hessian-density-mlp-1x512_digits_lr=0.1.png", "landscape-1d.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)
