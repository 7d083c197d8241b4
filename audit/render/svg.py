"""Hand-built SVG plot primitives for the HTML report: a plot frame mapping data to pixels, padded ranges and
round ticks, and text, lines, polylines, markers, axes and the enclosing <svg> element as strings."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from audit.render.html_parts import esc

# Per-measure panels and per-run curves are drawn as inline SVG: matplotlib takes 0.3-0.5 s per small figure on
# a loaded 2-core machine (dozens of them for a store), these take milliseconds, stay sharp at any zoom and
# print size, and show a run's id and value on hover.
DASHES = {"-": "", "--": "5 3", ":": "1.5 2.5", "-.": "6 2.5 1.5 2.5"}
SHAPES = {"o": "circle", "s": "square", "^": "triangle", "D": "diamond", "v": "triangle-down"}


class Frame(NamedTuple):
    """A plot area: its pixel box and the data ranges it maps onto it."""

    left: float
    top: float
    width: float
    height: float
    x0: float
    x1: float
    y0: float
    y1: float

    def x(self, value: float) -> float:
        return self.left + (value - self.x0) / (self.x1 - self.x0) * self.width

    def y(self, value: float) -> float:
        return self.top + self.height - (value - self.y0) / (self.y1 - self.y0) * self.height


def padded(values: Sequence[float], fraction: float = 0.06) -> tuple[float, float]:
    """A range holding every value with a margin; a constant gets a margin of its own size."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    lo, hi = min(finite), max(finite)
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        pad = max(abs(hi) * 0.05, 0.5)
        return lo - pad, hi + pad
    pad = (hi - lo) * fraction
    return lo - pad, hi + pad


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick positions (steps of 1, 2, 2.5 or 5 times a power of ten) inside [lo, hi]."""
    magnitude = 10 ** math.floor(math.log10((hi - lo) / count))
    candidates = [[round(t, 12) for t in ticks_of(lo, hi, m * magnitude)] for m in (1, 2, 2.5, 5, 10)]
    return min(reversed(candidates), key=lambda ticks: abs(len(ticks) - count))  # ties: the larger step


def ticks_of(lo: float, hi: float, step: float) -> list[float]:
    first = math.ceil(lo / step - 1e-9) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def tick_text(value: float, ticks: Sequence[float]) -> str:
    step = ticks[1] - ticks[0] if len(ticks) > 1 else abs(value) or 1.0
    if max(abs(t) for t in ticks) >= 1e5 or step < 1e-3:
        return f"{value:.3g}".replace("-", "−")
    power = math.floor(math.log10(step) + 1e-9)
    decimals = max(0, -power) + (1 if power <= 0 and round(step / 10 ** power, 6) == 2.5 else 0)
    return f"{value:.{decimals}f}".replace("-", "−")


def number(value: float) -> str:
    return f"{value:.1f}"


def text(x: float, y: float, content: str, size: float = 10, anchor: str = "middle", extra: str = "",
         hover: str = "") -> str:
    title = f"<title>{esc(hover)}</title>" if hover else ""
    return (f'<text x="{number(x)}" y="{number(y)}" font-size="{size}" text-anchor="{anchor}"{extra}>'
            f"{title}{esc(content)}</text>")


def line(x1: float, y1: float, x2: float, y2: float, colour: str = "#000", width: float = 1, dash: str = "") -> str:
    dashed = f' stroke-dasharray="{dash}"' if dash else ""
    return (f'<line x1="{number(x1)}" y1="{number(y1)}" x2="{number(x2)}" y2="{number(y2)}" stroke="{colour}" '
            f'stroke-width="{width}"{dashed}/>')


def polyline(points: Sequence[tuple[float, float]], colour: str, width: float = 1.3, dash: str = "") -> str:
    coordinates = " ".join(f"{number(x)},{number(y)}" for x, y in points)
    dashed = f' stroke-dasharray="{dash}"' if dash else ""
    return (f'<polyline points="{coordinates}" fill="none" stroke="{colour}" stroke-width="{width}" '
            f'stroke-linejoin="round"{dashed}/>')


def marker(shape: str, x: float, y: float, colour: str, tip: str = "", r: float = 3.2) -> str:
    """A filled marker of a family's shape; `tip` shows on hover."""
    title = f"<title>{esc(tip)}</title>" if tip else ""
    paint = f'fill="{colour}" fill-opacity="0.85"'
    if shape == "square":
        element = f'<rect x="{number(x - r * 0.9)}" y="{number(y - r * 0.9)}" width="{number(r * 1.8)}" ' \
                  f'height="{number(r * 1.8)}" {paint}>'
        return element + title + "</rect>"
    corners = {"triangle": [(0, -1.2), (1.1, 0.8), (-1.1, 0.8)], "triangle-down": [(0, 1.2), (1.1, -0.8),
               (-1.1, -0.8)], "diamond": [(0, -1.3), (1.0, 0), (0, 1.3), (-1.0, 0)]}.get(shape)
    if corners:
        path = "M" + " L".join(f"{number(x + dx * r)},{number(y + dy * r)}" for dx, dy in corners) + " Z"
        return f'<path d="{path}" {paint}>{title}</path>'
    return f'<circle cx="{number(x)}" cy="{number(y)}" r="{r}" {paint}>{title}</circle>'


def axes_svg(frame: Frame, xticks: Sequence[tuple[float, str]], yticks: Sequence[float], xlabel: str,
             ylabel: str, title: str, ylabels: bool = True) -> list[str]:
    """The frame, grid, tick labels, axis labels and title of a plot area."""
    out = [f'<rect x="{number(frame.left)}" y="{number(frame.top)}" width="{number(frame.width)}" '
           f'height="{number(frame.height)}" fill="none" stroke="#999" stroke-width="0.8"/>']
    bottom = frame.top + frame.height
    for value, label in xticks:
        x = frame.x(value)
        out.append(line(x, frame.top, x, bottom, "#e3e3e3", 0.7))
        out.append(text(x, bottom + 12, label, 9))
    for value in yticks:
        y = frame.y(value)
        out.append(line(frame.left, y, frame.left + frame.width, y, "#e3e3e3", 0.7))
        if ylabels:
            out.append(text(frame.left - 4, y + 3, tick_text(value, yticks), 9, "end"))
    if xlabel:
        out.append(text(frame.left + frame.width / 2, bottom + 26, xlabel, 10))
    if ylabel:
        cy = frame.top + frame.height / 2
        size = min(10.0, round(frame.height / (0.58 * len(ylabel)), 1))  # a long name still fits the side
        out.append(text(frame.left - 46, cy, ylabel, size, extra=f' transform="rotate(-90 {number(frame.left - 46)} '
                                                                f'{number(cy)})"'))
    if title:
        out.append(text(frame.left + frame.width / 2, frame.top - 7, title, 10.5, extra=' font-weight="600"'))
    return out


def svg(width: float, height: float, body: Sequence[str], label: str) -> str:
    return (f'<svg class="plot" width="{int(width)}" height="{int(height)}" viewBox="0 0 {int(width)} '
            f'{int(height)}" role="img" aria-label="{esc(label)}" font-family="system-ui, sans-serif">'
            f"<title>{esc(label)}</title>" + "".join(body) + "</svg>")
