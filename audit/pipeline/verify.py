"""`audit verify`: every file of a store checked end to end (think `git fsck`), and old files given digests."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.errors import WorkError
from audit.store.digests import describe
from audit.store.directory import Store, open_store
from audit.store.files import check_writable, read_run, write_run
from audit.store.locks import RunLocked, run_lock_waiting

UPGRADE_WAIT_SECONDS = 60.0  # how long an upgrade waits for another process holding a run


@dataclass
class Checked:
    """One file of the store: its path, what it is (verified, unverified, upgraded, damaged, unreadable,
    leftover), the damaged parts (part → what is wrong) and a one-line message."""

    path: str
    state: str
    message: str = ""
    parts: dict[str, str] = field(default_factory=dict)


@dataclass
class Verified:
    root: Path
    files: list[Checked]
    seconds: float

    @property
    def damaged(self) -> list[Checked]:
        return [c for c in self.files if c.state in ("damaged", "unreadable")]

    def document(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for checked in self.files:
            counts[checked.state] = counts.get(checked.state, 0) + 1
        return {"store": str(self.root), "seconds": round(self.seconds, 3), "counts": counts,
                "files": [vars(c) for c in self.files]}


def check_run_file(path: Path) -> Checked:
    """One run file read whole, every part (weights included, by the reader) against its digest."""
    try:
        record = read_run(path, weights=False, run_id=path.stem)
    except WorkError as err:
        return Checked(str(path), "unreadable", str(err))
    if record.damaged:
        message = "; ".join(f"{describe(part)}: {why}" for part, why in record.damaged.items())
        return Checked(str(path), "damaged", message, dict(record.damaged))
    if not record.verified:
        return Checked(str(path), "unverified", "written before digests (`audit verify --upgrade` adds them)")
    return Checked(str(path), "verified")


def upgrade_run_file(path: Path) -> Checked:
    """Rewrite an unverified (older schema) run file with the digests of its parts, under its lock; the file
    is reread under the lock so that nothing another process wrote meanwhile is lost."""
    try:
        with run_lock_waiting(path, UPGRADE_WAIT_SECONDS):
            record = read_run(path, weights=True, run_id=path.stem)
            if record.damaged or record.verified:
                return check_run_file(path)
            write_run(path, record, "upgrade")
    except RunLocked as err:
        return Checked(str(path), "unverified", f"not upgraded now, {err}")
    except WorkError as err:
        return Checked(str(path), "unreadable", str(err))
    return Checked(str(path), "upgraded", "digests added")


def leftovers(store: Store) -> list[Checked]:
    """Files in runs/ that are not run files: set aside, temporary or lock files (reported, never damage)."""
    out = []
    for path in sorted(store.runs_dir.iterdir()):
        if path.suffix == ".h5":
            continue
        if ".h5.corrupt" in path.name:
            out.append(Checked(str(path), "set aside", "a damaged file `audit run` moved aside; delete it "
                                                              "once you no longer need it"))
        elif ".tmp" in path.name or ".lock" in path.name:
            out.append(Checked(str(path), "leftover", "a temporary or lock file; removed or taken over by "
                                                          "the next write to that run"))
        else:
            out.append(Checked(str(path), "foreign", "not an audit file"))
    return out


def verify_store(root: Path | None, upgrade: bool = False) -> Verified:
    """Check every file of the store (the latest under ./audit-runs when None): every run file part by part,
    experiment.json's shape, and what else runs/ holds. With upgrade, unverified run files get digests."""
    start = time.perf_counter()
    store = open_store(root)
    if upgrade:
        check_writable(store.runs_dir)
    files = []
    try:
        store.read_experiment()
        if store.experiment_path.exists():
            files.append(Checked(str(store.experiment_path), "verified"))
    except WorkError as err:
        files.append(Checked(str(store.experiment_path), "unreadable", str(err)))
    for path in store.run_paths():
        checked = check_run_file(path)
        if upgrade and checked.state == "unverified":
            checked = upgrade_run_file(path)
        files.append(checked)
    for path in store.shared_paths():
        files.append(Checked(str(path), *store.check_shared(path, upgrade)))
    files += leftovers(store)
    return Verified(store.root, files, time.perf_counter() - start)
