"""The HTML report's Figure 1 (matplotlib PNGs) and its training curves, run by run: small multiples of
each family's runs as inline SVG, train and test accuracy against epochs."""

from __future__ import annotations

import math
from typing import Any

from audit.judge.rows import variant_label
from audit.render.html_parts import esc, img, legend_html, png_uri
from audit.render.palette import CHANCE, variant_colour
from audit.render.plots import figure_1, grouped, slug
from audit.render.svg import DASHES, Frame, axes_svg, line, nice_ticks, number, polyline, svg, text, tick_text
from audit.render.tables import fmt
from audit.spec.run import KERNEL_PREFIX
from audit.store.record import RunRecord


def figure_1_section(plt: Any, records: list[RunRecord], rows: list[dict[str, Any]], num_classes: int) -> str:
    families = {slug(r["family"]): r["family"] for r in rows}
    figures = []
    for stem, figure in figure_1(plt, records, rows, num_classes):
        caption = FIGURE_1.get(stem[:5], stem) + (f" ({families.get(stem[6:], stem[6:])})" if len(stem) > 5 else "")
        figures.append(f"<figure>{img(png_uri(plt, figure, tight=True), caption)}<figcaption>{esc(caption)}"
                       f"</figcaption></figure>")
    if not figures:
        return ""
    return ("<section id=\"figure-1\"><h2>Figure 1</h2><p class=\"hint\">(a) average training loss against "
            "steps, a colour per variant; (b) steps until fitted relative to the true-label runs, against the "
            "label corruption p; (c) test error on clean test labels against p, chance dashed. Seeds as points, "
            f"medians as lines.</p><div class=\"row\">{''.join(figures)}</div>{legend_html(rows)}</section>")


FIGURE_1 = {"fig1a": "(a) training loss against steps", "fig1b": "(b) time to fit against p",
            "fig1c": "(c) test error against p"}


def curves_svg(records: list[RunRecord], runs: list[dict[str, Any]], num_classes: int) -> str | None:
    """Small multiples of one family's runs: a row per seed, a column per variant; train accuracy (solid) and
    test accuracy (dashed) against epochs, chance dotted, on shared axes."""
    by_id = {r.run_id: r for r in records}
    drawn = [r for r in runs if r["run_id"] in by_id and len(by_id[r["run_id"]].history.get("epoch", ())) > 0]
    if not drawn:
        return None
    labels = list(dict.fromkeys(variant_label(r) for r in drawn))
    seeds = sorted({r["seed"] for r in drawn})
    lowest = {label: max(seeds.index(r["seed"]) for r in drawn if variant_label(r) == label) for label in labels}
    last = max(float(max(by_id[r["run_id"]].history["epoch"])) for r in drawn)
    xticks = nice_ticks(0, max(last, 1), 3)
    cell, height, left, top = 116, 78, 48, 44
    body = legend_curves(left, 12, num_classes)
    for column, label in enumerate(labels):
        body.append(text(left + column * (cell + 14) + cell / 2, top - 8, label, 9.5, extra=' font-weight="600"'))
    for row in drawn:
        column, line_ = labels.index(variant_label(row)), seeds.index(row["seed"])
        frame = Frame(left + column * (cell + 14), top + line_ * (height + 14), cell, height, 0, max(last, 1) * 1.04,
                      0, 1.05)
        bottom = line_ == lowest[variant_label(row)]  # x tick labels under the lowest panel of a column
        ticks = [(t, tick_text(t, xticks)) for t in xticks] if bottom else []
        body += axes_svg(frame, ticks, [0, 0.5, 1], "", "", "", ylabels=column == 0)
        if not bottom:  # the grid of the x ticks without their labels
            body += [line(frame.x(t), frame.top, frame.x(t), frame.top + height, "#e3e3e3", 0.7) for t in xticks]
        body += run_curves(frame, row, by_id[row["run_id"]].history, num_classes)
    for line_, seed in enumerate(seeds):
        cy = top + line_ * (height + 14) + height / 2
        body.append(text(14, cy, f"seed {seed}", 9.5, extra=f' transform="rotate(-90 14 {number(cy)})"'))
    bottom_y = top + len(seeds) * (height + 14) + 14
    body.append(text(left + len(labels) * (cell + 14) / 2, bottom_y, "epoch", 10))
    width = max(left + len(labels) * (cell + 14), 560)  # at least as wide as the legend
    return svg(width, bottom_y + 8, body, f"training curves of {runs[0]['family']}")


def run_curves(frame: Frame, row: dict[str, Any], history: dict[str, Any], num_classes: int) -> list[str]:
    colour = variant_colour(row["variant"])
    epochs = [float(e) for e in history["epoch"]]
    out = [line(frame.left, frame.y(1 / num_classes), frame.left + frame.width, frame.y(1 / num_classes), CHANCE,
                0.8, DASHES[":"])]
    for key, dash in (("train_acc", ""), ("test_acc", DASHES["--"])):
        if key in history:
            points = [(frame.x(e), frame.y(float(v))) for e, v in zip(epochs, history[key]) if math.isfinite(v)]
            out.append(polyline(points, colour, 1.3, dash))
    state = "" if row["status"] == "complete" and row["fitted"] else \
        ("not fitted" if row["status"] == "complete" else row["status"])
    if state:  # a tinted panel, and the state over the curves with a white halo
        out.insert(0, f'<rect x="{number(frame.left)}" y="{number(frame.top)}" width="{number(frame.width)}" '
                      f'height="{number(frame.height)}" fill="#ececec"/>')
        out.append(text(frame.left + frame.width - 4, frame.y(0.3), state, 9, "end",
                        ' font-weight="600" fill="#333" stroke="#fff" stroke-width="3" paint-order="stroke"'))
    summary = (f"{row['run_id']} · {variant_label(row)} · seed {row['seed']}: {len(epochs)} epochs, train acc "
               f"{fmt(row['train_acc'])}, test acc {fmt(row['test_acc'])}")
    out.append(f'<rect x="{number(frame.left)}" y="{number(frame.top)}" width="{number(frame.width)}" '
               f'height="{number(frame.height)}" fill="transparent"><title>{esc(summary)}</title></rect>')
    return out


def legend_curves(x: float, y: float, num_classes: int) -> list[str]:
    out = []
    for i, (label, dash, colour) in enumerate((("train accuracy (fitted set)", "", "#333"),
                                               ("test accuracy (clean labels)", DASHES["--"], "#333"),
                                               (f"chance (1/{num_classes})", DASHES[":"], CHANCE))):
        x0 = x + 180 * i
        out += [line(x0, y, x0 + 22, y, colour, 1.3, dash), text(x0 + 27, y + 3.5, label, 9.5, "start")]
    return out


def curves_section(records: list[RunRecord], rows: list[dict[str, Any]], num_classes: int) -> str:
    parts = []
    for family, runs in grouped(rows).items():
        if all(r["model"].startswith(KERNEL_PREFIX) for r in runs):
            continue  # a kernel fit has one evaluation, no curve
        drawing = curves_svg(records, runs, num_classes)
        if drawing is not None:
            parts.append(f"<figure>{drawing}<figcaption>{esc(family)}: {len(runs)} runs (hover a panel for its "
                         f"run)</figcaption></figure>")
    if not parts:
        return ""
    return ("<section id=\"curves\"><h2>Training curves, run by run</h2><p class=\"hint\">Accuracy on the whole "
            "fitted train set (solid; the labels the run was trained on) and on the clean test set (dashed) "
            "after every epoch, in the variant's colour; a row per seed, a column per variant, shared axes; a grey "
            "panel did not reach the fit target.</p><div class=\"wrap\">" + "".join(parts) + "</div></section>")
