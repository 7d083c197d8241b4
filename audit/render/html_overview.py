"""The top of the HTML report: the header (the store's facts, the machines and versions, notices, links to
the sections) and the sortable, filterable verdict table, a row per measure."""

from __future__ import annotations

import json
import platform
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from statistics import median
from typing import Any

from audit import __version__
from audit.render.html_parts import cell_value, esc
from audit.render.tables import header_text
from audit.store.record import RunRecord

VERDICTS = ("distinguishes", "inverted", "unstable", "fails", "insufficient", "undefined")
LEAD_COLUMNS = ("measure", "measure_family", "direction", "verdict")


# ---------------------------------------------------------------- header

def machine_lines(records: list[RunRecord]) -> list[str]:
    """Where and with what the runs were trained (each distinct value with its count of runs), and where this
    report was written."""
    shared, mixed = [], []
    for key, label in (("device", "device"), ("host", "host"), ("threads", "threads"), ("trainer", "trainer"),
                       ("products", "products"), ("audit_version", "audit"), ("torch_version", "torch"),
                       ("python_version", "python")):
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
