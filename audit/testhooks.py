"""Pause points for the kill tests: a process stops at a named point so that a test can SIGKILL it there.

Set AUDIT_PAUSE_AT="point:count" and AUDIT_PAUSE_MARK=FILE: the count-th time the process reaches `point`
it creates FILE and sleeps until killed. Unset (always, outside the tests), a pause point costs one lookup.
Points: mid-epoch (half-way through a training epoch), write:checkpoint, write:result, write:measures and
write:analysis
(after the temporary file is written and fsynced, before it is renamed over the run file).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

_counts: dict[str, int] = {}


def pause_point(name: str) -> None:
    target = os.environ.get("AUDIT_PAUSE_AT")
    if not target:
        return
    point, _, count = target.rpartition(":")
    if point != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] == int(count):
        Path(os.environ["AUDIT_PAUSE_MARK"]).write_text(str(os.getpid()))
        while True:
            time.sleep(3600)
