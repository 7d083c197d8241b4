"""Figures of the paper from a store: Figure 1a (loss against steps per variant), 1b (time to fit relative to
true labels against p), 1c (test error against p, chance marked), and each measure against p.

matplotlib is a core dependency, imported only when a figure is drawn (it is slow to import); the Agg backend
writes files without a screen. Colours come from audit.render.palette: the same colour for a variant everywhere.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from statistics import median
from typing import Any

from audit.errors import UsageError
from audit.render.palette import CHANCE, family_style, variant_colour
from audit.spec.run import KERNEL_PREFIX
from audit.store.record import RunRecord

VARIANT_ORDER = ("true", "shuffled-pixels", "random-pixels", "gaussian", "random-labels")
INPUT_AXIS = ("shuffled-pixels", "random-pixels", "gaussian")
FORMATS = ("png", "svg", "pdf")


def pyplot() -> Any:
    try:
        import matplotlib  # slow to import (about 1 s); only for figures
    except ImportError:
        raise UsageError("plots need matplotlib, a dependency of audit missing here: pip install -e '.[plot]' "
                         "(or pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # slow to import (about 1 s); only for figures

    return plt


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", text).strip("_")


def label_axis(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["status"] == "complete" and r["corrupt"] is not None]


def figure_1a(plt: Any, records: list[RunRecord], rows: list[dict[str, Any]], family: str) -> Any:
    """Training loss (eval mode, whole fitted train set) against steps, a colour per variant, seeds as lines."""
    by_id = {r.run_id: r for r in records}
    figure, axes = plt.subplots(figsize=(6, 4))
    drawn: set[str] = set()
    for row in rows:
        if row["family"] != family or row["variant"] not in VARIANT_ORDER or row["status"] == "diverged":
            continue
        history = by_id[row["run_id"]].history
        if len(history.get("step", ())) == 0 or "train_loss" not in history:
            continue  # an imported run has no learning curve
        label = row["variant"]
        axes.plot(history["step"], history["train_loss"], color=variant_colour(label), linewidth=1.2,
                  label=None if label in drawn else label)
        drawn.add(label)
    axes.set_xlabel("steps (minibatches)")
    axes.set_ylabel("average training loss (cross-entropy, nats)")
    axes.set_title(f"Figure 1a: learning curves ({family})", fontsize=10)
    handles, labels = axes.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda i: VARIANT_ORDER.index(labels[i]))
    axes.legend([handles[i] for i in order], [labels[i] for i in order], fontsize=8)
    axes.grid(alpha=0.3)
    return figure


def figure_1b(plt: Any, rows: list[dict[str, Any]]) -> Any:
    """Steps to fit relative to the median of the true-label runs, against the corruption p, a line per family."""
    figure, axes = plt.subplots(figsize=(6, 4))
    for index, (family, runs) in enumerate(grouped(label_axis(rows)).items()):
        true_steps = [r["steps_to_fit"] for r in runs if r["corrupt"] == 0.0 and r["steps_to_fit"]]
        if not true_steps:
            continue
        reference = median(true_steps)
        points = [(r["corrupt"], r["steps_to_fit"] / reference) for r in runs if r["steps_to_fit"]]
        plot_points_and_medians(axes, points, family, index)
    axes.axhline(1.0, color=CHANCE, linestyle=":", linewidth=1)
    axes.set_xlabel("label corruption p")
    axes.set_ylabel("time to fit (steps, relative to true labels)")
    axes.set_title("Figure 1b: steps until fitted (train accuracy at the fit target)", fontsize=10)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    return figure


def figure_1c(plt: Any, rows: list[dict[str, Any]], num_classes: int) -> Any:
    """Test error (clean test labels) against the corruption p, a line per family, chance level marked."""
    figure, axes = plt.subplots(figsize=(6, 4))
    for index, (family, runs) in enumerate(grouped(label_axis(rows)).items()):
        plot_points_and_medians(axes, [(r["corrupt"], 1 - r["test_acc"]) for r in runs if r["test_acc"] is not None],
                                family, index)
    chance = 1 - 1 / num_classes
    axes.axhline(chance, color=CHANCE, linestyle="--", linewidth=1, label=f"chance ({chance:.2f})")
    axes.set_xlabel("label corruption p")
    axes.set_ylabel("test error (clean test labels)")
    axes.set_ylim(0, 1)
    axes.set_title("Figure 1c: test error against label corruption", fontsize=10)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    return figure


def figure_measure(plt: Any, rows: list[dict[str, Any]], name: str, axes: Any = None, log: bool = False) -> Any:
    """A measure against p, seeds as points (coloured by variant) and the median as a line per family; input
    variants beside the axis. Draws into `axes` when given (a panel of a larger figure); returns the figure."""
    figure, axes = plt.subplots(figsize=(6, 4)) if axes is None else (axes.figure, axes)
    families = grouped([r for r in rows if r["status"] == "complete"])
    for index, (family, runs) in enumerate(families.items()):
        label_runs = [r for r in runs if r["corrupt"] is not None and r["measures"].get(name) is not None]
        plot_points_and_medians(axes, [(r["corrupt"], r["measures"][name]) for r in label_runs], family, index)
        inputs = [r for r in runs if r["corrupt"] is None and r["measures"].get(name) is not None]
        for offset, variant in enumerate(INPUT_AXIS):
            values = [r["measures"][name] for r in inputs if r["variant"] == variant]
            if values:
                axes.scatter([1.2 + 0.2 * offset] * len(values), values, marker=family_style(index)["marker"],
                             s=14, color=variant_colour(variant), alpha=0.8, linewidths=0)
                axes.plot([1.12 + 0.2 * offset, 1.28 + 0.2 * offset], [median(values)] * 2,
                          color=family_style(index)["color"], linewidth=1.5)
    ticks = [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    if any(r["corrupt"] is None for r in rows):
        axes.set_xticks(ticks + [1.2, 1.4, 1.6], [f"{t:g}" for t in ticks] + ["shuf.", "rand.", "gauss."],
                        fontsize=8)
        axes.axvline(1.1, color=CHANCE, linewidth=0.6)
    axes.set_xlabel("label corruption p (input variants at right)")
    axes.set_ylabel(f"{name} (natural log)" if log else name)
    axes.set_title(f"{name} against label corruption", fontsize=10)
    if len(families) > 1 and axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=7)
    axes.grid(alpha=0.3)
    return figure


def grouped(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        out[row["family"]].append(row)
    return out


def corruption_variant(p: float) -> str:
    """The label-axis variant a corruption level belongs to: true at 0, random-labels at 1, corrupt between."""
    return "true" if p == 0 else "random-labels" if p == 1 else "corrupt"


def plot_points_and_medians(axes: Any, points: list[tuple[float, float]], label: str, index: int = 0) -> Any:
    """Seeds as points in their variant's colour, the median over seeds as the index-th family's line."""
    if not points:
        return None
    by_p: dict[float, list[float]] = defaultdict(list)
    for p, value in points:
        by_p[p].append(value)
    ps = sorted(by_p)
    style = family_style(index)
    line = axes.plot(ps, [median(by_p[p]) for p in ps], markersize=3, linewidth=1.2, label=label, **style)[0]
    axes.scatter([p for p, _ in points], [v for _, v in points], s=14, alpha=0.8, marker=style["marker"],
                 color=[variant_colour(corruption_variant(p)) for p, _ in points], linewidths=0, zorder=3)
    return line


def figure_1(plt: Any, records: list[RunRecord], rows: list[dict[str, Any]],
             num_classes: int = 10) -> Iterator[tuple[str, Any]]:
    """The panels of Figure 1 the store supports, as (file stem, figure): 1a per family, 1b, 1c."""
    families = sorted({r["family"] for r in rows})
    for family in families:
        if all(r["model"].startswith(KERNEL_PREFIX) for r in rows if r["family"] == family):
            continue  # a kernel fit has no learning curve
        suffix = "" if len(families) == 1 else f"-{slug(family)}"
        yield f"fig1a{suffix}", figure_1a(plt, records, rows, family)
    if any(not r["model"].startswith(KERNEL_PREFIX) for r in label_axis(rows)):  # kernel fits take no steps
        yield "fig1b", figure_1b(plt, rows)
    if label_axis(rows):
        yield "fig1c", figure_1c(plt, rows, num_classes)


def write_figures(records: list[RunRecord], rows: list[dict[str, Any]], names: list[str], out: Path,
                  fmt: str = "png", num_classes: int = 10) -> list[Path]:
    """Write every figure the store supports; returns the files written."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown figure format '{fmt}': use one of {', '.join(FORMATS)}")
    plt = pyplot()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create {out}: {err.strerror}; choose a writable --out") from None
    written: list[Path] = []

    def save(figure: Any, stem: str) -> None:
        path = out / f"{stem}.{fmt}"
        figure.tight_layout()
        figure.savefig(path, dpi=130)
        plt.close(figure)
        written.append(path)

    for stem, figure in figure_1(plt, records, rows, num_classes):
        save(figure, stem)
    for name in names:
        save(figure_measure(plt, rows, name), f"measure-{slug(name)}")
    return written
