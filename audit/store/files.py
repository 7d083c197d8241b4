"""The HDF5 run file: written whole and atomically (beside, fsynced, renamed), read and migrated.

A reader never sees half a file and a killed writer leaves the last good state. Attributes that are null
are absent from the file. The schema is documented in the README.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from audit.errors import WorkError
from audit.spec.run import RunSpec
from audit.store.record import SCHEMA, RunRecord, weights_checksum
from audit.testhooks import pause_point


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
