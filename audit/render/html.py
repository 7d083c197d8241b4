"""`audit report --html`: the whole audit as one self-contained HTML file to pass around.

Inline CSS, a little inline JS (sorting and filtering the verdict table), every figure inline as a base64 PNG
(or an SVG as a data URI): the page fetches nothing. Figures are small multiples at a low dpi, so that the
quick store's report stays about 1-2 MB and is written in a few seconds.

This module holds the page: its entry points and the assembly of its sections. The sections are in
audit.render.html_overview (header, verdict table), html_curves (Figure 1, training curves) and html_measures
(a section per measure); the SVG primitives in audit.render.svg, shared pieces in html_parts, and the
template, CSS and JS in html_assets.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from audit.judge.verdict import judge
from audit.render import formats
from audit.render.html_assets import CSS, JS, PAGE
from audit.render.html_curves import curves_section, figure_1_section
from audit.render.html_measures import measures_section
from audit.render.html_overview import header_html, verdict_section
from audit.render.html_parts import esc, image_uri, img, measure_anchors
from audit.render.plots import pyplot
from audit.store.record import RunRecord


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


# ---------------------------------------------------------------- figures made elsewhere

def extra_section(figures: list[ExtraFigure]) -> str:
    if not figures:
        return ""
    parts = "".join(f"<figure class=\"extra\"><h3>{esc(f.title)}</h3>{img(image_uri(f.image), f.title)}"
                    f"<figcaption>{esc(f.caption)}</figcaption></figure>" for f in figures)
    return f"<section id=\"extra\"><h2>More figures</h2>{parts}</section>"
