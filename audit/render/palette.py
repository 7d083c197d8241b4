"""The colours of every figure, in one place: Okabe–Ito (colour-blind safe), one colour per variant wherever a
variant is drawn, and line styles for families of runs (so families stay apart in grey-scale print too)."""

from __future__ import annotations

from typing import Any

OKABE_ITO = {"black": "#000000", "orange": "#E69F00", "sky blue": "#56B4E9", "bluish green": "#009E73",
             "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "reddish purple": "#CC79A7"}

VARIANT_COLOURS = {"true": OKABE_ITO["blue"], "corrupt": OKABE_ITO["orange"],
                   "random-labels": OKABE_ITO["vermillion"], "shuffled-pixels": OKABE_ITO["bluish green"],
                   "random-pixels": OKABE_ITO["reddish purple"], "gaussian": OKABE_ITO["sky blue"]}
OTHER_VARIANT = "#7F7F7F"  # a plugin's variant
CHANCE = "#595959"  # chance lines and references: dark grey, dashed

# Families of runs are told apart by line style and marker; their median lines are black or dark grey, so
# that the variant colours of the points stay unambiguous.
FAMILY_STYLES = (("#000000", "-", "o"), ("#595959", "--", "s"), ("#000000", ":", "^"), ("#595959", "-.", "D"),
                 ("#000000", "--", "v"), ("#595959", ":", "P"), ("#000000", "-.", "X"), ("#595959", "-", "*"))


def variant_colour(variant: str) -> str:
    """The colour of a variant (`corrupt:0.4` is `corrupt`'s)."""
    return VARIANT_COLOURS.get(variant.split(":")[0], OTHER_VARIANT)


def family_style(index: int) -> dict[str, Any]:
    """Line keyword arguments for the index-th family of runs (cycling after eight)."""
    colour, linestyle, marker = FAMILY_STYLES[index % len(FAMILY_STYLES)]
    return {"color": colour, "linestyle": linestyle, "marker": marker}
