"""The landscape, spectrum and Hessian-density figures as the HTML report embeds them: titled PNGs."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from audit.render.analysis_plots import write_analysis_figures

PICTURES = {"landscape-1d": ("Loss along the line from init to final weights", "Li et al. 2018, 1D"),
            "landscape-2d": ("Loss around the final weights", "two filter-normalized random directions"),
            "esd": ("Spectra of WᵀW per layer", "the power-law fit of ww-alpha from xmin"),
            "hessian-density": ("Hessian eigenvalue density", "stochastic Lanczos quadrature")}


def report_pictures(runs: Mapping[str, Sequence[Any]]) -> list[tuple[str, str, bytes]]:
    """(title, caption, PNG) per figure of audit.pipeline.analysis_figures.figure_runs' runs; a figure of one of
    several families has the family in its title."""
    with tempfile.TemporaryDirectory() as folder:
        out = []
        for path in write_analysis_figures(runs, Path(folder), ("png",)):
            kind = next(k for k in PICTURES if path.stem.startswith(k))
            title, caption = PICTURES[kind]
            out.append((title + path.stem.removeprefix(kind).replace("-", " · ", 1), caption, path.read_bytes()))
        return out
