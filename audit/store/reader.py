"""Decoding run files in a separate reader process, so that no file can crash or hang the command.

HDF5 trusts the metadata of a file it opens: one flipped byte in an attribute's datatype message made h5py
crash the process with a segmentation fault (seen in the byte-flip tests), beyond any `except`. So a small
process that imports only h5py and numpy decodes every run file and sends its parts back pickled. If it dies
or stops answering, that file is named as unreadable and a fresh reader serves the next file. The reader is
started on the first read (about 0.2 s) and serves the rest of the command.
"""

from __future__ import annotations

import atexit
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

from audit.store.digests import MANIFEST, plain, read_parts

BASE_SECONDS = 60.0  # a reader that has not answered in this long (plus time for the file's size) is hung
BYTES_PER_SECOND = 50e6


class ReaderFailed(Exception):
    """The reader process died or hung decoding a file."""


def decode(path: str) -> tuple[Any, ...]:
    """What a run file holds, as plain values: ('ok', schema, manifest, parts) or ('error', what h5py raised)."""
    try:
        with h5py.File(path, "r") as f:
            return "ok", plain(f.attrs.get("schema")), plain(f.attrs.get(MANIFEST)), read_parts(f)
    except Exception as err:  # anything h5py raises on a damaged file is that file's error
        return "error", f"{type(err).__name__}: {err}"


def serve() -> None:
    """The reader's loop: a length-prefixed path in on stdin, a length-prefixed pickle out on stdout."""
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    while header := source.read(8):
        path = os.fsdecode(source.read(int.from_bytes(header, "little")))
        payload = pickle.dumps(decode(path), protocol=pickle.HIGHEST_PROTOCOL)
        sink.write(len(payload).to_bytes(8, "little") + payload)
        sink.flush()


class Reader:
    """The command's reader process, started on first use and restarted after a failure."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.lock = threading.Lock()

    def _start(self) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        return subprocess.Popen([sys.executable, "-c", "from audit.store.reader import serve; serve()"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)

    def _receive(self, count: int, deadline: float) -> bytes:
        assert self.process is not None and self.process.stdout is not None
        chunks, fd = [], self.process.stdout.fileno()
        while count:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise ReaderFailed(f"decoding it did not finish in {BASE_SECONDS:.0f} s")
            chunk = os.read(fd, min(count, 1 << 20))
            if not chunk:
                code = self.process.wait()
                raise ReaderFailed(f"decoding it crashed the HDF5 library (signal {-code})" if code < 0
                                   else f"decoding it stopped the reader (exit {code})")
            chunks.append(chunk)
            count -= len(chunk)
        return b"".join(chunks)

    def read(self, path: Path) -> tuple[Any, ...]:
        with self.lock:
            if self.process is None or self.process.poll() is not None:
                self.process = self._start()
            deadline = time.monotonic() + BASE_SECONDS + path.stat().st_size / BYTES_PER_SECOND
            name = os.fsencode(os.path.abspath(path))  # the reader keeps the directory it started in
            try:
                assert self.process.stdin is not None
                self.process.stdin.write(len(name).to_bytes(8, "little") + name)
                self.process.stdin.flush()
                size = int.from_bytes(self._receive(8, deadline), "little")
                return pickle.loads(self._receive(size, deadline))
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
