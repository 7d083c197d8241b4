"""The HDF5 run file: written whole and atomically (beside, fsynced, renamed), read and migrated.

A reader never sees half a file and a killed writer leaves the last good state. Attributes that are null
are absent from the file. The schema is documented in the README.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from audit.errors import WorkError
from audit.spec.run import RunSpec
from audit.store.digests import (
    MANIFEST,
    STRUCTURE,
    Part,
    describe,
    manifest,
    plain,
)
from audit.store.locks import LOCK_STALE_SECONDS, pid_alive
from audit.store.reader import READER, ReaderFailed
from audit.store.record import ANALYSES, SCHEMA, STATUSES, WRITTEN_WITHOUT_ANALYSES, RunRecord
from audit.testhooks import pause_point


def stored_attrs(values: dict[str, Any]) -> dict[str, Any]:
    """Attribute values as the file holds them and a read gives them back: nulls absent, containers as JSON
    text, str subclasses (torch's version string) as str, numpy scalars as Python numbers."""
    out = {}
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, (dict, list, tuple)):
            value = json.dumps(value)
        elif isinstance(value, str):
            value = str(value)
        out[key] = plain(value)
    return out


def _stored_arrays(arrays: dict[str, Any]) -> dict[str, np.ndarray]:
    return {name: np.asarray(array) for name, array in arrays.items()}


def record_parts(record: RunRecord) -> dict[str, Part]:
    """The parts of the file that holds record (audit.store.digests), as a read gives them back."""
    root = {k: v for k, v in record.attrs.items() if k not in ("weights_sha256", "schema", MANIFEST)}
    parts: dict[str, Part] = {
        "attrs": (stored_attrs({**root, "run_id": record.run_id, "spec": record.spec.canonical(),
                                 "status": record.status, "fitted": bool(record.fitted)}), {}),
        "data": (stored_attrs({k: v for k, v in record.data.items() if not isinstance(v, np.ndarray)}),
                 _stored_arrays({k: v for k, v in record.data.items() if isinstance(v, np.ndarray)})),
        "weights": ({}, {}), "weights/init": ({}, _stored_arrays(record.init)),
        "weights/final": ({}, _stored_arrays(record.final)), "history": ({}, _stored_arrays(record.history)),
        "measures": ({}, {}),
    }
    if record.kept:
        parts["weights/kept"] = ({}, {})
    for tag, point in record.kept.items():
        parts[f"weights/kept/{tag}"] = (stored_attrs(point["attrs"]), _stored_arrays(point["weights"]))
    if record.resume is not None:
        parts["resume"] = ({}, {"state": np.void(record.resume)})
    for name, entry in record.analyses.items():
        if name not in ANALYSES:
            raise ValueError(f"unknown analysis part {name!r}: one of {', '.join(ANALYSES)}")
        parts[name] = (stored_attrs(entry["attrs"]), _stored_arrays(entry["arrays"]))
        if "/" in name:  # its group's container, an empty part like weights/kept
            parts[name.split("/")[0]] = ({}, {})
    for name, entry in record.measures.items():
        parts[f"measures/{name}"] = (stored_attrs({k: v for k, v in entry.items() if k != "detail"}),
                                     _stored_arrays(entry.get("detail", {})))
    return parts


def _write_part(group: h5py.Group, part: Part) -> None:
    attrs, arrays = part
    for key, value in attrs.items():
        group.attrs[key] = value
    for name, array in arrays.items():
        if isinstance(array, np.ndarray) and array.dtype == object:  # strings (layer names)
            array = array.astype(h5py.string_dtype())
        group.create_dataset(name, data=array)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BadRunFile(WorkError):
    """A run file that cannot be used: `problem` says what is wrong, the message adds the fix."""

    def __init__(self, problem: str, fix: str = "`audit run` retrains the run") -> None:
        super().__init__(f"{problem}; {fix}")
        self.problem = problem


class NewerSchema(WorkError):
    """A run file written by a newer audit: refused, never renamed or retrained."""


class DiskFull(WorkError):
    """No space left: the whole command stops, the store as it was."""


def remove_dead_temporaries(path: Path) -> None:
    """Remove the temporary files NAME.tmpPID that killed writers of path left: their PID is dead on this host,
    or they are older than a stale lock (a writer on another host)."""
    for tmp in path.parent.glob(f"{glob.escape(path.name)}.tmp*"):
        pid = tmp.name.removeprefix(f"{path.name}.tmp")
        try:
            old = time.time() - tmp.stat().st_mtime > LOCK_STALE_SECONDS
            if pid.isdigit() and int(pid) != os.getpid() and (old or not pid_alive(int(pid))):
                tmp.unlink()
        except OSError:
            pass  # gone already, or not ours to remove: the write itself says if the store is unwritable


def check_writable(folder: Path) -> None:
    """One WorkError naming the folder and the reason when a file cannot be created, written and synced in
    it (a read-only mount, missing permissions, a full disk), before any work is done."""
    probe = folder / f".write-probe{os.getpid()}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        reason = "no space left on the device" if err.errno == errno.ENOSPC else (err.strerror or str(err))
        raise WorkError(f"the store cannot be written: {folder}: {reason}; make it writable or choose another "
                        "store (nothing was done)") from None
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass


def atomic_replace(path: Path, write: Any, stage: str = "file") -> None:
    """Call write(tmp_path), fsync the result and rename it over path: readers see the old file or the new one.
    Temporary files of dead writers of the same path are removed first."""
    remove_dead_temporaries(path)
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
    """Replace the run file at path with record, atomically (stage names the write for the kill tests), with
    the digest of every part in its manifest."""
    parts = record_parts(record)

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            for name, part in parts.items():
                _write_part(f if name == "attrs" else f.require_group(name), part)
            f.attrs["schema"] = SCHEMA if record.analyses else WRITTEN_WITHOUT_ANALYSES
            f.attrs[MANIFEST] = manifest(parts)

    atomic_replace(path, write, stage)
    record.path = path
    record.verified, record.damaged = True, {}


def check_regular(path: Path) -> None:
    """Refuse, before opening it, anything at path that is not a regular file (a FIFO would hang the reader)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise WorkError(f"{path} does not exist") from None
    except OSError as err:
        raise WorkError(f"{path} cannot be read ({err.strerror}); check its permissions") from None
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
        raise BadRunFile(f"{path} is {kind}, not a run file", "move it out of the store")


def read_run(path: Path, weights: bool = True, run_id: str | None = None) -> RunRecord:
    """Read a run file and check every part against its digest. A file that cannot be read, is foreign, from
    a newer schema, has damaged attributes, or (with run_id) holds another run raises WorkError naming it;
    other damaged parts are listed in record.damaged (part → what is wrong) and left out of the record.
    Without `weights` the weights are verified but not kept."""
    check_regular(path)
    try:
        decoded = READER.read(path, weights)
    except ReaderFailed as err:
        raise BadRunFile(f"{path} is unreadable or corrupt ({err})") from None
    except OSError as err:
        raise BadRunFile(f"{path} cannot be read ({err.strerror or err})") from None
    if decoded[0] != "ok":
        raise BadRunFile(f"{path} is unreadable or corrupt ({decoded[1]})")
    _, schema, verified, damaged, parts = decoded
    try:
        return _record(path, schema, verified, damaged, parts, weights, run_id)
    except WorkError:
        raise
    except Exception as err:  # a part of the wrong type or shape: the file is damaged, not the program
        raise BadRunFile(f"{path} is corrupt ({type(err).__name__}: {err})") from None


def _record(path: Path, schema: Any, verified: bool, damaged: dict[str, str], parts: dict[str, Part],
            weights: bool, run_id: str | None) -> RunRecord:
    attrs = dict(parts["attrs"][0])
    if schema is None or "spec" not in attrs:
        raise BadRunFile(f"{path} is not an audit run file (no schema or spec attribute)", "move it out of the store")
    if int(schema) > SCHEMA:
        raise NewerSchema(f"{path} has schema {schema}, newer than this audit reads ({SCHEMA}); upgrade audit to "
                          "read it (if no newer audit wrote it, the file is damaged)")
    if "attrs" in damaged or any(part in STRUCTURE for part in damaged):
        part = "attrs" if "attrs" in damaged else next(p for p in damaged if p in STRUCTURE)
        raise BadRunFile(f"{path} is damaged: {describe(part)} ({damaged[part]})")
    spec = RunSpec.from_dict(json.loads(attrs.pop("spec")))
    if spec.run_id != attrs.get("run_id"):
        raise BadRunFile(f"{path}: the stored spec does not hash to its run id (the file was altered)")
    if run_id is not None and spec.run_id != run_id:
        raise BadRunFile(f"{path} holds run {spec.run_id}, not run {run_id} (a run file copied or moved over "
                         "another's name)", "move it out of the store")
    status, fitted = attrs.pop("status"), bool(attrs.pop("fitted"))
    if status not in STATUSES:
        raise BadRunFile(f"{path} has an unknown status '{status}' (the file is damaged)")

    def usable(name: str) -> bool:
        return name in parts and name not in damaged

    data_attrs, data_arrays = parts["data"] if usable("data") else ({}, {})
    record = RunRecord(spec=spec, status=status, fitted=fitted, attrs={**attrs, "schema": int(schema)},
                       data={**data_attrs, **data_arrays}, path=path, verified=verified, damaged=damaged)
    record.history = parts["history"][1] if usable("history") else {}
    for name, (entry_attrs, detail) in parts.items():
        if name.startswith("measures/") and usable(name):
            record.measures[name.removeprefix("measures/")] = {**entry_attrs, **({"detail": detail} if detail else {})}
        elif name.startswith("weights/kept/") and usable(name):
            record.kept[name.removeprefix("weights/kept/")] = {"attrs": entry_attrs, "weights": detail}
        elif name in ANALYSES and usable(name):
            record.analyses[name] = {"attrs": entry_attrs, "arrays": detail}
    if weights:
        record.init = parts["weights/init"][1] if usable("weights/init") else {}
        record.final = parts["weights/final"][1] if usable("weights/final") else {}
        if usable("resume"):
            record.resume = parts["resume"][1]["state"].tobytes()
    migrate(record, int(schema))
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
