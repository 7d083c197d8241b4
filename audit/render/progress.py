"""Progress on stderr while runs train and are scored: a rich bar on a terminal, a line per run otherwise."""

from __future__ import annotations

import os
import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from audit.render.console import err_console


def bar_console() -> Console:
    """stderr as wide as the terminal really is: a bar laid out for a COLUMNS that disagrees with it would
    wrap, and the rows it wrapped onto would stay on the screen above the results."""
    try:
        return Console(stderr=True, width=os.get_terminal_size(sys.stderr.fileno()).columns)
    except OSError:  # not a terminal: no bar is drawn
        return err_console


class Reporter:
    """Progress on stderr: a rich bar on a terminal, a line per run otherwise (none when quiet). It has the
    callbacks of audit.pipeline.score.Tracker; the bar shows while the reporter is entered."""

    def __init__(self, quiet: bool = False) -> None:
        self.live = not quiet and err_console.is_terminal
        self.quiet = quiet
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=bar_console(),
                                 transient=True)
        self.runs: Any = None
        self.epochs: Any = None

    def __enter__(self) -> Reporter:
        if self.live:
            self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live:
            self.progress.stop()

    def on_run(self, index: int, total: int, spec: Any, state: str) -> None:
        """Run `index` of `total` (a run spec) starts: 'training', 'batched', ..."""
        label = f"{spec.run_id} {spec.variant_label} seed {spec.seed}"
        if self.live:
            if self.runs is None:
                self.runs = self.progress.add_task("runs", total=total, info="")
                self.epochs = self.progress.add_task("epochs", total=spec.epochs, info="")
            self.progress.update(self.runs, completed=index, info=label)
            self.progress.reset(self.epochs, total=spec.epochs, info="")
        elif not self.quiet:
            print(f"[{index + 1}/{total}] {label}: {state}", file=sys.stderr)

    def on_epoch(self, epoch: int, epochs: int, train_acc: float) -> None:
        """An epoch of the current run ended."""
        if self.live and self.epochs is not None:
            self.progress.update(self.epochs, completed=epoch, total=epochs, info=f"train acc {train_acc:.3f}")

    def on_score(self, run_id: str, index: int, total: int) -> None:
        """Run `index` of `total` is being scored."""
        if self.live:
            if self.runs is None:
                self.runs = self.progress.add_task("scoring", total=total, info="")
            self.progress.update(self.runs, completed=index, info=run_id)
