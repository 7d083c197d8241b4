"""The two kinds of failure the CLI distinguishes: bad usage (exit 2) and failed work (exit 1)."""

import difflib
import sys
import sysconfig
import traceback
from pathlib import Path


class UsageError(Exception):
    """Bad input from the user: a one-line message naming the problem and the fix. Exit code 2."""


class WorkError(Exception):
    """Work that could not be done (a corrupt run file, a diverged run asked for). Exit code 1."""


LISTED = ("model", "measure", "variant", "dataset", "experiment", "kernel", "optimizer", "preprocessing")  # audit list KINDs


def unknown_name(kind: str, name: str, known: list[str]) -> UsageError:
    """A UsageError for an unknown name, suggesting the closest known one."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(sorted(known))}"
    where = f"see `audit list {kind}s`" if kind in LISTED else f"one of {', '.join(known)}"
    return UsageError(f"unknown {kind} '{name}': {hint} ({where})")


OURS = ("audit", "measures", "experiments")  # audit's own packages (cli.py beside them)


def user_frame(error: BaseException) -> str | None:
    """file:line of the deepest frame of the error's traceback in the user's own code (neither audit's nor an
    installed library's nor Python's), None when there is none: the error is then audit's, a bug to report."""
    root = Path(__file__).resolve().parent.parent
    libraries = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sysconfig.get_paths()["purelib"],
                                             sysconfig.get_paths()["stdlib"])}
    found = None
    for frame in traceback.extract_tb(error.__traceback__):
        path = Path(frame.filename)
        if not path.is_absolute() or frame.filename.startswith("<"):
            continue
        path = path.resolve()
        if any(path.is_relative_to(root / p) for p in OURS) or path == root / "cli.py":
            continue
        if any(path.is_relative_to(lib) for lib in libraries) or "site-packages" in path.parts:
            continue
        found = f"{frame.filename}:{frame.lineno}"
    return found
