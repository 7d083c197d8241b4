"""The report of a store's runs: judged, then printed as a table (default), one JSON document or Markdown,
optionally also written as CSV; notices and errors on stderr."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from audit.errors import UsageError
from audit.judge.verdict import CORRECTIONS, judge
from audit.render import formats, tables
from audit.render.console import out_console


class Output:
    """How results are printed: a table (default; fitting the terminal, every column when wide), one JSON
    document, Markdown, and optionally a CSV file."""

    def __init__(self, as_json: bool = False, markdown: bool = False, csv: Path | None = None,
                 correction: str = "holm", wide: bool = False) -> None:
        if correction not in CORRECTIONS:
            raise UsageError(f"unknown correction '{correction}': use one of {', '.join(CORRECTIONS)}")
        if as_json and markdown:
            raise UsageError("--json and --markdown are exclusive: choose one")
        self.as_json, self.markdown, self.csv, self.correction = as_json, markdown, csv, correction
        self.wide = wide


def emit(store: str, rows: list[dict[str, Any]], judged: dict[str, dict[str, Any]], errors: list[str],
         output: Output, show: list[str], notices: list[str] | None = None, shown: list[str] | None = None) -> None:
    """Judge the rows (the measures of `judged`, in order: the correction family) and print the verdicts of the
    measures in `shown` (default all) as `output` says; the runs table shows the measures in `show`. Notices,
    then errors, go to stderr, one line each."""
    for line in notices or []:
        print(f"audit: {line}", file=sys.stderr)
    judgement = judge(rows, judged, output.correction)
    judgement["correction"] = {"method": output.correction, "size": len(judged), "family": list(judged)}
    if shown is not None:
        judgement["verdicts"] = [v for v in judgement["verdicts"] if v["measure"] in shown]
        judgement["summary"] = [s for s in judgement["summary"] if s["measure"] in shown]
        rows = [{**r, "measures": {k: v for k, v in r["measures"].items() if k in shown},
                 "reasons": {k: v for k, v in r.get("reasons", {}).items() if k in shown}} for r in rows]
    if output.csv is not None:
        formats.write_csv(output.csv, judgement)
    if output.as_json:
        print(formats.dumps(formats.document(store, rows, judgement, errors)))
    elif output.markdown:
        print(formats.markdown_table(judgement))
    else:
        tables.print_tables(out_console(), rows, judgement, show, store, wide=output.wide)
    for line in errors:
        print(f"audit: {line}", file=sys.stderr)
