"""The layer-spectra figure of the analyses: each layer's empirical spectral density of WᵀW with its
power-law fit (WeightWatcher), true against random-labels on shared axes. audit.render.analysis_plots
re-exports `esd` beside the other analysis figures."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from audit.render.analysis_style import TEXT, TICK, TITLE, Run, finish, ordered, styles
from audit.render.palette import CHANCE
from audit.render.plots import pyplot

EVAL_LABEL = "eigenvalue λ of WᵀW"


def esd(runs: Sequence[Run], title: str | None = None, columns: int = 3) -> Any:
    """Per layer, a panel (small multiples, `columns` wide) on log-log axes: the density histogram of the
    eigenvalues λ > 0 of WᵀW (log-spaced bins shared by the runs), the fitted power law
    p(λ) = f·(α − 1)/xmin·(λ/xmin)^−α from xmin on (f, the fraction of eigenvalues ≥ xmin) dashed, xmin dotted,
    each run's α written in its colour; one legend for the figure. Each run's `layers` is a list of {"name",
    "eigenvalues", "alpha", "xmin", "shape", ...} (alpha and xmin None where no power law was fitted); layers
    are matched by name."""
    plt = pyplot()
    runs = ordered(runs)
    names = list(dict.fromkeys(layer["name"] for run in runs for layer in run["layers"]))
    columns = max(1, min(columns, len(names)))
    rows = math.ceil(len(names) / columns)
    figure, panels = plt.subplots(rows, columns, figsize=(min(7.0, 2.3 * columns + 0.3), 0.9 + 2.1 * rows),
                                  layout="constrained", squeeze=False)
    run_styles = styles(runs)
    for index, name in enumerate(names):
        axes = panels[index // columns][index % columns]
        drawn = [(run, style, layer) for run, style in zip(runs, run_styles)
                 for layer in run["layers"] if layer["name"] == name]
        esd_panel(axes, drawn)
        shape = next((layer.get("shape") for _, _, layer in drawn if layer.get("shape") is not None), None)
        axes.set_title(f"layer {name}" + (f" ({'×'.join(map(str, shape))})" if shape is not None else ""),
                       fontsize=TITLE)
        if index + columns >= len(names):  # the lowest panel of its column
            axes.set_xlabel(EVAL_LABEL, fontsize=TEXT)
        if index % columns == 0:
            axes.set_ylabel("density (per unit λ)", fontsize=TEXT)
    for index in range(len(names), rows * columns):
        panels[index // columns][index % columns].set_visible(False)
    handles = [line for run, style in zip(runs, run_styles)
               for line in panels[0][0].plot([], [], linewidth=1.3, label=run["label"], **style)]
    handles += panels[0][0].plot([], [], color=CHANCE, linestyle="--", linewidth=1.0, label="power-law fit from xmin")
    handles += panels[0][0].plot([], [], color=CHANCE, linestyle=":", linewidth=1.0, label="xmin")
    figure.legend(handles=handles, loc="outside lower center", ncols=min(3, len(handles)), fontsize=TICK,
                  frameon=False)
    figure.suptitle(title or "Empirical spectral density of each layer, with its power-law tail", fontsize=TITLE)
    return figure


def esd_panel(axes: Any, drawn: list[tuple[Run, dict[str, Any], Mapping[str, Any]]]) -> None:
    evals = [positive(layer["eigenvalues"]) for _, _, layer in drawn]
    edges = log_bins(np.concatenate(evals))
    heights = []
    for row, ((run, style, layer), values) in enumerate(zip(drawn, evals)):
        alpha, xmin = layer.get("alpha"), layer.get("xmin")
        density = histogram_density(values, edges)
        axes.stairs(density, edges, linewidth=1.3, label=run["label"], baseline=None, **style)
        heights.append(density)
        if alpha is not None and xmin is not None:
            x, y = power_law_line(values, alpha, xmin)
            axes.plot(x, y, color=style["color"], linestyle="--", linewidth=1.0, label="_fit")
            axes.axvline(xmin, color=style["color"], linestyle=":", linewidth=1.0, label="_xmin")
            heights.append(y)
        axes.text(0.97, 0.95 - 0.11 * row, f"α = {alpha:.2f}" if alpha is not None else "no fit",
                  transform=axes.transAxes, ha="right", va="top", fontsize=TICK, color=style["color"])
    axes.set_xscale("log")
    axes.set_yscale("log")
    log_ticks(axes.xaxis, edges)
    log_ticks(axes.yaxis, np.concatenate(heights))
    finish(axes, legend=False)


def log_ticks(axis: Any, values: np.ndarray) -> None:
    """Decades as 10^k over a long range (some skipped, no minor ticks); 1-2-5 steps as plain numbers within two
    decades; never minor labels (matplotlib labels minor ticks in a short range, in a larger font than ours)."""
    from matplotlib import ticker  # matplotlib is imported only when a figure is drawn

    finite = values[np.isfinite(values) & (values > 0)]
    short = len(finite) > 0 and math.log10(finite.max() / finite.min()) < 2
    axis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0), numticks=8) if short
                           else ticker.LogLocator(numticks=5))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}") if short
                             else ticker.LogFormatterSciNotation())
    axis.set_minor_formatter(ticker.NullFormatter())
    if not short:
        axis.set_minor_locator(ticker.NullLocator())  # eight minor ticks a decade over many decades: slow, and clutter


def positive(evals: np.ndarray) -> np.ndarray:
    values = np.asarray(evals, dtype=np.float64)
    return values[values > 0]


def log_bins(values: np.ndarray) -> np.ndarray:
    """Log-spaced bin edges over all the values: about 2√n bins, between 8 and 50."""
    if len(values) == 0:
        return np.array([1e-3, 1.0])
    low, high = float(values.min()), float(values.max())
    if high <= low:
        low, high = low / 1.5, high * 1.5
    count = int(np.clip(2 * math.sqrt(len(values)), 8, 50))
    return np.geomspace(low, high * (1 + 1e-9), count + 1)


def histogram_density(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bin / (n · bin width), NaN for an empty bin (nothing is drawn there on a log axis)."""
    counts = np.histogram(values, bins=edges)[0].astype(np.float64)
    density = counts / (max(len(values), 1) * np.diff(edges))
    density[counts == 0] = np.nan
    return density


def power_law_line(values: np.ndarray, alpha: float, xmin: float) -> tuple[np.ndarray, np.ndarray]:
    """The fitted tail as a density over all the eigenvalues: f·(α − 1)/xmin·(λ/xmin)^−α for λ in [xmin, max]."""
    x = np.geomspace(xmin, max(float(values.max()), xmin * 1.01), 60)
    fraction = float(np.mean(values >= xmin)) if len(values) else 0.0
    return x, fraction * (alpha - 1) / xmin * (x / xmin) ** (-alpha)
