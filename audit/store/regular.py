"""Reading small files of a store (experiment.json, locks, shared values) that might not be regular files:
a FIFO put in their place would block a plain read forever."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


def read_regular_text(path: Path) -> str:
    """The UTF-8 text of the regular file at path; FileNotFoundError when there is none, OSError (EINVAL)
    when something else is there (opened without blocking, so a FIFO cannot hang the reader)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read().decode("utf-8")
    finally:
        os.close(fd)
