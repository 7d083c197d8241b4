"""`audit check`: a table of checks for one measure, a compact row per measure for several, then a line per failure
with its numbers; or one JSON document. Progress (training the check runs, checking each measure) on stderr."""

from __future__ import annotations

import sys
import textwrap
from typing import Any

from rich.markup import escape
from rich.table import Table

from audit.render import formats
from audit.render.console import one_line, out_console
from audit.render.progress import Reporter

CHECKS = ("value", "determinism", "needs", "invariance", "cost", "kinds")
WIDTH = 100


class CheckReporter(Reporter):
    """Reporter's progress while the check runs train, then a bar over the measures being checked."""

    def __init__(self, quiet: bool = False) -> None:
        super().__init__(quiet)
        self.checks: Any = None

    def on_check(self, label: str, index: int, total: int) -> None:
        """Measure `index` of `total` (the last step: the fresh process of the determinism check) starts."""
        if self.live:
            if self.checks is None:
                self.checks = self.progress.add_task("checking", total=total, info="")
            self.progress.update(self.checks, completed=index, info=label)
        elif not self.quiet:
            print(f"[{index + 1}/{total}] checking {label}", file=sys.stderr)


def verdict(check: dict[str, Any]) -> str:
    return {True: "pass", False: "FAIL", None: "n/a"}[check["passed"]]


def cell(check: dict[str, Any]) -> str:
    """A compact cell: ok, FAIL or — (n/a); the cost check with its ratio to one forward pass."""
    mark = {True: "ok", False: "[bold red]FAIL[/]", None: "—"}[check["passed"]]
    if check["check"] == "cost" and check.get("ratio") is not None:
        return f"{mark} {times(check['ratio'])}"
    return mark


def times(ratio: float) -> str:
    if ratio >= 10:
        return f"{ratio:.0f}×"
    return f"{ratio:.2g}×" if ratio >= 0.01 else "<0.01×"


def footer(document: dict[str, Any]) -> str:
    limits = document["limits"]
    classes = ", ".join(f"{name} ≤ {bound:g}×" if bound is not None else f"{name} beyond"
                        for name, bound in limits.items())
    count = len(document["measures"])
    failing = sum(not m["passed"] for m in document["measures"])
    return (f"{count} measure{'s' * (count != 1)} checked, {failing} failing ({document['failures']} failed "
            f"check{'s' * (document['failures'] != 1)}) in {document['seconds']:.1f} s; cost classes in forward "
            f"passes over the train set: {classes}; check runs cached in {document['store']}")


def one_measure(report: dict[str, Any]) -> Table:
    needs = ", ".join(report["needs"]) or "nothing"
    table = Table(title=f"audit check {report['measure']}: cost {report['cost']}, needs {needs}, invariant "
                        f"{'yes' if report['invariant'] else 'no'}", title_justify="left", width=WIDTH)
    table.add_column("check", no_wrap=True)
    table.add_column("result", no_wrap=True)
    table.add_column("detail", overflow="fold", ratio=1)
    for check in report["checks"]:
        style = "bold red" if check["passed"] is False else None
        table.add_row(check["check"], verdict(check), escape(one_line(check["detail"])), style=style)
    return table


def many_measures(reports: list[dict[str, Any]]) -> Table:
    table = Table(title="audit check", title_justify="left")
    table.add_column("measure", no_wrap=True)
    table.add_column("class", no_wrap=True)
    for name in CHECKS:
        table.add_column(name, no_wrap=True)
    for report in reports:
        checks = {c["check"]: c for c in report["checks"]}
        table.add_row(report["measure"], report["cost"], *(cell(checks[name]) for name in CHECKS))
    return table


def print_check(document: dict[str, Any], as_json: bool) -> None:
    """The checks of every measure (audit.pipeline.check.check_measures), then each failure on its own line."""
    if as_json:
        print(formats.dumps(document))
        return
    console = out_console()
    reports = document["measures"]
    if len(reports) == 1:
        console.print(one_measure(reports[0]))
    else:
        console.print(many_measures(reports))
        for report in reports:
            for check in report["checks"]:
                if check["passed"] is False:
                    console.print(f"[bold red]FAIL[/] {escape(report['measure'])} {check['check']}: "
                                  f"{escape(one_line(check['detail']))}", soft_wrap=True)
    for line in textwrap.wrap(footer(document), WIDTH):  # a summary, wrapped to the tables' width
        console.print(escape(line), soft_wrap=True)
