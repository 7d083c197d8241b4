"""What a run's model was: its parameter names and shapes, a digest of its module structure, and for a user's
or a plugin's model the digest of the source that defines it. Recorded in every run file, so that a model
edited after training is noticed instead of its old results being served or its weights failing to load."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from torch import nn

from audit.registry import source_digest


def source_of(file: str | Path, module: str) -> dict[str, str]:
    """Where a factory is defined: its module, the file that is hashed (a top-level module's own file; for a
    module inside a package, the top-level package, every file of it) and that digest."""
    path = Path(file).resolve()
    top = path.parent if path.name == "__init__.py" else path
    for _ in range(module.count(".")):
        top = top.parent
    hashed = top / "__init__.py" if (top / "__init__.py").is_file() else path  # a namespace package: the file
    return {"module": module, "file": str(hashed), "sha256": source_digest(hashed)}


def describe(model: nn.Module, source: dict[str, str] | None) -> dict[str, Any]:
    """The architecture record of a freshly built model."""
    return {"parameters": {name: list(value.shape) for name, value in model.state_dict().items()},
            "structure": hashlib.sha256(repr(model).encode()).hexdigest()[:16],
            "source": source}


def dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


def loads(text: str | None) -> dict[str, Any] | None:
    """The record as stored (JSON text), None for runs written before it was recorded."""
    return json.loads(text) if text else None


def shape_text(shape: list[int]) -> str:
    return "×".join(map(str, shape)) or "scalar"


def changes(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between the architecture a run was trained with and today's, one phrase each."""
    found = []
    was, now = recorded.get("source"), current.get("source")
    if was and now and was["sha256"] != now["sha256"]:
        found.append(f"its source {now['file']} changed")
    before, after = recorded["parameters"], current["parameters"]
    reshaped = [n for n in after if n in before and before[n] != after[n]]
    for name in reshaped[:2]:
        found.append(f"{name} was {shape_text(before[name])}, is {shape_text(after[name])}")
    if len(reshaped) > 2:
        found.append(f"{len(reshaped) - 2} more parameter{'s' * (len(reshaped) > 3)} reshaped")
    added, removed = [n for n in after if n not in before], [n for n in before if n not in after]
    if added:
        found.append(f"new parameters {', '.join(added[:3])}{' …' * (len(added) > 3)}")
    if removed:
        found.append(f"parameters gone: {', '.join(removed[:3])}{' …' * (len(removed) > 3)}")
    if not found and recorded["structure"] != current["structure"]:
        found.append("its module structure changed")
    return found


def source_state(recorded: dict[str, Any] | None) -> str:
    """For reading commands, which never import user code: 'unchanged' or 'changed' when the recorded source
    file can be read and hashed, else 'not checked' (with why); built-in models are 'built in'."""
    if recorded is None:
        return "not recorded (a run written before architectures were)"
    source = recorded.get("source")
    if source is None:
        return "built in"
    path = Path(source["file"])
    if not path.is_file():
        return f"not checked ({path} is not here)"
    return "unchanged" if source_digest(path) == source["sha256"] else f"changed ({path} was edited since)"
