"""The two kinds of failure the CLI distinguishes: bad usage (exit 2) and failed work (exit 1)."""

import difflib


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
