"""The HDF5 run store: a directory with experiment.json and one file per run under runs/.

A run file is always replaced whole and atomically (written beside, fsynced, renamed), so a reader
never sees half a file and a killed writer leaves the last good state. Attributes that are null are
absent from the file. The schema is documented in the README.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from audit.errors import UsageError, WorkError
from audit.spec import RunSpec
from audit.testhooks import pause_point

SCHEMA = 2  # 1: first release; 2: train_size/test_size attributes and weights/kept (schema 1 is migrated on read)
STATUSES = ("running", "complete", "diverged")
DEFAULT_ROOT = Path("audit-runs")


@dataclass
class RunRecord:
    """Everything a run file holds, in memory."""

    spec: RunSpec
    status: str = "running"
    fitted: bool = False
    attrs: dict[str, Any] = field(default_factory=dict)  # timings, versions, outcome summary
    data: dict[str, Any] = field(default_factory=dict)  # what regenerates the fitted data
    init: dict[str, np.ndarray] = field(default_factory=dict)
    final: dict[str, np.ndarray] = field(default_factory=dict)
    history: dict[str, np.ndarray] = field(default_factory=dict)
    resume: bytes | None = None
    measures: dict[str, dict[str, Any]] = field(default_factory=dict)
    kept: dict[str, dict[str, Any]] = field(default_factory=dict)  # tag → {"attrs": {...}, "weights": {...}}
    path: Path | None = None

    @property
    def run_id(self) -> str:
        return self.spec.run_id


def weights_checksum(weights: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(weights):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(weights[name]).tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------- files

def _set_attrs(target: h5py.HLObject, values: dict[str, Any]) -> None:
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, (dict, list, tuple)):
            value = json.dumps(value)
        elif isinstance(value, str):
            value = str(value)  # str subclasses (torch's version string) have no HDF5 type
        target.attrs[key] = value


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _write_arrays(group: h5py.Group, arrays: dict[str, np.ndarray]) -> None:
    for name, array in arrays.items():
        array = np.asarray(array)
        if array.dtype == object:  # strings (layer names)
            array = array.astype(h5py.string_dtype())
        group.create_dataset(name, data=array)


def _read_arrays(group: h5py.Group) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    group.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DiskFull(WorkError):
    """No space left: the whole command stops, the store as it was."""


def atomic_replace(path: Path, write: Any, stage: str = "file") -> None:
    """Call write(tmp_path), fsync the result and rename it over path: readers see the old file or the new one."""
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        pause_point(f"write:{stage}")
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.errno == errno.ENOSPC:
            raise DiskFull(f"no space left on the device writing {path}: free some space and rerun; the store "
                           "is as it was before this write") from None
        raise WorkError(f"could not write {path}: {err.strerror or err}; the previous file is unchanged") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_run(path: Path, record: RunRecord, stage: str = "result") -> None:
    """Replace the run file at path with record, atomically (stage names the write for the kill tests)."""

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            _set_attrs(f, {
                **record.attrs,  # first: the fields below are always recomputed
                "schema": SCHEMA, "run_id": record.run_id, "spec": record.spec.canonical(),
                "status": record.status, "fitted": bool(record.fitted),
                "weights_sha256": weights_checksum(record.final) if record.final else None,
            })
            data = f.create_group("data")
            _set_attrs(data, {k: v for k, v in record.data.items() if not isinstance(v, np.ndarray)})
            _write_arrays(data, {k: v for k, v in record.data.items() if isinstance(v, np.ndarray)})
            _write_arrays(f.create_group("weights/init"), record.init)
            _write_arrays(f.create_group("weights/final"), record.final)
            _write_arrays(f.create_group("history"), record.history)
            for tag, point in record.kept.items():
                group = f.create_group(f"weights/kept/{tag}")
                _set_attrs(group, point["attrs"])
                _write_arrays(group, point["weights"])
            if record.resume is not None:
                f.create_group("resume").create_dataset("state", data=np.void(record.resume))
            group = f.create_group("measures")
            for name, entry in record.measures.items():
                sub = group.create_group(name)
                _set_attrs(sub, {k: v for k, v in entry.items() if k != "detail"})
                _write_arrays(sub, entry.get("detail", {}))

    atomic_replace(path, write, stage)
    record.path = path


def read_run(path: Path, weights: bool = True) -> RunRecord:
    """Read a run file; a missing, foreign or corrupt file raises WorkError naming it."""
    try:
        with h5py.File(path, "r") as f:
            attrs = {k: _plain(v) for k, v in f.attrs.items()}
            if "schema" not in attrs or "spec" not in attrs:
                raise WorkError(f"{path} is not an audit run file (no schema or spec attribute)")
            if int(attrs["schema"]) > SCHEMA:
                raise WorkError(f"{path} has schema {attrs['schema']}, newer than this audit reads ({SCHEMA}); "
                                "upgrade audit to read it")
            spec = RunSpec.from_dict(json.loads(attrs.pop("spec")))
            status, fitted = attrs.pop("status"), bool(attrs.pop("fitted"))
            data = {k: _plain(v) for k, v in f["data"].attrs.items()}
            data.update(_read_arrays(f["data"]))
            record = RunRecord(spec=spec, status=status, fitted=fitted, attrs=attrs, data=data,
                               history=_read_arrays(f["history"]), path=path)
            for name, group in f["measures"].items():
                entry = {k: _plain(v) for k, v in group.attrs.items()}
                detail = _read_arrays(group)
                if detail:
                    entry["detail"] = detail
                record.measures[name] = entry
            if weights:
                record.init = _read_arrays(f["weights/init"])
                record.final = _read_arrays(f["weights/final"])
                if "resume" in f:
                    record.resume = f["resume/state"][()].tobytes()
                expected = attrs.get("weights_sha256")
                if expected and weights_checksum(record.final) != expected:
                    raise WorkError(f"{path}: the final weights do not match their checksum; the file is "
                                    "corrupt (`audit run` retrains the run)")
            for tag, group in f.get("weights/kept", {}).items():
                record.kept[tag] = {"attrs": {k: _plain(v) for k, v in group.attrs.items()},
                                    "weights": _read_arrays(group) if weights else {}}
            migrate(record, int(attrs["schema"]))
    except WorkError:
        raise
    except (OSError, KeyError, ValueError, json.JSONDecodeError) as err:
        raise WorkError(f"{path} is unreadable or corrupt ({type(err).__name__}: {err}); "
                        "`audit run` retrains the run") from None
    if spec.run_id != attrs.get("run_id"):
        raise WorkError(f"{path}: the stored spec does not hash to its run id; the file was altered")
    return record


def migrate(record: RunRecord, schema: int) -> None:
    """Bring a record read from an older schema up to SCHEMA in memory; the next write stores it as SCHEMA."""
    if schema < 2:
        labels = record.data.get("train_labels")
        record.attrs.setdefault("train_size", None if labels is None else int(len(labels)))
        test_index = record.data.get("base_test_index")
        if test_index is not None:
            record.attrs.setdefault("test_size", int(len(test_index)))
    record.attrs["schema"] = SCHEMA


def pack_state(state: Any) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def unpack_state(blob: bytes) -> Any:
    import torch

    return torch.load(io.BytesIO(blob), weights_only=False)


# ---------------------------------------------------------------- locks

class RunLocked(Exception):
    """Another live process holds the run."""


LOCK_STALE_SECONDS = 600.0  # a lock from another host whose heartbeat is older than this is stale


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lock_is_stale(info: dict[str, Any]) -> bool:
    if info.get("host") == socket.gethostname():
        return not _pid_alive(int(info.get("pid", -1)))
    return time.time() - float(info.get("heartbeat", 0)) > LOCK_STALE_SECONDS


def _read_lock(lock: Path) -> dict[str, Any] | None:
    try:
        return json.loads(lock.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError):
        return {}


def _take_over(lock: Path, seen: dict[str, Any]) -> None:
    """Remove a stale lock only if it is still the one judged stale: move it aside atomically and check."""
    aside = lock.with_name(f"{lock.name}.stale{os.getpid()}")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        return  # another process took it over first
    if _read_lock(aside) == seen:
        aside.unlink(missing_ok=True)
    else:  # a fresh lock was created in between: put it back unless yet another one appeared
        try:
            os.link(aside, lock)
        except FileExistsError:
            pass
        aside.unlink(missing_ok=True)


@contextmanager
def run_lock(path: Path) -> Iterator[Path]:
    """Hold the lock file beside a run file (created with O_EXCL: atomic on local file systems and NFSv3+);
    raise RunLocked if a live process holds it. A stale lock (dead pid on this host, or a heartbeat older than
    LOCK_STALE_SECONDS from another host) is taken over."""
    lock = path.with_suffix(".lock")
    info = {"owner": os.environ.get("USER", "?"), "pid": os.getpid(), "host": socket.gethostname(),
            "started": time.time(), "heartbeat": time.time()}
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            held = _read_lock(lock)
            if held is None:
                continue
            if not held:  # being written right now, or garbage
                if time.time() - lock.stat().st_mtime < 30:
                    raise RunLocked(f"{path.name} is being locked by another process") from None
            elif not _lock_is_stale(held):
                age = time.time() - float(held.get("heartbeat", 0))
                raise RunLocked(f"{path.name} is held by pid {held.get('pid')} on {held.get('host')} "
                                f"(heartbeat {age:.0f} s ago)") from None
            _take_over(lock, held)
            continue
        with os.fdopen(fd, "w") as handle:
            json.dump(info, handle)
        break
    else:
        raise RunLocked(f"could not take the lock of {path.name}")
    try:
        yield lock
    finally:
        if (_read_lock(lock) or {}).get("pid") == os.getpid():
            lock.unlink(missing_ok=True)


def touch_lock(lock: Path) -> None:
    """Refresh the heartbeat of a held lock (replaced atomically, so readers never see half of it)."""
    info = _read_lock(lock)
    if not info or info.get("pid") != os.getpid():
        return
    info["heartbeat"] = time.time()
    tmp = lock.with_name(f"{lock.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(info))
        os.replace(tmp, lock)
    except OSError:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------- stores

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
