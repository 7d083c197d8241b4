"""Run locks: one writer per run file, across processes and hosts, with heartbeats and stale-lock takeover."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any


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


@contextmanager
def run_lock_waiting(path: Path, wait_seconds: float, poll_seconds: float = 0.2) -> Iterator[Path]:
    """run_lock, waiting up to wait_seconds for another live holder to let go; RunLocked after that."""
    deadline = time.monotonic() + wait_seconds
    while True:
        stack = ExitStack()
        try:
            lock = stack.enter_context(run_lock(path))
            break
        except RunLocked:
            if time.monotonic() > deadline:
                raise
            time.sleep(poll_seconds)
    with stack:
        yield lock
