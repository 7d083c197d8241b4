"""`audit report --html`: the whole audit as one self-contained HTML file to pass around.

Inline CSS, a little inline JS (sorting and filtering the verdict table), every figure inline as a base64 PNG
(or an SVG as a data URI): the page fetches nothing. Figures are small multiples at a low dpi, so that the
quick store's report stays about 1-2 MB and is written in a few seconds.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import platform
import re
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from statistics import median
from typing import Any, NamedTuple

from audit import __version__
from audit.judge.rows import input_variants, variant_label
from audit.judge.verdict import judge
from audit.render import formats
from audit.render.palette import CHANCE, VARIANT_COLOURS, family_style, variant_colour
from audit.render.plots import INPUT_AXIS, figure_1, grouped, pyplot, slug
from audit.render.tables import fmt, header_text
from audit.spec.run import KERNEL_PREFIX
from audit.store.record import RunRecord

DPI = 90
VERDICTS = ("distinguishes", "inverted", "unstable", "fails", "insufficient", "undefined")
LEAD_COLUMNS = ("measure", "measure_family", "direction", "verdict")


class ExtraFigure(NamedTuple):
    """A figure made elsewhere (a landscape, a spectrum, a Hessian density): PNG bytes or SVG text."""

    title: str
    caption: str
    image: bytes | str


class Written(NamedTuple):
    path: Path
    size: int  # bytes
    seconds: float


# ---------------------------------------------------------------- the public entry points

def report_document(store: str, rows: list[dict[str, Any]], judged: dict[str, dict[str, Any]],
                    errors: list[str], correction: str = "holm", shown: list[str] | None = None) -> dict[str, Any]:
    """The JSON document `audit report --json` prints (judged exactly as render.report.emit does): the rows
    judged over the fixed family `judged`, verdicts kept for the measures in `shown` (default all)."""
    judgement = judge(rows, judged, correction)
    judgement["correction"] = {"method": correction, "size": len(judged), "family": list(judged)}
    if shown is not None:
        judgement["verdicts"] = [v for v in judgement["verdicts"] if v["measure"] in shown]
        judgement["summary"] = [s for s in judgement["summary"] if s["measure"] in shown]
        rows = [{**r, "measures": {k: v for k, v in r["measures"].items() if k in shown},
                 "reasons": {k: v for k, v in r.get("reasons", {}).items() if k in shown}} for r in rows]
    return formats.clean(formats.document(store, rows, judgement, errors))


def write_html_report(path: Path, document: dict[str, Any], records: list[RunRecord], *,
                      extra_figures: Sequence[ExtraFigure | tuple[str, str, bytes | str]] = (),
                      num_classes: int = 10, notices: Sequence[str] = (), at: str | None = None) -> Written:
    """Write the report page of `document` (the JSON report) and the runs' records (their histories) to
    path, atomically; returns its size in bytes and the seconds it took."""
    start = time.perf_counter()
    page = html_report(document, records, extra_figures=extra_figures, num_classes=num_classes,
                       notices=notices, at=at)
    data = page.encode("utf-8")
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)
    return Written(path, len(data), time.perf_counter() - start)


def html_report(document: dict[str, Any], records: list[RunRecord], *,
                extra_figures: Sequence[ExtraFigure | tuple[str, str, bytes | str]] = (),
                num_classes: int = 10, notices: Sequence[str] = (), at: str | None = None) -> str:
    """The report page as a string."""
    plt = pyplot()
    rows, summaries = document["runs"], document["summary"]
    anchors = measure_anchors([s["measure"] for s in summaries])
    sections = [verdict_section(document, anchors), figure_1_section(plt, records, rows, num_classes),
                curves_section(records, rows, num_classes), measures_section(document, records, anchors),
                extra_section([ExtraFigure(*f) for f in extra_figures])]
    body = "\n".join(s for s in sections if s)
    title = f"audit report: {document['store']}"
    return PAGE.format(title=esc(title), css=CSS, js=JS, body=header_html(document, records, notices, at, body)
                       + "\n" + body)


# ---------------------------------------------------------------- small helpers

def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def measure_anchors(names: list[str]) -> dict[str, str]:
    """An id per measure, unique and made of safe characters."""
    anchors: dict[str, str] = {}
    for name in names:
        base = "m-" + re.sub(r"[^A-Za-z0-9_-]+", "_", name)
        anchor, n = base, 1
        while anchor in anchors.values():
            n += 1
            anchor = f"{base}-{n}"
        anchors[name] = anchor
    return anchors


def png_uri(plt: Any, figure: Any, dpi: int = DPI, tight: bool = False) -> str:
    """The figure as a base64 PNG data URI; the figure is closed."""
    buffer = io.BytesIO()
    if tight:
        figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=dpi)
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


EXTERNAL = re.compile(r"""(?:href|src)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?\s*(?:https?:)?//""", re.I)


def image_uri(image: bytes | str) -> str:
    """A caller's PNG bytes or SVG text as a data URI; an SVG that would fetch anything is refused."""
    if isinstance(image, bytes):
        if not image.startswith(b"\x89PNG\r\n\x1a\n"):
            raise ValueError("an extra figure given as bytes must be a PNG")
        return "data:image/png;base64," + base64.b64encode(image).decode("ascii")
    if EXTERNAL.search(image):
        raise ValueError("an extra figure's SVG refers to an outside address; the report must fetch nothing")
    return "data:image/svg+xml;base64," + base64.b64encode(image.encode("utf-8")).decode("ascii")


def img(uri: str, alt: str, css: str = "") -> str:
    return f'<img src="{uri}" alt="{esc(alt)}"{f" class={chr(34)}{css}{chr(34)}" if css else ""}>'


def cell_value(value: Any) -> tuple[str, str]:
    """(text shown, sort key) of a table cell."""
    if isinstance(value, bool):
        return ("yes" if value else "no"), str(int(value))
    if isinstance(value, (int, float)):
        return fmt(value, 3), repr(float(value))
    if value is None:
        return "—", ""
    if isinstance(value, (list, tuple)):
        text = ", ".join(fmt(v, 3) if isinstance(v, float) else str(v) for v in value)
        return (text or "—"), text
    if isinstance(value, dict):
        text = "; ".join(f"{k}: {cell_value(v)[0]}" for k, v in value.items())
        return (text or "—"), text
    return str(value), str(value)


def measure_logs(records: list[RunRecord]) -> dict[str, bool]:
    """Whether each cached measure is reported as a natural log, as its cached values recorded."""
    logs: dict[str, bool] = {}
    for record in records:
        for key, entry in record.measures.items():
            if "log" in entry:
                logs.setdefault(key.split("@")[0], bool(entry["log"]))
    return logs


# ---------------------------------------------------------------- header

def machine_lines(records: list[RunRecord]) -> list[str]:
    """Where and with what the runs were trained (each distinct value with its count of runs), and where this
    report was written."""
    shared, mixed = [], []
    for key, label in (("device", "device"), ("host", "host"), ("threads", "threads"), ("trainer", "trainer"),
                       ("audit_version", "audit"), ("torch_version", "torch"), ("python_version", "python")):
        counts = Counter(str(r.attrs[key]) for r in records if r.attrs.get(key) is not None)
        if len(counts) == 1:
            shared.append(f"{label} {next(iter(counts))}")
        elif counts:
            mixed.append(f"{label}: " + ", ".join(f"{v} ({n} run{'s' * (n != 1)})" for v, n in counts.most_common()))
    lines = ([f"trained with {' · '.join(shared)} (every run that recorded it)"] if shared else []) + mixed
    import matplotlib  # already imported by pyplot()

    written = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines.append(f"this report: audit {__version__}, python {platform.python_version()}, matplotlib "
                 f"{matplotlib.__version__}, on {platform.node() or 'an unnamed host'}, {written}")
    return lines


NAVIGATION = (("verdicts", "verdicts"), ("figure-1", "Figure 1"), ("curves", "training curves"),
              ("measures", "measures"), ("extra", "more figures"))


def header_html(document: dict[str, Any], records: list[RunRecord], notices: Sequence[str], at: str | None,
                body: str) -> str:
    """The facts of the store and a link to each section the body has."""
    head, rows = document["header"], document["runs"]
    families = sorted({r["family"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    correction = document.get("correction") or {}
    facts = [("store", f"<code>{esc(document['store'])}</code>"),
             ("runs", esc(header_text(head).split(": ", 1)[-1])),
             (f"famil{'y' if len(families) == 1 else 'ies'}", ", ".join(f"<code>{esc(f)}</code>" for f in families)),
             ("seeds", esc(", ".join(map(str, seeds)) or "—")),
             ("judged at", esc(at or "the end of training")),
             ("p-values", esc(f"{correction.get('method', '?')} correction over {correction.get('size', '?')} "
                              "measures (every measure cached in the store)")),
             ("machine and versions", "<br>".join(esc(line) for line in machine_lines(records)))]
    items = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    warnings = [*(f"notice: {n}" for n in notices), *(f"error: {e}" for e in document.get("errors") or [])]
    warn = ("<ul class=\"warnings\">" + "".join(f"<li>{esc(w)}</li>" for w in warnings) + "</ul>") if warnings else ""
    nav = "<nav>" + " ".join(f'<a href="#{ident}">{label}</a>' for ident, label in NAVIGATION
                             if f'<section id="{ident}"' in body) + "</nav>"
    return (f"<header><h1>audit report <span class=\"store\">{esc(Path(document['store']).name)}</span></h1>"
            f"{nav}<dl class=\"facts\">{items}</dl>{warn}</header>")


# ---------------------------------------------------------------- the verdict table

def summary_columns(summaries: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """Every column the JSON summary has, as key paths: a dict of scalars gives a column per key (medians ·
    true, ...), anything else one column; the measure, its kind, direction and verdict first."""
    keys = list(dict.fromkeys(k for s in summaries for k in s if k not in LEAD_COLUMNS))
    paths: list[tuple[str, ...]] = [(k,) for k in LEAD_COLUMNS]
    for key in keys:
        values = [s[key] for s in summaries if s.get(key) is not None]
        spread = values and all(isinstance(v, dict) and all(not isinstance(x, (dict, list)) for x in v.values())
                                for v in values)
        subkeys = list(dict.fromkeys(k for v in values for k in v)) if spread else []
        paths += [(key, sub) for sub in subkeys] or [(key,)]
    return paths


def path_value(summary: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = summary
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def family_medians(verdicts: list[dict[str, Any]], name: str, key: str) -> float | None:
    values = [v[key] for v in verdicts if v["measure"] == name and v.get(key) is not None]
    return median(values) if values else None


def verdict_section(document: dict[str, Any], anchors: dict[str, str]) -> str:
    summaries, verdicts, rule = document["summary"], document["verdicts"], document.get("rule") or {}
    if not summaries:
        return "<section id=\"verdicts\"><h2>Verdicts</h2><p>No measure is cached in this store: " \
               "<code>audit score</code> computes them.</p></section>"
    paths = summary_columns(summaries)
    # auc and trend are per family in the JSON (verdicts); the table shows their median over the families
    derived = [("auc",), ("trend",)]
    columns = paths[:len(LEAD_COLUMNS)] + derived + paths[len(LEAD_COLUMNS):]
    head = "".join(column_header(c, rule, summaries, verdicts) for c in columns)
    body = "".join(summary_row(s, columns, verdicts, anchors) for s in summaries)
    kinds = sorted({s["measure_family"] for s in summaries})
    run_families = sorted({f for s in summaries for f in (s.get("families") or {})})
    given = {s["verdict"] for s in summaries} | {v for s in summaries for v in (s.get("families") or {}).values()}
    present = [v for v in VERDICTS if v in given] + sorted(given - set(VERDICTS))
    filters = (select("f-verdict", "verdict", present) + select("f-kind", "kind of measure", kinds)
               + (select("f-family", "verdict in the family of runs", run_families, "any family (overall verdict)")
                  if len(run_families) > 1 else ""))
    rules = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in rule.items())
    return (f"<section id=\"verdicts\"><h2>Verdicts</h2>"
            f"<p class=\"hint\">One row per measure. Click a column header to sort (again to reverse); each "
            f"measure links to its section. ↑: larger = more complex, ↓: smaller = more complex. auc and trend: "
            f"median over the families of runs (per family in each measure's section).</p>"
            f"<div class=\"filters\">{filters}<span id=\"shown\"></span></div>"
            f"<div class=\"scroll\"><table id=\"verdict-table\"><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table></div>"
            f"<h3>The rule</h3><dl class=\"rule\">{rules}</dl></section>")


def select(ident: str, label: str, options: list[str], everything: str = "all") -> str:
    choices = "".join(f"<option value=\"{esc(o)}\">{esc(o)}</option>" for o in options)
    return (f"<label>{esc(label)} <select id=\"{ident}\"><option value=\"\">{esc(everything)}</option>"
            f"{choices}</select></label>")


def column_header(path: tuple[str, ...], rule: dict[str, str], summaries: list[dict[str, Any]],
                  verdicts: list[dict[str, Any]]) -> str:
    label = "<br>".join(esc(p) for p in path)  # medians<br>true: a narrow column
    if path == ("measure_family",):
        label = "kind"
    numeric = all(isinstance(path_value(s, path), (int, float, type(None))) for s in summaries) \
        and path not in (("direction",), ("verdict",))
    if path in (("auc",), ("trend",)):
        numeric = True
    described = rule.get(path[0]) or rule.get(path[0].split("_")[0]) or ""
    title = f' title="{esc(described)}"' if described else ""
    kind = "num" if numeric or path == ("direction",) else "text"
    return f'<th data-type="{kind}" aria-sort="none"{title}><button type="button">{label}</button></th>'


def summary_row(summary: dict[str, Any], columns: list[tuple[str, ...]], verdicts: list[dict[str, Any]],
                anchors: dict[str, str]) -> str:
    name, verdict = summary["measure"], summary["verdict"]
    cells = []
    for path in columns:
        if path == ("measure",):
            cells.append(f'<td data-v="{esc(name)}"><a href="#{anchors[name]}">{esc(name)}</a></td>')
        elif path == ("verdict",):
            rank = VERDICTS.index(verdict) if verdict in VERDICTS else len(VERDICTS)
            cells.append(f'<td data-v="{rank}"><span class="badge v-{esc(verdict)}">{esc(verdict)}</span></td>')
        elif path == ("direction",):
            cells.append(f'<td data-v="{summary["direction"]}" class="c">{"↑" if summary["direction"] > 0 else "↓"}'
                         f'</td>')
        elif path in (("auc",), ("trend",)):
            text, key = cell_value(family_medians(verdicts, name, path[0]))
            cells.append(f'<td data-v="{key}" class="n">{esc(text)}</td>')
        else:
            value = path_value(summary, path)
            text, key = cell_value(value)
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            cells.append(f'<td data-v="{esc(key)}"{" class=n" if numeric else ""}>{esc(text)}</td>')
    families = json.dumps(summary.get("families") or {})
    return (f'<tr data-verdict="{esc(verdict)}" data-kind="{esc(summary["measure_family"])}" '
            f'data-families="{esc(families)}">{"".join(cells)}</tr>')


# ---------------------------------------------------------------- compact SVG plots

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


def shape_of(index: int) -> str:
    return SHAPES.get(family_style(index)["marker"], "circle")


def tip(row: dict[str, Any], value: float) -> str:
    return f"{row['run_id']} · {variant_label(row)} · seed {row['seed']}: {fmt(value, 4)}"


def short_names(families: Sequence[str]) -> list[str]:
    """Family labels without the words they all share (`mlp-1x512·digits lr=0.1` → `lr=0.1`)."""
    words = [f.split(" ") for f in families]
    shared = set.intersection(*(set(w) for w in words)) if len(words) > 1 else set()
    return [" ".join(w for w in ws if w not in shared) or f for ws, f in zip(words, families)]


def legend_svg(x: float, y: float, variants: Sequence[str], families: Sequence[str]) -> list[str]:
    """Variant colours, then (with several families of runs) each family's marker and line."""
    out = [text(x, y, "variant", 9.5, "start", ' font-weight="600"')]
    for i, variant in enumerate(variants):
        out.append(marker("circle", x + 5, y + 13 + 13 * i, variant_colour(variant)))
        out.append(text(x + 13, y + 16 + 13 * i, variant, 9, "start"))
    y += 13 * len(variants) + 24
    if len(families) > 1:
        out.append(text(x, y, "median, family", 9.5, "start", ' font-weight="600"'))
        for i, family in enumerate(short_names(families)[:8]):
            style = family_style(i)
            out.append(line(x, y + 10 + 13 * i, x + 16, y + 10 + 13 * i, style["color"], 1.3,
                            DASHES[style["linestyle"]]))
            out.append(marker(shape_of(i), x + 8, y + 10 + 13 * i, "#444", r=2.6))
            short = family if len(family) <= 18 else family[:17] + "…"
            out.append(text(x + 20, y + 13 + 13 * i, short, 8.5, "start", hover=families[i]))
    else:
        out.append(line(x, y, x + 16, y, "#000", 1.3))
        out.append(text(x + 20, y + 3, "median over seeds", 9, "start"))
    return out


# ---------------------------------------------------------------- Figure 1 and the training curves

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


def legend_html(rows: list[dict[str, Any]]) -> str:
    """The variant colours used by every figure, as a key."""
    present = {r["variant"] for r in rows}
    keys = [v for v in VARIANT_COLOURS if v in present] + sorted(present - set(VARIANT_COLOURS))
    swatches = "".join(f'<span class="key"><i style="background:{variant_colour(v)}"></i>{esc(v)}</span>'
                       for v in keys)
    return f"<p class=\"legend\">colours: {swatches}</p>"


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


# ---------------------------------------------------------------- per measure

def measure_svg(rows: list[dict[str, Any]], name: str, summary: dict[str, Any], log: bool) -> str:
    """Two panels sharing the measure's axis: against the label corruption p (seeds as points in their
    variant's colour, the median per family as a line, input variants at right with their median as a bar)
    and against the generalization gap, with Kendall τ."""
    complete = [r for r in rows if r["status"] == "complete"]
    families = list(grouped(complete))
    valued = [r for r in complete if r["measures"].get(name) is not None]
    if not valued:
        return svg(560, 40, [text(8, 24, f"{name}: no value on any complete run (see the reasons above)", 11,
                                  "start")], f"{name}: no values")
    y0, y1 = padded([r["measures"][name] for r in valued])
    yticks = nice_ticks(y0, y1, 5)
    inputs = input_variants({r["variant"] for r in valued if r["corrupt"] is None})
    left = Frame(64, 24, 320, 170, -0.06, 1.06 + 0.2 * len(inputs), y0, y1)
    xticks = [(p, f"{p:g}") for p in (0, 0.2, 0.4, 0.6, 0.8, 1.0)]
    xticks += [(1.2 + 0.2 * i, SHORT.get(v, v[:6])) for i, v in enumerate(inputs)]
    ylabel = f"{name} (natural log)" if log else name
    body = axes_svg(left, xticks, yticks, "label corruption p" + (" (input variants at right)" if inputs else ""),
                    ylabel, "against label corruption p")
    if inputs:
        body.append(line(left.x(1.1), left.top, left.x(1.1), left.top + left.height, "#999", 0.8))
    for index, family in enumerate(families):
        body += family_points(left, [r for r in valued if r["family"] == family], name, index, inputs)
    gaps = [r["gap"] for r in valued if r["gap"] is not None]
    gx0, gx1 = padded(gaps or [0.0, 1.0])
    right = Frame(410, 24, 210, 170, gx0, gx1, y0, y1)
    tau, p = summary.get("tau"), summary.get("tau_p_adj")
    title = "τ undefined" if tau is None else f"Kendall τ = {tau:+.2f}" + (f", p adj {p:.1g}" if p is not None else "")
    gticks = nice_ticks(gx0, gx1, 4)
    body += axes_svg(right, [(t, tick_text(t, gticks)) for t in gticks], yticks, "gap = train acc − test acc", "",
                     f"against the gap: {title}", ylabels=False)
    for row in valued:
        if row["gap"] is not None:
            body.append(marker(shape_of(families.index(row["family"])), right.x(row["gap"]),
                               right.y(row["measures"][name]), variant_colour(row["variant"]),
                               tip(row, row["measures"][name]) + f" (gap {fmt(row['gap'])})"))
    present = {r["variant"] for r in valued}
    variants = [v for v in VARIANT_COLOURS if v in present] + sorted(present - set(VARIANT_COLOURS))
    body += legend_svg(634, 30, variants, families)
    return svg(744, 236, body, f"{name} against label corruption and the generalization gap")


SHORT = {"shuffled-pixels": "shuf.", "random-pixels": "rand.", "gaussian": "gauss."}


def family_points(frame: Frame, runs: list[dict[str, Any]], name: str, index: int, inputs: list[str]) -> list[str]:
    """One family on the corruption panel: every seed a point (spread a little sideways when several share a
    p), the median over seeds a line; each input variant its points and a median bar."""
    style, shape = family_style(index), shape_of(index)
    by_x: dict[float, list[dict[str, Any]]] = {}
    for row in runs:
        if row["corrupt"] is not None:
            by_x.setdefault(float(row["corrupt"]), []).append(row)
        elif row["variant"] in inputs:
            by_x.setdefault(1.2 + 0.2 * inputs.index(row["variant"]), []).append(row)
    out, medians = [], []
    for x, group in sorted(by_x.items()):
        values = [r["measures"][name] for r in group]
        middle = median(values)
        if x <= 1.0:
            medians.append((frame.x(x), frame.y(middle)))
        else:
            out.append(line(frame.x(x - 0.07), frame.y(middle), frame.x(x + 0.07), frame.y(middle), style["color"],
                            1.6, DASHES[style["linestyle"]]))
        for k, row in enumerate(group):
            spread = (k - (len(group) - 1) / 2) * 0.016
            out.append(marker(shape, frame.x(x + spread), frame.y(row["measures"][name]),
                              variant_colour(row["variant"]), tip(row, row["measures"][name])))
    if medians:
        out.insert(0, polyline(medians, style["color"], 1.3, DASHES[style["linestyle"]]))
    return out


STAT_ORDER = ("verdict", "note", "runs", "complete", "n_true", "n_random", "nulls", "reason", "ratio", "auc",
              "auc_interval", "auc_interval_kind", "auc_p", "auc_p_adj", "trend", "trend_p", "trend_p_adj", "tau",
              "tau_p", "tau_p_adj")


def stat_rows(stats: list[dict[str, Any]]) -> list[tuple[str, list[Any]]]:
    """The numbers behind a measure's verdict, one row per statistic, one column per family: the ones the rule
    reads first, then every other key of the JSON (dicts spread into a row per key)."""
    keys = [k for k in STAT_ORDER if any(k in s for s in stats)]
    keys += [k for s in stats for k in s if k not in keys and k not in ("measure", "family")]
    keys = list(dict.fromkeys(keys))
    out: list[tuple[str, list[Any]]] = []
    for key in keys:
        values = [s.get(key) for s in stats]
        if any(isinstance(v, dict) for v in values):
            subkeys = list(dict.fromkeys(k for v in values if isinstance(v, dict) for k in v))
            out += [(f"{key} · {sub}", [(v or {}).get(sub) for v in values]) for sub in subkeys]
            if not subkeys:
                out.append((key, [None] * len(values)))
        else:
            out.append((key, values))
    return out


def stats_table(stats: list[dict[str, Any]], rows: list[tuple[str, list[Any]]], css: str = "numbers") -> str:
    """Statistics as rows, a column per family of runs."""
    head = "".join(f"<th>{esc(s['family'])}</th>" for s in stats)
    body = "".join(f"<tr><th>{esc(key)}</th>" + "".join(f"<td>{esc(v if isinstance(v, str) else cell_value(v)[0])}"
                                                       f"</td>" for v in values) + "</tr>" for key, values in rows)
    return f"<table class=\"{css}\"><thead><tr><th>family of runs</th>{head}</tr></thead><tbody>{body}</tbody></table>"


def with_p(value: float | None, p: float | None, p_adj: float | None, digits: int = 2) -> str:
    if value is None:
        return "—"
    extra = [f"p {p:.2g}" if p is not None else "", f"adj {p_adj:.2g}" if p_adj is not None else ""]
    return f"{value:+.{digits}f}" + (f" ({', '.join(e for e in extra if e)})" if any(extra) else "")


def auc_text(stat: dict[str, Any]) -> str:
    if stat.get("auc") is None:
        return "—"
    interval, kind = stat.get("auc_interval"), stat.get("auc_interval_kind")
    text_ = f"{stat['auc']:.2f}" + (f" [{interval[0]:.2f}, {interval[1]:.2f}] {kind}" if interval else "")
    p, adj = stat.get("auc_p"), stat.get("auc_p_adj")
    return text_ + (f" (p {p:.2g}" + (f", adj {adj:.2g}" if adj is not None else "") + ")" if p is not None else "")


def key_rows(stats: list[dict[str, Any]]) -> list[tuple[str, list[Any]]]:
    """The numbers the rule reads, a line each: counts, medians, auc, trend, τ, and the input variants."""
    def median_of(stat: dict[str, Any], variant: str) -> str:
        value = (stat.get("medians") or {}).get(variant)
        return "—" if value is None else f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}"

    out: list[tuple[str, list[Any]]] = [
        ("verdict", [s.get("verdict") for s in stats]),
        ("note", [s.get("note") or "" for s in stats]),
        ("runs (complete, null)", [f"{s.get('runs')} ({s.get('complete')}, {s.get('nulls')})" for s in stats]),
        ("true / random-labels runs", [f"{s.get('n_true')} / {s.get('n_random')}" for s in stats]),
        ("median true → random", [f"{median_of(s, 'true')} → {median_of(s, 'random-labels')}" for s in stats]),
        ("ratio", [s.get("ratio") for s in stats]),
        ("auc [interval] (p)", [auc_text(s) for s in stats]),
        ("trend: τ against p", [with_p(s.get("trend"), s.get("trend_p"), s.get("trend_p_adj")) for s in stats]),
        ("τ against the gap", [with_p(s.get("tau"), s.get("tau_p"), s.get("tau_p_adj")) for s in stats])]
    inputs = input_variants({k for s in stats for k in (s.get("input") or {}) if not k.startswith("corrupt")})
    for variant in inputs:
        cells = []
        for stat in stats:
            comparison = (stat.get("input") or {}).get(variant) or {}
            auc, p = comparison.get("auc"), comparison.get("auc_p")
            cells.append(f"median {median_of(stat, variant)}, auc vs true "
                         + ("—" if auc is None else f"{auc:.2f}" + (f" (p {p:.2g})" if p is not None else "")))
        out.append((variant, cells))
    if any(s.get("reason") for s in stats):
        out.append(("undefined because", [s.get("reason") or "" for s in stats]))
    return out


def summary_table(summary: dict[str, Any]) -> str:
    body = "".join(f"<tr><th>{esc(key)}</th><td>{esc(cell_value(value)[0])}</td></tr>"
                   for key, value in summary.items() if key not in ("measure",))
    return f"<table class=\"numbers\"><tbody>{body}</tbody></table>"


def measure_html(rows: list[dict[str, Any]], summary: dict[str, Any], stats: list[dict[str, Any]],
                 anchor: str, log: bool) -> str:
    name, verdict = summary["measure"], summary["verdict"]
    direction = "↑ larger = more complex" if summary["direction"] > 0 else "↓ smaller = more complex"
    notes = "".join(f"<li>{esc(n)}</li>" for n in summary.get("notes") or [])
    figure = measure_svg(rows, name, summary, log)
    reasons = [r["reasons"][name] for r in rows if name in (r.get("reasons") or {})]
    distinct = list(dict.fromkeys(reasons))
    undefined = (f"<li>undefined on {len(reasons)} run{'s' * (len(reasons) != 1)}: {esc('; '.join(distinct[:3]))}"
                 f"{'; …' if len(distinct) > 3 else ''}</li>") if reasons else ""
    return (f"<section class=\"measure\" id=\"{anchor}\"><h3>{esc(name)} <span class=\"badge v-{esc(verdict)}\">"
            f"{esc(verdict)}</span></h3><p class=\"meta\">kind {esc(summary['measure_family'])} · {direction}"
            f"{' · reported as a natural log' if log else ''} · τ against the gap {esc(fmt(summary.get('tau'), 2))}"
            f" · <a href=\"#verdicts\">back to the table</a></p>"
            f"{f'<ul class={chr(34)}notes{chr(34)}>{notes}{undefined}</ul>' if notes or undefined else ''}"
            f"<div class=\"measure-body\"><div>{figure}</div>"
            f"<div class=\"{'key-box' if len(stats) == 1 else 'wide-box'}\">{stats_table(stats, key_rows(stats))}</div>"
            f"</div><details><summary>every number in the JSON: per family of runs, and the summary</summary>"
            f"<div class=\"measure-body\">{stats_table(stats, stat_rows(stats))}{summary_table(summary)}</div>"
            f"</details></section>")


def measures_section(document: dict[str, Any], records: list[RunRecord], anchors: dict[str, str]) -> str:
    if not document["summary"]:
        return ""
    logs = measure_logs(records)
    rows = document["runs"]
    sections = [measure_html(rows, s, [v for v in document["verdicts"] if v["measure"] == s["measure"]],
                             anchors[s["measure"]], logs.get(s["measure"], False)) for s in document["summary"]]
    inputs = [v for v in INPUT_AXIS if any(r["variant"] == v for r in rows)]
    return ("<section id=\"measures\"><h2>Measures</h2><p class=\"hint\">Left: the measure against the label "
            "corruption p, every seed a point in its variant's colour, the median over seeds a line per family"
            + (f"; the input variants ({', '.join(inputs)}) at right, their median a bar" if inputs else "")
            + ". Right: against the generalization gap, τ over all complete runs. Below: the numbers behind the "
            f"verdict.</p>{legend_html(rows)}" + "".join(sections) + "</section>")


# ---------------------------------------------------------------- figures made elsewhere

def extra_section(figures: list[ExtraFigure]) -> str:
    if not figures:
        return ""
    parts = "".join(f"<figure class=\"extra\"><h3>{esc(f.title)}</h3>{img(image_uri(f.image), f.title)}"
                    f"<figcaption>{esc(f.caption)}</figcaption></figure>" for f in figures)
    return f"<section id=\"extra\"><h2>More figures</h2>{parts}</section>"


# ---------------------------------------------------------------- the page

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{title}</title>
<style>{css}</style></head>
<body>
{body}
<script>{js}</script>
</body></html>
"""

CSS = """
:root { --fg: #1a1a1a; --muted: #5c5c5c; --line: #d9d9d9; --bg-alt: #f5f5f5; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       margin: 0 auto; padding: 0 20px 40px; max-width: 1400px; }
h1 { font-size: 22px; margin: 18px 0 4px; } h1 .store { color: var(--muted); font-weight: 400; }
h2 { font-size: 18px; border-bottom: 1px solid var(--line); padding-bottom: 4px; margin-top: 32px; }
h3 { font-size: 15px; margin: 18px 0 4px; }
code { font: 12.5px ui-monospace, "DejaVu Sans Mono", monospace; }
nav a { margin-right: 14px; }
a { color: #0b5cad; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 10px 0; }
dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; }
ul.warnings { background: #fff4e5; border-left: 3px solid #E69F00; padding: 6px 6px 6px 26px; }
.hint { color: var(--muted); margin: 4px 0 8px; }
.filters { display: flex; gap: 18px; align-items: center; flex-wrap: wrap; margin: 8px 0; }
.filters select { font: inherit; padding: 2px 4px; }
#shown { color: var(--muted); }
.scroll { overflow-x: auto; border: 1px solid var(--line); max-height: 80vh; }
#verdict-table { border-collapse: collapse; font-size: 12.5px; white-space: nowrap; }
#verdict-table th, #verdict-table td { padding: 3px 8px; border-bottom: 1px solid var(--line); text-align: left; }
#verdict-table td.n { text-align: right; font-variant-numeric: tabular-nums; }
#verdict-table td.c { text-align: center; }
#verdict-table thead th { position: sticky; top: 0; background: #ececec; z-index: 2; }
#verdict-table th button { all: unset; cursor: pointer; font-weight: 600; }
#verdict-table th[aria-sort=ascending] button::after { content: " ▲"; }
#verdict-table th[aria-sort=descending] button::after { content: " ▼"; }
#verdict-table th:first-child, #verdict-table td:first-child { position: sticky; left: 0; background: #fff;
                                                              z-index: 1; }
#verdict-table thead th:first-child { z-index: 3; background: #ececec; }
#verdict-table tbody tr:nth-child(even) td { background: var(--bg-alt); }
#verdict-table tbody tr:hover td { background: #e8f1fb; }
.badge { display: inline-block; padding: 0 6px; border-radius: 3px; font-size: 12px; font-weight: 600; }
.v-distinguishes { background: #009E73; color: #fff; } .v-fails { background: #D55E00; color: #fff; }
.v-inverted { background: #CC79A7; color: #fff; } .v-unstable { background: #E69F00; color: #000; }
.v-insufficient { background: #d9d9d9; color: #000; } .v-undefined { background: #56B4E9; color: #000; }
dl.rule { display: grid; grid-template-columns: max-content 1fr; gap: 3px 14px; font-size: 13px; }
dl.rule dt { font-weight: 600; } dl.rule dd { margin: 0; }
.row { display: flex; flex-wrap: wrap; gap: 12px; }
.wrap { display: flex; flex-wrap: wrap; gap: 4px 24px; }
.row figure { flex: 1 1 340px; max-width: 460px; } .row img { width: 100%; }
figure { margin: 8px 0; } figcaption { color: var(--muted); font-size: 12.5px; }
img { max-width: 100%; height: auto; }
.legend .key { margin-right: 12px; white-space: nowrap; }
.legend i { display: inline-block; width: 11px; height: 11px; border-radius: 50%; margin-right: 4px;
            vertical-align: -1px; }
section.measure { border-top: 1px solid var(--line); padding-top: 4px; }
.meta { color: var(--muted); margin: 0 0 4px; }
ul.notes { margin: 4px 0; color: #7a4a00; }
.measure-body { display: flex; gap: 16px; align-items: flex-start; flex-wrap: wrap; }
svg.plot { max-width: 100%; height: auto; }
.key-box { flex: 1 1 360px; max-width: 480px; } .key-box table { width: 100%; }
.wide-box { flex: 1 1 100%; }
table.numbers { border-collapse: collapse; font-size: 12px; }
table.numbers th, table.numbers td { padding: 1px 8px; border-bottom: 1px solid #eee; text-align: left;
                                     vertical-align: top; max-width: 420px; }
table.numbers tbody th { font-weight: 400; color: var(--muted); white-space: nowrap; }
details { margin: 4px 0 10px; } summary { cursor: pointer; color: var(--muted); }
:target { scroll-margin-top: 10px; }
section.measure:target h3 { background: #fff4c2; }
"""

JS = r"""
(function () {
  var table = document.getElementById('verdict-table');
  if (!table) { return; }
  var tbody = table.tBodies[0];
  var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);
  function key(row, index, numeric) {
    var v = row.cells[index].getAttribute('data-v');
    if (v === null || v === '') { return null; }
    return numeric ? parseFloat(v) : v.toLowerCase();
  }
  function sortBy(th) {
    var index = headers.indexOf(th);
    var numeric = th.getAttribute('data-type') === 'num';
    var order = th.getAttribute('aria-sort') === 'ascending' ? 'descending' : 'ascending';
    headers.forEach(function (h) { h.setAttribute('aria-sort', 'none'); });
    th.setAttribute('aria-sort', order);
    var sign = order === 'ascending' ? 1 : -1;
    var rows = Array.prototype.slice.call(tbody.rows);
    rows.forEach(function (row, i) { row._i = i; });
    rows.sort(function (a, b) {
      var x = key(a, index, numeric), y = key(b, index, numeric);
      if (x === null || y === null) { return x === y ? a._i - b._i : (x === null ? 1 : -1); }  // blanks last
      if (x < y) { return -sign; }
      if (x > y) { return sign; }
      return a._i - b._i;
    });
    rows.forEach(function (row) { tbody.appendChild(row); });
  }
  headers.forEach(function (th) { th.addEventListener('click', function () { sortBy(th); }); });
  var selects = ['f-verdict', 'f-kind', 'f-family'].map(function (id) { return document.getElementById(id); });
  var shown = document.getElementById('shown');
  function filter() {
    var verdict = selects[0] ? selects[0].value : '', kind = selects[1] ? selects[1].value : '';
    var family = selects[2] ? selects[2].value : '';
    var count = 0, total = tbody.rows.length;
    Array.prototype.forEach.call(tbody.rows, function (row) {
      var own = row.getAttribute('data-verdict');
      if (family) { own = JSON.parse(row.getAttribute('data-families') || '{}')[family] || ''; }
      var show = (!verdict || own === verdict) && (!kind || row.getAttribute('data-kind') === kind)
        && (!family || own !== '');
      row.style.display = show ? '' : 'none';
      count += show ? 1 : 0;
    });
    shown.textContent = count + ' of ' + total + ' measures shown';
  }
  selects.forEach(function (s) { if (s) { s.addEventListener('change', filter); } });
  filter();
})();
"""
