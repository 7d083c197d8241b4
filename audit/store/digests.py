"""Digests of a run file's parts, so that a damaged byte is found wherever the file is read.

A part is one HDF5 group: its attributes and the values of its datasets (the root group's part, "attrs",
holds the spec, status, accuracies and timings). The file keeps a manifest, the root attribute `digests`,
mapping every part to the SHA-256 of its values as read back. HDF5's Fletcher-32 filter would not do: any
write through h5py recomputes it, so an edit made with h5py would pass.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import h5py
import numpy as np

MANIFEST = "digests"  # the root attribute holding {part: sha256}
UNDIGESTED = {MANIFEST, "schema"}  # a newer schema is refused by its number alone, before any digest

Part = tuple[dict[str, Any], dict[str, np.ndarray]]  # (attributes, datasets by name)

STRUCTURE = {"weights", "measures", "weights/kept"}  # groups that only hold other parts
# the analysis parts (audit.store.record.ANALYSES) and their group, as a message names them (kept here, not
# imported: the reader process imports only h5py and numpy)
ANALYSIS_PARTS = {"landscape/line": "the cached 1D loss landscape", "landscape/plane": "the cached 2D loss landscape",
                  "density": "the cached Hessian density", "landscape": "the landscape group"}


def plain(value: Any) -> Any:
    """An attribute value as Python holds it: text for bytes, a number for a numpy scalar."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_parts(f: h5py.File) -> dict[str, Part]:
    """Every group of an open run file as a part, its datasets read whole (one visit of each object)."""
    parts: dict[str, Part] = {"attrs": ({k: plain(v) for k, v in f.attrs.items() if k not in UNDIGESTED}, {})}

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Group):
            parts[name] = ({k: plain(v) for k, v in obj.attrs.items()}, {})
        else:  # a dataset: its group was visited before it
            group, _, key = name.rpartition("/")
            parts[group or "attrs"][1][key] = obj[()]

    f.visititems(visit)
    return parts


def raw_bytes(array: np.ndarray) -> memoryview | bytes:
    """An array's bytes in C order, without a copy when it is contiguous already."""
    flat = np.ascontiguousarray(array).reshape(-1)
    return memoryview(flat.view(np.uint8)) if flat.size else b""


def _pieces(value: Any) -> list[bytes | memoryview]:
    """What a value contributes to a digest: a header naming its type (and an array's dtype and shape) and its
    bytes, without copying an array's data."""
    if isinstance(value, np.generic) and not isinstance(value, np.void):
        value = np.asarray(value)  # a scalar dataset reads back as a numpy scalar, written from a 0-d array
    if isinstance(value, np.ndarray):
        header = f"array:{value.dtype.str}:{value.shape}:".encode()
        if value.dtype == object:  # strings (layer names): each element's text
            return [header, b"\0".join(v if isinstance(v, bytes) else str(v).encode() for v in value.ravel())]
        return [header, raw_bytes(value)]
    if isinstance(value, np.void):
        return [b"void:", value.tobytes()]
    return [f"{type(value).__name__}:{value!r}".encode()]


def part_digest(part: Part) -> str:
    """SHA-256 of a part's attributes and dataset values, names, types and shapes included."""
    digest = hashlib.sha256()
    attrs, arrays = part
    for kind, items in (("attr", attrs), ("data", arrays)):
        for name in sorted(items):
            for piece in (kind.encode(), name.encode(), *_pieces(items[name])):
                digest.update(len(piece).to_bytes(8, "little"))
                digest.update(piece)
    return digest.hexdigest()


def weights_checksum(weights: dict[str, np.ndarray]) -> str:
    """The checksum schema 1 and 2 files kept of their final weights (attribute weights_sha256)."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        digest.update(name.encode())
        digest.update(raw_bytes(weights[name]))
    return digest.hexdigest()


def verify_parts(parts: dict[str, Part], schema: Any, stored: Any) -> dict[str, str]:
    """{part: what is wrong} for a file's parts: against the manifest; for a file from before digests (no
    manifest, schema below 3), its final weights against their old checksum."""
    if stored is not None:
        return damaged_parts(parts, stored)
    if schema is None:  # not an audit run file: the reader of the record says so
        return {}
    if int(schema) >= 3:
        return {"attrs": "the digest manifest is missing"}
    expected = parts["attrs"][0].get("weights_sha256")
    if expected and weights_checksum(parts.get("weights/final", ({}, {}))[1]) != expected:
        return {"weights/final": "checksum mismatch"}
    return {}


def manifest(parts: dict[str, Part]) -> str:
    """The manifest attribute of a file holding these parts."""
    return json.dumps({name: part_digest(part) for name, part in sorted(parts.items())}, sort_keys=True)


def damaged_parts(parts: dict[str, Part], stored: Any) -> dict[str, str]:
    """{part: what is wrong} for every part that does not match the stored manifest (its JSON text)."""
    try:
        expected = json.loads(stored)
    except (TypeError, ValueError):
        return {"attrs": "the digest manifest is unreadable"}
    if not isinstance(expected, dict):
        return {"attrs": "the digest manifest is unreadable"}
    damaged = {}
    for name, part in parts.items():
        if name not in expected:
            damaged[name] = "not in the digest manifest"
        elif expected[name] != part_digest(part):
            damaged[name] = "digest mismatch"
    return damaged | {name: "missing" for name in expected if name not in parts}


def damage_line(damaged: dict[str, str]) -> str:
    """The damaged parts in a few words: 'the final weights (digest mismatch); the cached measure l2 (missing)'."""
    return "; ".join(f"{describe(part)} ({why})" for part, why in damaged.items())


def damage_report(path: Any, damaged: dict[str, str]) -> str:
    """A report's line for a run with damaged parts, saying which command repairs it."""
    # not `recomputable`: a damaged analysis is, but the pipeline still retrains such a run, and the line says
    # what the commands do
    fix = ("`audit score` recomputes it" if all(part.startswith("measures/") for part in damaged)
           else "`audit run` retrains it")
    return f"{path} is damaged: {damage_line(damaged)}; left out of the statistics ({fix})"


def recomputable(part: str) -> bool:
    """Whether a part is a cached computation on the verified weights (a measure, an analysis) that its command
    computes again, rather than a part only retraining restores."""
    return part.startswith("measures/") or part in ANALYSIS_PARTS


def describe(part: str) -> str:
    """A part's name for a one-line message."""
    if part == "attrs":
        return "the attributes (spec, status, accuracies, timings)"
    if part.startswith("measures/"):
        return f"the cached measure {part.removeprefix('measures/')}"
    if part.startswith("weights/kept/"):
        return f"the weights kept at {part.removeprefix('weights/kept/')}"
    if part in STRUCTURE:
        return f"the file's structure ({part})"
    if part in ANALYSIS_PARTS:
        return ANALYSIS_PARTS[part]
    names = {"weights/init": "the init weights", "weights/final": "the final weights",
             "history": "the training history", "data": "the fitted-data record", "resume": "the resume state"}
    return names.get(part, part)
