"""Figures of the analyses of stored runs, true against random-labels on shared axes: the loss landscape along
the line from the initial to the final weights (1D) and on a plane around the final weights (2D, Li et al.
2018), each layer's empirical spectral density of WᵀW with its power-law fit (WeightWatcher; drawn in
audit.render.esd_plot, re-exported here), and the Hessian eigenvalue density (stochastic Lanczos quadrature).

Every figure function takes a list of runs, each a plain dict: "label" (the legend's name), "variant" (its
colour, from audit.render.palette: the same colour for a variant in every figure) and the kind's data as numpy
arrays: "line", "plane", "layers" or "density" (see each function). It returns a matplotlib Figure; `save`
writes it as PNG, SVG or PDF. Sizes are a printed page's (7 inches wide at most) with no font under 8 pt.
The styles they share are in audit.render.analysis_style.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from audit.errors import UsageError
from audit.judge.rows import family_labels
from audit.render.analysis_style import TEXT, TICK, TITLE, Run, finish, ordered, spans_decades, styles
from audit.render.esd_plot import esd
from audit.render.palette import CHANCE, variant_colour
from audit.render.plots import FORMATS, pyplot, slug

DENSITY_FLOOR = 1e-7  # a density's log axis starts this far below its peak: SLQ's Gaussian tails go to 1e-300
LOSS_LABEL = "train loss (cross-entropy, nats)"
ACCURACY_LABEL = "train accuracy (fitted labels)"
LINE_LABEL = "α (0 = init, 1 = final)"
HESSIAN_LABEL = "Hessian eigenvalue λ (train loss, nats per unit weight²)"


# ---------------------------------------------------------------- loss landscape


def landscape_1d(runs: Sequence[Run], chance: float | None = None, title: str | None = None) -> Any:
    """Train loss (left) and train accuracy (right, where given) against α along w(α) = w₀ + α (w₁ − w₀), from
    each run's `line` = {"alpha": (n,), "loss": (n,), "accuracy": (n,)}; init (α = 0) and final (α = 1)
    marked on every curve; chance accuracy dashed when given. A log loss axis when the loss spans decades."""
    plt = pyplot()
    runs = ordered(runs)
    with_accuracy = any("accuracy" in run["line"] for run in runs)
    figure, panels = plt.subplots(1, 2 if with_accuracy else 1, figsize=(7.0 if with_accuracy else 4.2, 3.2),
                                  layout="constrained", squeeze=False)
    loss_axes = panels[0][0]
    for run, style in zip(runs, styles(runs)):
        line = run["line"]
        loss_axes.plot(line["alpha"], line["loss"], linewidth=1.4, label=run["label"], **style)
        mark_ends(loss_axes, line["alpha"], line["loss"], style["color"])
        if with_accuracy and "accuracy" in line:  # the loss panel's legend names the runs
            panels[0][1].plot(line["alpha"], line["accuracy"], linewidth=1.4, label=f"_{run['label']}", **style)
            mark_ends(panels[0][1], line["alpha"], line["accuracy"], style["color"])
    if spans_decades([run["line"]["loss"] for run in runs]):
        loss_axes.set_yscale("log")
    loss_axes.set_ylabel(LOSS_LABEL, fontsize=TEXT)
    for axes in panels[0]:
        axes.axvline(0.0, color=CHANCE, linewidth=0.6, linestyle=":")
        axes.axvline(1.0, color=CHANCE, linewidth=0.6, linestyle=":")
        axes.set_xlabel(LINE_LABEL, fontsize=TEXT)
    add_end_legend_entries(loss_axes)
    finish(loss_axes)
    if with_accuracy:
        accuracy_axes = panels[0][1]
        if chance is not None:
            accuracy_axes.axhline(chance, color=CHANCE, linestyle="--", linewidth=1, label=f"chance ({chance:.2f})")
        accuracy_axes.set_ylim(-0.02, 1.02)
        accuracy_axes.set_ylabel(ACCURACY_LABEL, fontsize=TEXT)
        finish(accuracy_axes, loc="lower right")
    figure.suptitle(title or "Train loss along the line from initial to final weights", fontsize=TITLE)
    return figure


def mark_ends(axes: Any, alpha: np.ndarray, values: np.ndarray, colour: str) -> None:
    """Init (open circle) and final weights (filled square) on a curve, where the α grid holds them."""
    order = np.argsort(alpha)
    for at, marker, fill in ((0.0, "o", "white"), (1.0, "s", colour)):
        if alpha.min() <= at <= alpha.max():
            axes.plot([at], [np.interp(at, alpha[order], values[order])], marker=marker, markersize=5, color=colour,
                      markerfacecolor=fill, markeredgecolor=colour, linestyle="none", label="_end", zorder=4)


def add_end_legend_entries(axes: Any) -> None:
    for marker, fill, text in (("o", "white", "init (α = 0)"), ("s", CHANCE, "final (α = 1)")):
        axes.plot([], [], marker=marker, markersize=5, markerfacecolor=fill, markeredgecolor=CHANCE,
                  linestyle="none", label=text)


def landscape_2d(runs: Sequence[Run], title: str | None = None) -> Any:
    """Contours of the train loss (top row) and accuracy (bottom row, where every run has it) on the plane
    w₁ + a·δ + b·η of two filter-normalized random directions, one column per run, from each run's `plane` =
    {"a": (r,), "b": (r,), "loss": (r, r), "accuracy": (r, r)}, loss[i, j] at (a[i], b[j]) as
    audit.analyses.landscape.plane gives it; one colour scale per row shared
    by every run (log when the loss spans decades; accuracy 0 to 1); the final weights (a = b = 0) marked."""
    plt = pyplot()
    runs = ordered(runs)
    rows = [("loss", LOSS_LABEL, "viridis")]
    if all("accuracy" in run["plane"] for run in runs):
        rows.append(("accuracy", ACCURACY_LABEL, "cividis"))
    columns = len(runs)
    width = min(7.0, 1.2 + 2.6 * columns) if columns <= 3 else 1.2 + 1.9 * columns  # wider past a page's 3
    figure, panels = plt.subplots(len(rows), columns, figsize=(width, 0.5 + 2.5 * len(rows)), layout="constrained",
                                  squeeze=False, sharex=True, sharey=True)
    for row, (key, label, colours) in enumerate(rows):
        values = [run["plane"][key] for run in runs]
        levels, norm, ticks = (accuracy_levels() if key == "accuracy"
                               else loss_levels(values, log=spans_decades(values)))
        for column, run in enumerate(runs):
            axes, plane = panels[row][column], run["plane"]
            z = np.asarray(plane[key]).T  # matplotlib wants z[b, a]
            filled = axes.contourf(plane["a"], plane["b"], z, levels=levels, norm=norm, cmap=colours, extend="both")
            axes.contour(plane["a"], plane["b"], z, levels=levels[::4], norm=norm, colors="white", linewidths=0.4,
                         alpha=0.6)
            axes.plot([0], [0], marker="*", markersize=9, color="white", markeredgecolor="black",
                      markeredgewidth=0.7, linestyle="none", label="final weights")
            axes.set_aspect("equal")
            axes.tick_params(labelsize=TICK)
            if row == 0:
                axes.set_title(run["label"], fontsize=TITLE, color=variant_colour(run["variant"]), fontweight="bold")
            if row == len(rows) - 1:
                axes.set_xlabel("a (direction δ)", fontsize=TEXT)
            if column == 0:
                axes.set_ylabel("b (direction η)", fontsize=TEXT)
        bar = figure.colorbar(filled, ax=list(panels[row]), shrink=0.9, pad=0.02, ticks=ticks)
        bar.ax.set_yticklabels([f"{t:g}" for t in ticks])
        bar.ax.minorticks_off()
        bar.set_label(label, fontsize=TEXT)
        bar.ax.tick_params(labelsize=TICK)
    panels[0][0].legend(fontsize=TICK, loc="upper left", framealpha=0.8)
    figure.suptitle(title or "Train loss around the final weights (filter-normalized directions)", fontsize=TITLE)
    return figure


def loss_levels(values: Sequence[np.ndarray], log: bool) -> tuple[np.ndarray, Any, list[float]]:
    """Contour levels, norm and colour-bar ticks shared by every panel of the loss row: 1-2-5 ticks per decade
    on a log scale, round numbers on a linear one."""
    from matplotlib.colors import LogNorm, Normalize  # matplotlib is imported only when a figure is drawn
    from matplotlib.ticker import MaxNLocator  # likewise

    finite = np.concatenate([np.ravel(v)[np.isfinite(np.ravel(v))] for v in values])
    low, high = float(finite.min()), float(finite.max())
    if high <= low:
        high = low + (abs(low) or 1.0) * 1e-6
    if log:
        decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
        ticks = [m * 10.0 ** d for d in decades for m in (1, 2, 5) if low <= m * 10.0 ** d <= high]
        return np.geomspace(low, high, 17), LogNorm(low, high), ticks
    ticks = [float(t) for t in MaxNLocator(6).tick_values(low, high) if low <= t <= high]
    return np.linspace(low, high, 17), Normalize(low, high), ticks


def accuracy_levels() -> tuple[np.ndarray, Any, list[float]]:
    from matplotlib.colors import Normalize  # matplotlib is imported only when a figure is drawn

    return np.linspace(0.0, 1.0, 21), Normalize(0.0, 1.0), [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]


# ---------------------------------------------------------------- Hessian density


def hessian_density(runs: Sequence[Run], title: str | None = None) -> Any:
    """The Hessian eigenvalue density (stochastic Lanczos quadrature, Gaussian-broadened) against λ on a log
    density axis, every run on shared axes, from each run's `density` = {"grid": (g,), "density": (g,),
    "nodes": (probes, steps), "weights": (probes, steps)}; each run's largest Ritz value (its estimate of
    λ_max) marked by a triangle at the top, λ = 0 dotted. Seeds of a variant are lighter solid lines."""
    plt = pyplot()
    runs = ordered(runs)
    figure, axes = plt.subplots(figsize=(6.0, 3.6), layout="constrained")
    peak = 0.0
    for run, style in zip(runs, styles(runs, fade=True)):
        density = run["density"]
        axes.plot(density["grid"], density["density"], linewidth=1.1, label=run["label"], **style)
        peak = max(peak, float(np.nanmax(density["density"])))
        nodes = np.ravel(density.get("nodes", np.array([])))
        if "weights" in density:  # past a Lanczos breakdown the nodes are padding with weight 0
            nodes = nodes[np.ravel(density["weights"]) > 0]
        nodes = nodes[np.isfinite(nodes)]
        if len(nodes):
            axes.plot([nodes.max()], [0.965], marker="v", markersize=6, label="_top",
                      transform=axes.get_xaxis_transform(), clip_on=False, **(style | {"linestyle": "none"}))
    axes.set_yscale("log")
    if peak > 0:
        axes.set_ylim(peak * DENSITY_FLOOR, peak * 3)
    axes.axvline(0.0, color=CHANCE, linewidth=0.6, linestyle=":")
    axes.set_xlabel(HESSIAN_LABEL, fontsize=TEXT)
    axes.set_ylabel("spectral density (per unit λ)", fontsize=TEXT)
    axes.plot([], [], color=CHANCE, marker="v", linestyle="none", markersize=6, label="largest Ritz value (λ_max)")
    finish(axes)
    axes.set_title(title or "Hessian eigenvalue density of the train loss (stochastic Lanczos quadrature)",
                   fontsize=TITLE)
    return figure


# ---------------------------------------------------------------- files


def save(figure: Any, path_stem: Path | str, formats: Sequence[str] = ("png",)) -> list[Path]:
    """Write the figure as PATH_STEM.png / .svg / .pdf (150 dpi for PNG) and close it; returns the files."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise UsageError(f"unknown figure format '{unknown[0]}': use one of {', '.join(FORMATS)}")
    plt = pyplot()
    stem = Path(path_stem)
    written = []
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")
        figure.savefig(path, dpi=150)
        written.append(path)
    plt.close(figure)
    return written


DRAW = {"landscape-1d": landscape_1d, "landscape-2d": landscape_2d, "esd": esd, "hessian-density": hessian_density}


def write_analysis_figures(runs: Mapping[str, Sequence[Run]], out_dir: Path,
                           formats: Sequence[str] = ("png",)) -> list[Path]:
    """One figure per kind and family of runs: `runs` maps a figure kind (landscape-1d, landscape-2d, esd,
    hessian-density) to its runs, each {"spec": RunSpec, "label", "variant", the kind's data, and
    "num_classes" (for the chance line) where known}. Files are KIND[-FAMILY].FORMAT; returns them."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create {out_dir}: {err.strerror}; choose a writable --out") from None
    written: list[Path] = []
    for kind, kind_runs in runs.items():
        draw = DRAW[kind]
        families = family_labels([run["spec"] for run in kind_runs])
        for family_key, family in families.items():
            members = [run for run in kind_runs if run["spec"].family_key() == family_key]
            suffix = "" if len(families) == 1 else f"-{slug(family)}"
            options: dict[str, Any] = {"title": f"{draw_title(kind)} ({family})"}
            classes = next((run.get("num_classes") for run in members if run.get("num_classes")), None)
            if kind == "landscape-1d" and classes:
                options["chance"] = 1.0 / classes
            written += save(draw(members, **options), out_dir / f"{kind}{suffix}", formats)
    return written


def draw_title(kind: str) -> str:
    return {"landscape-1d": "Train loss from initial (α = 0) to final (α = 1) weights",
            "landscape-2d": "Train loss around the final weights",
            "esd": "Spectral density of WᵀW per layer", "hessian-density": "Hessian eigenvalue density"}[kind]
