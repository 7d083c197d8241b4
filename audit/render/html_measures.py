"""The HTML report's section per measure: its two SVG panels (against the label corruption p and against the
generalization gap), the key numbers beside them, and every number of the JSON behind a disclosure."""

from __future__ import annotations

from collections.abc import Sequence
from statistics import median
from typing import Any

from audit.judge.rows import input_variants, variant_label
from audit.render.html_parts import cell_value, esc, legend_html, measure_logs
from audit.render.palette import VARIANT_COLOURS, family_style, variant_colour
from audit.render.plots import INPUT_AXIS, grouped
from audit.render.svg import (
    DASHES,
    SHAPES,
    Frame,
    axes_svg,
    line,
    marker,
    nice_ticks,
    padded,
    polyline,
    svg,
    text,
    tick_text,
)
from audit.render.tables import fmt
from audit.store.record import RunRecord


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


# ---------------------------------------------------------------- the panels

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


# ---------------------------------------------------------------- the numbers

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
