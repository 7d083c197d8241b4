"""`audit report --html`: one self-contained page that fetches nothing, a table row per measure of the JSON
report, every link landing, every figure decoding, well under 5 MB."""

import base64
import dataclasses
import io
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest

from audit.judge.rows import run_rows
from audit.pipeline.report import classes_of, load_report
from audit.render.html import ExtraFigure, html_report, report_document, write_html_report
from audit.render.palette import VARIANT_COLOURS
from audit.render.plots import figure_1a, pyplot


def tiny_png() -> bytes:
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(2, 1.5))
    axes.plot([0, 1], [1, 0])
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=40)
    plt.close(figure)
    return buffer.getvalue()


TINY_SVG = ('<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="40" height="20">'
            '<rect width="40" height="20" fill="#0072B2"/></svg>')


def build(store, path, **options):
    """What `audit report STORE --html PATH` does: read the cache, judge, write the page."""
    scored = load_report(store, [])
    rows = run_rows(scored.records, scored.family, scored.at)
    document = report_document(str(scored.root), rows, scored.judged, scored.errors, "holm", scored.names)
    written = write_html_report(path, document, scored.records, num_classes=classes_of(scored.records),
                                notices=scored.notices, **options)
    return document, scored.records, written


@pytest.fixture(scope="module")
def report(small_store, tmp_path_factory):
    path = tmp_path_factory.mktemp("html") / "report.html"
    extras = [ExtraFigure("a landscape", "supplied by the caller as PNG bytes", tiny_png()),
              ("a spectrum", "supplied as SVG text", TINY_SVG)]
    document, records, written = build(small_store, path, extra_figures=extras)
    return document, records, written, path.read_text()


class Page(HTMLParser):
    """The parts of the page the tests read: attributes of every element, the ids, the verdict table's rows."""

    def __init__(self) -> None:
        super().__init__()
        self.attributes: list[tuple[str, str, str]] = []
        self.ids: set[str] = set()
        self.rows: list[dict] = []
        self.in_table = self.in_body = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.attributes += [(tag, k, v or "") for k, v in attrs.items()]
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "table":
            self.in_table = attrs.get("id") == "verdict-table"
        if self.in_table and tag == "tbody":
            self.in_body = True
        if self.in_body and tag == "tr":
            self.rows.append({"attrs": attrs, "links": [], "cells": []})
        if self.in_body and tag == "a":
            self.rows[-1]["links"].append(attrs["href"])
        if self.in_body and tag == "td":
            self.rows[-1]["cells"].append(attrs.get("data-v"))

    def handle_endtag(self, tag):
        if tag == "tbody":
            self.in_body = False
        if tag == "table":
            self.in_table = False


def parsed(text: str) -> Page:
    page = Page()
    page.feed(text)
    return page


def test_the_page_fetches_nothing(report):
    *_, text = report
    page = parsed(text)
    for tag, name, value in page.attributes:
        if name in ("src", "href"):
            assert value.startswith(("data:", "#")), (tag, name, value[:80])
    assert not re.search(r"(?:src|href)\s*=\s*[\"']?\s*(?:https?:)?//", text, re.I)
    assert not re.search(r"url\(\s*[\"']?\s*(?:https?:)?//", text, re.I)
    for uri in re.findall(r"data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)", text):  # nothing hidden in base64
        svg = base64.b64decode(uri).decode()
        assert not re.search(r"(?:href|src)\s*=\s*[\"']\s*(?:https?:)?//|url\(\s*[\"']?\s*(?:https?:)?//", svg)
    assert "<link rel=\"stylesheet\"" not in text and "<script src" not in text


def test_one_row_per_measure_of_the_json_report_each_linking_to_its_section(report):
    document, _, _, text = report
    page = parsed(text)
    names = [s["measure"] for s in document["summary"]]
    assert len(names) > 10
    assert [row["cells"][0] for row in page.rows] == names
    assert [row["attrs"]["data-verdict"] for row in page.rows] == [s["verdict"] for s in document["summary"]]
    for row in page.rows:
        (link,) = row["links"]
        assert link.startswith("#") and link[1:] in page.ids
    assert {"verdicts", "figure-1", "curves", "measures", "extra"} <= page.ids
    assert all(v[1:] in page.ids for _, k, v in page.attributes if k == "href" and v.startswith("#"))


def test_the_table_has_every_column_of_the_json_summary_with_its_numbers(report):
    document, _, _, text = report
    headers = [re.sub(r"<br>", " · ", h) for h in re.findall(r'<th data-type="[a-z]+" aria-sort="none"[^>]*>'
                                                            r'<button type="button">(.*?)</button>', text)]
    for key, value in document["summary"][0].items():
        if isinstance(value, dict) and value:
            assert all(f"{key} · {sub}" in headers for sub in value), key
        elif key != "measure_family":
            assert key in headers, key
    page = parsed(text)
    tau = headers.index("tau")
    for summary, row in zip(document["summary"], page.rows):
        cell = row["cells"][tau]
        assert (cell == "") if summary["tau"] is None else float(cell) == pytest.approx(summary["tau"])


def test_every_figure_decodes(report):
    from PIL import Image

    *_, text = report
    pngs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)
    assert len(pngs) >= 4  # Figure 1a, 1b, 1c and the caller's PNG
    for data in pngs:
        with Image.open(io.BytesIO(base64.b64decode(data))) as image:
            image.verify()
    for data in re.findall(r"data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)", text):
        ET.fromstring(base64.b64decode(data))
    inline = re.findall(r"<svg\b.*?</svg>", text, re.S)
    names = parsed(text).rows
    assert len(inline) >= len(names) + 1  # a panel pair per measure, the training curves
    for svg in inline:
        ET.fromstring(svg)


def test_size_and_the_callers_figures(report):
    _, _, written, text = report
    assert written.size == len(text.encode()) < 5_000_000
    assert "a landscape" in text and "supplied as SVG text" in text


def test_variants_keep_their_colour_in_every_figure(report):
    document, records, _, text = report
    true_run = next(r for r in document["runs"] if r["variant"] == "true")
    # the measure panels: a true run's point is drawn in true's colour
    assert re.search(rf'fill="{VARIANT_COLOURS["true"]}" fill-opacity="0.85"><title>{true_run["run_id"]}', text)
    plt = pyplot()
    figure = figure_1a(plt, records, document["runs"], true_run["family"])
    colours = {line.get_label(): line.get_color() for line in figure.axes[0].lines if not line.get_label().startswith("_")}
    plt.close(figure)
    assert colours == {v: VARIANT_COLOURS[v] for v in ("true", "random-labels")}


def test_runs_without_a_history_and_a_figure_that_would_fetch(report):
    document, records, _, _ = report
    imported = [dataclasses.replace(r, history={}) for r in records]  # as imported runs are
    text = html_report(document, imported)
    page = parsed(text)
    assert "curves" not in page.ids and "extra" not in page.ids and len(page.rows) == len(document["summary"])
    assert all(v[1:] in page.ids for _, k, v in page.attributes if k == "href" and v.startswith("#"))
    with pytest.raises(ValueError, match="outside address"):
        html_report(document, records, extra_figures=[("x", "y", '<svg><image href="https://a.b/c.png"/></svg>')])
