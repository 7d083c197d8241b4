"""The store directory: experiment.json and runs/<run_id>.h5, one file per run."""

from __future__ import annotations
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from audit.errors import UsageError
from audit.store.files import atomic_replace


DEFAULT_ROOT = Path("audit-runs")


@dataclass(frozen=True)
class Store:
    root: Path

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    def run_path(self, run_id: str) -> Path:
        return self.runs_dir / f"{run_id}.h5"

    def run_paths(self) -> list[Path]:
        return sorted(self.runs_dir.glob("*.h5"))

    def read_experiment(self) -> dict[str, Any]:
        try:
            return json.loads((self.root / "experiment.json").read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def write_experiment(self, document: dict[str, Any]) -> None:
        target = self.root / "experiment.json"

        def write(tmp: Path) -> None:
            tmp.write_text(json.dumps(document, indent=2, sort_keys=True))

        atomic_replace(target, write)


def create_store(root: Path) -> Store:
    if root.exists() and not root.is_dir():
        raise UsageError(f"store path {root} is a file; choose a directory with --out")
    try:
        (root / "runs").mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create store {root}: {err.strerror}; choose a writable --out") from None
    if not os.access(root / "runs", os.W_OK):
        raise UsageError(f"store {root} is not writable; choose a writable --out")
    return Store(root)


def open_store(root: Path | None) -> Store:
    """An existing store; without a path, the most recent one under ./audit-runs."""
    if root is None:
        candidates = [p.parent for p in DEFAULT_ROOT.glob("*/experiment.json")]
        if not candidates:
            raise UsageError(f"no store found under ./{DEFAULT_ROOT}; run `audit run` first or give a STORE path")
        root = max(candidates, key=lambda p: (p / "experiment.json").stat().st_mtime)
    if not root.exists():
        raise UsageError(f"store {root} does not exist; give the path of a store made by `audit run`")
    if not (root / "runs").is_dir():
        raise UsageError(f"{root} is not an audit store (no runs/ folder); give the path of a store made by `audit run`")
    return Store(root)
