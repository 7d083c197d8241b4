"""What every analysis figure shares: the run type, font sizes at the saved size, the legend order of the
variants, a line style per run (its variant's colour; another dash or a lighter line per seed), and the
finishing touches of an axes."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from audit.render.palette import variant_colour

Run = Mapping[str, Any]

TICK, TEXT, TITLE = 8, 9, 9  # font sizes (pt) at the saved size
LINE_STYLES = ("-", "--", ":", "-.")  # seeds of one variant: the same colour, another line style
DECADES = 2.0  # a loss spanning more than this many decades is drawn on a log scale
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
