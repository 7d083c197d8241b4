"""The HDF5 run store: a directory with experiment.json and one file per run under runs/.

A run file is always replaced whole and atomically (written beside, fsynced, renamed), so a reader
never sees half a file and a killed writer leaves the last good state. Attributes that are null are
absent from the file. The schema is documented in the README.
"""

from __future__ import annotations

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

SCHEMA = 1
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


def atomic_replace(path: Path, write: Any) -> None:
    """Call write(tmp_path), fsync the result and rename it over path."""
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise WorkError(f"could not write {path}: {err.strerror or err}; the previous file is unchanged") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_run(path: Path, record: RunRecord) -> None:
    """Replace the run file at path with record, atomically."""

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            _set_attrs(f, {
                "schema": SCHEMA, "run_id": record.run_id, "spec": record.spec.canonical(),
                "status": record.status, "fitted": bool(record.fitted),
                "weights_sha256": weights_checksum(record.final) if record.final else None,
                **record.attrs,
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

    atomic_replace(path, write)
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
    except WorkError:
        raise
    except (OSError, KeyError, ValueError, json.JSONDecodeError) as err:
        raise WorkError(f"{path} is unreadable or corrupt ({type(err).__name__}: {err}); "
                        "`audit run` retrains the run") from None
    if spec.run_id != attrs.get("run_id"):
        raise WorkError(f"{path}: the stored spec does not hash to its run id; the file was altered")
    return record


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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


LOCK_STALE_SECONDS = 600.0


def _lock_is_stale(info: dict[str, Any]) -> bool:
    if info.get("host") == socket.gethostname():
        return not _pid_alive(int(info.get("pid", -1)))
    return time.time() - float(info.get("heartbeat", 0)) > LOCK_STALE_SECONDS


@contextmanager
def run_lock(path: Path) -> Iterator[Path]:
    """Hold the lock file beside a run file; raise RunLocked if a live process holds it."""
    lock = path.with_suffix(".lock")
    info = {"owner": os.environ.get("USER", "?"), "pid": os.getpid(), "host": socket.gethostname(),
            "started": time.time(), "heartbeat": time.time()}
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                held = json.loads(lock.read_text() or "{}")
            except (OSError, json.JSONDecodeError):
                held = {}
            if held and not _lock_is_stale(held):
                raise RunLocked(f"{path.name} is held by pid {held.get('pid')} on {held.get('host')}") from None
            if not held and time.time() - lock.stat().st_mtime < 5:
                raise RunLocked(f"{path.name} is being locked by another process") from None
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as handle:
            json.dump(info, handle)
        break
    else:
        raise RunLocked(f"could not take the lock of {path.name}")
    try:
        yield lock
    finally:
        lock.unlink(missing_ok=True)


def touch_lock(lock: Path) -> None:
    """Refresh the heartbeat of a held lock."""
    try:
        info = json.loads(lock.read_text())
        info["heartbeat"] = time.time()
        lock.write_text(json.dumps(info))
    except (OSError, json.JSONDecodeError):
        pass


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
