"""Run locks: one writer per run file, across processes and hosts, with heartbeats and stale-lock takeover."""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from audit.errors import WorkError
from audit.store.regular import read_regular_text


class RunLocked(Exception):
    """Another live process holds the run."""


class LockUnwritable(WorkError):
    """The lock cannot be created: the store is not writable."""

LOCK_STALE_SECONDS = 600.0  # a lock from another host whose heartbeat is older than this is stale


def pid_alive(pid: int) -> bool:
    """Whether a process of this PID runs on this host (PIDs below 1 name none)."""
    if pid < 1:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lock_is_stale(info: dict[str, Any]) -> bool:
    if not isinstance(info, dict):
        return True
    try:
        if info.get("host") == socket.gethostname():
            return not pid_alive(int(info.get("pid", -1)))
        return time.time() - float(info.get("heartbeat", 0)) > LOCK_STALE_SECONDS
    except (TypeError, ValueError):  # garbage in the lock: no live holder wrote it
        return True


def _read_lock(lock: Path) -> dict[str, Any] | None:
    """The lock's record; None when there is no lock, {} when it is empty or garbage (never written by a live
    holder: locks appear whole)."""
    try:
        info = json.loads(read_regular_text(lock))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


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


def _create(lock: Path, info: dict[str, Any]) -> bool:
    """Create the lock file whole (written beside and hard-linked into place, so that no reader ever sees it
    empty or half written); False if it exists. A store that cannot be written raises LockUnwritable."""
    draft = lock.with_name(f"{lock.name}.new{os.getpid()}")
    try:
        draft.write_text(json.dumps(info))
        try:
            os.link(draft, lock)
        except FileExistsError:
            return False
        except OSError as err:
            if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # no hard links here: create in place
            with os.fdopen(fd, "w") as handle:
                handle.write(json.dumps(info))
        return True
    except FileExistsError:
        return False
    except OSError as err:
        raise LockUnwritable(f"cannot write the lock {lock}: {err.strerror or err}; the store must be writable "
                             "(check its permissions, mount and free space)") from None
    finally:
        draft.unlink(missing_ok=True)


@contextmanager
def run_lock(path: Path) -> Iterator[Path]:
    """Hold the lock file beside a run file; raise RunLocked if a live process holds it. A lock records the
    owner's host, PID and heartbeat. An empty or unreadable lock, one whose owner on this host is dead, or
    one from another host whose heartbeat is older than LOCK_STALE_SECONDS is taken over at once."""
    lock = path.with_suffix(".lock")
    info = {"owner": os.environ.get("USER", "?"), "pid": os.getpid(), "host": socket.gethostname(),
            "started": time.time(), "heartbeat": time.time()}
    for _ in range(3):
        if _create(lock, info):
            break
        held = _read_lock(lock)
        if held is None:
            continue
        if held and not _lock_is_stale(held):
            beat = held.get("heartbeat")
            age = f"heartbeat {time.time() - beat:.0f} s ago" if isinstance(beat, (int, float)) else "no heartbeat"
            raise RunLocked(f"{path.name} is held by pid {held.get('pid')} on {held.get('host')} ({age})")
        _take_over(lock, held)
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
