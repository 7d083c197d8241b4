"""Figures of the analyses of stored runs, true against random-labels on shared axes: the loss landscape along
the line from the initial to the final weights (1D) and on a plane around the final weights (2D, Li et al.
2018), each layer's empirical spectral density of WᵀW with its power-law fit (WeightWatcher), and the Hessian
eigenvalue density (stochastic Lanczos quadrature).

Every figure function takes a list of runs, each a plain dict: "label" (the legend's name), "variant" (its
colour, from audit.render.palette: the same colour for a variant in every figure) and the kind's data as numpy
arrays: "line", "plane", "layers" or "density" (see each function). It returns a matplotlib Figure; `save`
writes it as PNG, SVG or PDF. Sizes are a printed page's (7 inches wide at most) with no font under 8 pt.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from audit.errors import UsageError
from audit.judge.rows import family_labels
from audit.render.palette import CHANCE, variant_colour
from audit.render.plots import FORMATS, pyplot, slug

Run = Mapping[str, Any]

TICK, TEXT, TITLE = 8, 9, 9  # font sizes (pt) at the saved size
LINE_STYLES = ("-", "--", ":", "-.")  # seeds of one variant: the same colour, another line style
DECADES = 2.0  # a loss spanning more than this many decades is drawn on a log scale
DENSITY_FLOOR = 1e-7  # a density's log axis starts this far below its peak: SLQ's Gaussian tails go to 1e-300
LOSS_LABEL = "train loss (cross-entropy, nats)"
ACCURACY_LABEL = "train accuracy (fitted labels)"
LINE_LABEL = "α (0 = init, 1 = final)"
EVAL_LABEL = "eigenvalue λ of WᵀW"
HESSIAN_LABEL = "Hessian eigenvalue λ (train loss, nats per unit weight²)"
VARIANT_RANK = {"true": 0.0, "random-labels": 1.0, "shuffled-pixels": 2.0, "random-pixels": 3.0, "gaussian": 4.0}


def variant_rank(variant: str) -> float:
    """Legend order: true, corrupt by p, random-labels, then the input variants (a plugin's last)."""
    name, _, p = variant.partition(":")
    if name == "corrupt":
        return float(p or 0.5)
    return VARIANT_RANK.get(name, 5.0)


def styles(runs: Sequence[Run], fade: bool = False) -> list[dict[str, Any]]:
    """Line keyword arguments per run: its variant's colour, and per seed within the variant another line style
    (or, with fade, for spiky curves that dashes would break up, a lighter solid line)."""
    seen: dict[str, int] = {}  # by colour: corrupt:0.2 and corrupt:0.5 share one
    out = []
    for run in runs:
        colour = variant_colour(run["variant"])
        index = seen.get(colour, 0)
        seen[colour] = index + 1
        style = {"color": colour}
        if fade:
            style |= {"linestyle": "-", "alpha": max(0.35, 1.0 - 0.45 * index)}
        else:
            style["linestyle"] = LINE_STYLES[index % len(LINE_STYLES)]
        out.append(style)
    return out


def ordered(runs: Sequence[Run]) -> list[Run]:
    return sorted(runs, key=lambda run: variant_rank(run["variant"]))  # stable: seeds keep their order


def finish(axes: Any, legend: bool = True, **legend_options: Any) -> None:
    axes.tick_params(labelsize=TICK)
    axes.grid(alpha=0.3, linewidth=0.6)
    if legend and axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=TICK, **legend_options)


def spans_decades(values: Sequence[np.ndarray]) -> bool:
    finite = np.concatenate([np.ravel(v)[np.isfinite(np.ravel(v))] for v in values])
    return bool(len(finite) and finite.min() > 0 and math.log10(finite.max() / finite.min()) > DECADES)


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


# ---------------------------------------------------------------- layer spectra


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
