"""The store directory: experiment.json and runs/<run_id>.h5, one file per run."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit.errors import UsageError, WorkError
from audit.store.experiment_doc import check_experiment_document
from audit.store.files import atomic_replace, check_writable
from audit.store.locks import RunLocked, run_lock_waiting
from audit.store.regular import read_regular_text

DEFAULT_ROOT = Path("audit-runs")
LOCK_WAIT_SECONDS = 60.0  # how long an update of experiment.json waits for another writer


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

    @property
    def experiment_path(self) -> Path:
        return self.root / "experiment.json"

    def read_experiment(self) -> dict[str, Any]:
        """experiment.json as a dict ({} when there is none yet); unreadable, corrupt or of a wrong shape
        (audit.store.experiment_doc), a WorkError naming it (the file is left as it is)."""
        path = self.experiment_path
        try:
            text = read_regular_text(path)
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as err:
            raise WorkError(f"{path} is unreadable ({err}); audit leaves it as it is: restore it, or move it "
                            "aside and rerun to write a new one") from None
        try:
            document = json.loads(text)
        except (ValueError, RecursionError) as err:  # JSONDecodeError; an int of over 4300 digits; deep nesting
            raise WorkError(f"{path} is corrupt (not JSON: {err}); audit leaves it as it is: restore it, or move "
                            "it aside and rerun to write a new one") from None
        return check_experiment_document(document, path)

    def update_experiment(self, change: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
        """Read experiment.json, apply change to it and replace it atomically, all under the store's lock, so
        that concurrent writers merge their entries; a corrupt file stops this with a WorkError, unchanged."""
        try:
            with run_lock_waiting(self.experiment_path, LOCK_WAIT_SECONDS):
                document = change(self.read_experiment())
                atomic_replace(self.experiment_path,
                               lambda tmp: tmp.write_text(json.dumps(document, indent=2, sort_keys=True)))
                return document
        except RunLocked:
            raise WorkError(f"{self.experiment_path} is locked by another process for over "
                            f"{LOCK_WAIT_SECONDS:.0f} s; rerun when it is done") from None

    def add_to_experiment(self, key: str, run_id: str) -> None:
        """Record run_id under key (imported, kernel_runs) in experiment.json, once."""

        def add(document: dict[str, Any]) -> dict[str, Any]:
            listed = list(document.get(key, []))
            return {**document, key: listed if run_id in listed else [*listed, run_id]}

        self.update_experiment(add)

    def shared_path(self, kind: str, key: str) -> Path:
        return self.root / "cache" / kind / f"{key}.json"

    def get_shared(self, kind: str, key: str) -> dict[str, Any] | None:
        """A value shared across the store's runs (a Rademacher refit of one input set), or None when there is
        none or it fails its digest (it is then recomputed, never trusted). Files written before digests are
        read as they are."""
        return _shared_value(self.shared_path(kind, key))[1]

    def put_shared(self, kind: str, key: str, value: dict[str, Any]) -> None:
        path = self.shared_path(kind, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {"sha256": shared_digest(value), "value": value}
        atomic_replace(path, lambda tmp: tmp.write_text(json.dumps(document)))

    def shared_paths(self) -> list[Path]:
        return sorted((self.root / "cache").glob("*/*.json"))

    def check_shared(self, path: Path, upgrade: bool = False) -> tuple[str, str]:
        """(state, message) of a shared value's file: verified, unverified (written before digests; given one
        with upgrade), or damaged (unreadable or failing its digest: recomputed when needed, never trusted)."""
        state, value = _shared_value(path)
        if state == "unverified" and upgrade and value is not None:
            self.put_shared(path.parent.name, path.stem, value)
            return "upgraded", "digest added"
        return state, {"verified": "", "damaged": "shared value unreadable, or it fails its digest; recomputed "
                       "when needed, never trusted", "unverified": "shared value written before digests (`audit verify "
                       "--upgrade` adds one)"}[state]


def _shared_value(path: Path) -> tuple[str, dict[str, Any] | None]:
    """A shared value's file as (verified | unverified | damaged, its value or None); a missing file is
    damaged with no value, which every caller treats as nothing cached."""
    try:
        document = json.loads(read_regular_text(path))
    except (OSError, ValueError):
        return "damaged", None
    if not isinstance(document, dict):
        return "damaged", None
    if "sha256" not in document:
        return "unverified", document
    value = document.get("value")
    if not isinstance(value, dict) or document["sha256"] != shared_digest(value):
        return "damaged", None
    return "verified", value


def shared_digest(value: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def create_store(root: Path) -> Store:
    if root.exists() and not root.is_dir():
        raise UsageError(f"store path {root} is a file; choose a directory with --out")
    try:
        (root / "runs").mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WorkError(f"cannot create the store {root}: {err.strerror or err}; choose a writable --out "
                        "(nothing was done)") from None
    check_writable(root / "runs")
    return Store(root)


def open_store(root: Path | None) -> Store:
    """An existing store; without a path, the most recent one under ./audit-runs."""
    if root is None:
        candidates = {}
        for path in DEFAULT_ROOT.glob("*/experiment.json"):
            try:
                candidates[path.parent] = path.stat().st_mtime
            except OSError:  # a dangling link, say: not a store to pick
                continue
        if not candidates:
            raise UsageError(f"no store found under ./{DEFAULT_ROOT}; run `audit run` first or give a STORE path")
        root = max(candidates, key=candidates.__getitem__)
    if not root.exists():
        raise UsageError(f"store {root} does not exist; give the path of a store made by `audit run`")
    if not (root / "runs").is_dir():
        raise UsageError(f"{root} is not an audit store (no runs/ folder); give the path of a store made by `audit run`")
    return Store(root)
