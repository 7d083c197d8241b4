"""Pause points for the kill tests: a process stops at a named point so that a test can SIGKILL it there.

Set AUDIT_PAUSE_AT="point:count" and AUDIT_PAUSE_MARK=FILE: the count-th time the process reaches `point`
it creates FILE and sleeps until killed. Unset (always, outside the tests), a pause point costs two lookups.
Set AUDIT_MEET_AT="point:count", AUDIT_MEET_DIR=DIR and AUDIT_MEET_COUNT=N in several processes: the count-th
time each reaches `point` it leaves its pid in DIR and waits (at most 60 s) until N processes have, so that a
test of concurrent processes does not hang on which one the scheduler ran first.
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
    if os.environ.get("AUDIT_MEET_AT"):
        _meet(name)
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


def _meet(name: str) -> None:
    point, _, count = os.environ["AUDIT_MEET_AT"].rpartition(":")
    if point != name:
        return
    key = f"meet:{name}"
    _counts[key] = _counts.get(key, 0) + 1
    if _counts[key] != int(count):
        return
    folder = Path(os.environ["AUDIT_MEET_DIR"])
    (folder / str(os.getpid())).write_text("")
    deadline = time.monotonic() + 60
    while len(list(folder.iterdir())) < int(os.environ["AUDIT_MEET_COUNT"]) and time.monotonic() < deadline:
        time.sleep(0.01)
