"""The shape of a store's experiment.json, checked when it is read: a document of a wrong shape is a WorkError
naming the file (it is the store's own file, not the user's input), and the file is left as it is.

Known keys (what audit writes): `audit_version` a string, `experiment` an object (the expanded spec), `run_ids`,
`imported` and `kernel_runs` lists of strings (run ids), `runs` an object of objects (run id → spec),
`trainers` an object of strings (run id → the trainer path it was started with). Unknown
keys are kept as they are, for forward compatibility: a newer audit may write more."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from audit.errors import WorkError

LISTS_OF_STRINGS = ("run_ids", "imported", "kernel_runs")

MAX_DEPTH = 64  # nesting: audit writes 4 levels; far deeper would overflow the encoder's recursion on rewriting

RESTORE = "audit leaves it as it is: restore it, or move it aside and rerun to write a new one"


def _kind(value: Any) -> str:
    """The JSON name of a value's type."""
    if value is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(value), type(value).__name__)


def _depth(document: Any) -> int:
    """How deeply arrays and objects nest in document (iteratively: any depth is measured)."""
    deepest, stack = 0, [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (list, dict)):
            deepest = max(deepest, depth)
            stack.extend((item, depth + 1) for item in (value.values() if isinstance(value, dict) else value))
    return deepest


def check_experiment_document(document: Any, path: Path) -> dict[str, Any]:
    """The document when it has the shape of an experiment.json; else a WorkError naming the file and the key."""

    def wrong(what: str, value: Any) -> WorkError:
        return WorkError(f"{path} is corrupt ({what}, found a JSON {_kind(value)}); {RESTORE}")

    if not isinstance(document, dict):
        raise wrong("it must be a JSON object", document)
    for key in LISTS_OF_STRINGS:
        if key in document:
            value = document[key]
            if not isinstance(value, list):
                raise wrong(f"'{key}' must be an array of run ids", value)
            for item in value:
                if not isinstance(item, str):
                    raise wrong(f"'{key}' must hold run ids (strings)", item)
    if "runs" in document:
        runs = document["runs"]
        if not isinstance(runs, dict):
            raise wrong("'runs' must be an object of run specs", runs)
        for run_id, spec in runs.items():
            if not isinstance(spec, dict):
                raise wrong(f"'runs' entry '{run_id[:40]}' must be an object (a run spec)", spec)
    if "experiment" in document and not isinstance(document["experiment"], dict):
        raise wrong("'experiment' must be an object", document["experiment"])
    trainers = document.get("trainers", {})
    if not isinstance(trainers, dict) or not all(isinstance(v, str) for v in trainers.values()):
        raise wrong("'trainers' must be an object of trainer names (run id → batched or sequential)", trainers)
    if "audit_version" in document and not isinstance(document["audit_version"], str):
        raise wrong("'audit_version' must be a string", document["audit_version"])
    if _depth(document) > MAX_DEPTH:
        raise WorkError(f"{path} is corrupt (arrays or objects nested over {MAX_DEPTH} deep); {RESTORE}")
    return document
