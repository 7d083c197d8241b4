"""Decoding run files in a separate reader process, so that no file can crash or hang the command.

HDF5 trusts the metadata of a file it opens: one flipped byte in an attribute's datatype message made h5py
crash the process with a segmentation fault (seen in the byte-flip tests), beyond any `except`. So a small
process that imports only h5py and numpy decodes every run file and sends its parts back pickled. If it dies
or stops answering, that file is named as unreadable and a fresh reader serves the next file. The reader is
started on the first read (about 0.2 s) and serves the rest of the command.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import pickle
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import h5py

from audit.store.digests import MANIFEST, plain, read_parts, verify_parts

BASE_SECONDS = 60.0  # a reader that has not answered in this long (plus time for the file's size) is hung
BYTES_PER_SECOND = 50e6


class ReaderFailed(Exception):
    """The reader process died or hung decoding a file."""


def decode(path: str, weights: bool = True) -> tuple[Any, ...]:
    """A run file decoded and checked: ('ok', schema, has_manifest, damaged parts, parts), the weights and
    resume state left out of parts unless asked for (they are checked either way); or ('error', what h5py or
    the check raised)."""
    try:
        with h5py.File(path, "r") as f:
            schema, stored = plain(f.attrs.get("schema")), plain(f.attrs.get(MANIFEST))
            parts = read_parts(f)
        damaged = verify_parts(parts, schema, stored)
    except Exception as err:  # anything h5py raises on a damaged file is that file's error
        return "error", f"{type(err).__name__}: {err}"
    if not weights:
        parts = {name: (attrs, {} if name.startswith(("weights/", "resume")) else arrays)
                 for name, (attrs, arrays) in parts.items()}
    return "ok", schema, stored is not None, damaged, parts


def _send(sink: Any, message: Any) -> None:
    """A pickle and its out-of-band buffers (array data, not copied into the pickle), each length-prefixed."""
    buffers: list[pickle.PickleBuffer] = []
    payload = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
    sink.write(len(payload).to_bytes(8, "little") + len(buffers).to_bytes(8, "little") + payload)
    for buffer in buffers:
        raw = buffer.raw()
        sink.write(raw.nbytes.to_bytes(8, "little"))
        sink.write(raw)
    sink.flush()


def serve() -> None:
    """The reader's loop: a request (weights flag, length-prefixed path) on stdin, the answer on stdout."""
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    while header := source.read(9):
        path = os.fsdecode(source.read(int.from_bytes(header[1:], "little")))
        _send(sink, decode(path, weights=header[0] == 1))


class Reader:
    """The command's reader process, started on first use and restarted after a failure."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.lock = threading.Lock()

    def _start(self) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        process = subprocess.Popen([sys.executable, "-c", "from audit.store.reader import serve; serve()"],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        try:  # a 1 MiB pipe instead of 64 KiB: a large file's weights in fewer, larger reads (Linux)
            fcntl.fcntl(process.stdout.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
        except OSError:
            pass
        return process

    def _receive(self, count: int, deadline: float) -> bytearray:
        """count bytes from the reader, read straight into one buffer; ReaderFailed if it dies or hangs."""
        assert self.process is not None and self.process.stdout is not None
        fd, out = self.process.stdout.fileno(), bytearray(count)
        view, filled = memoryview(out), 0
        while filled < count:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise ReaderFailed(f"decoding it did not finish in {BASE_SECONDS:.0f} s")
            got = os.readv(fd, [view[filled:]])
            if not got:
                code = self.process.wait()
                raise ReaderFailed(f"decoding it crashed the HDF5 library (signal {-code})" if code < 0
                                   else f"decoding it stopped the reader (exit {code})")
            filled += got
        return out

    def read(self, path: Path, weights: bool = True) -> tuple[Any, ...]:
        """decode(path, weights), done by the reader process."""
        with self.lock:
            if self.process is None or self.process.poll() is not None:
                self.process = self._start()
            deadline = time.monotonic() + BASE_SECONDS + path.stat().st_size / BYTES_PER_SECOND
            name = os.fsencode(os.path.abspath(path))  # the reader keeps the directory it started in
            try:
                assert self.process.stdin is not None
                self.process.stdin.write(bytes([weights]) + len(name).to_bytes(8, "little") + name)
                self.process.stdin.flush()
                header = self._receive(16, deadline)
                size, count = int.from_bytes(header[:8], "little"), int.from_bytes(header[8:], "little")
                payload = self._receive(size, deadline)
                buffers = [self._receive(int.from_bytes(self._receive(8, deadline), "little"), deadline)
                           for _ in range(count)]
                return pickle.loads(payload, buffers=buffers)
            except (ReaderFailed, OSError) as err:
                self.process.kill()
                self.process.wait()
                self.process = None
                raise ReaderFailed(str(err) if isinstance(err, ReaderFailed) else "the reader process failed") from None

    def close(self) -> None:
        """End the reader (it also ends by itself when this process exits and its stdin closes)."""
        with self.lock:
            if self.process is not None:
                try:
                    if self.process.stdin is not None:
                        self.process.stdin.close()
                    self.process.wait(timeout=5)
                except (OSError, subprocess.TimeoutExpired):
                    self.process.kill()
                self.process = None


READER = Reader()
atexit.register(READER.close)
