"""Refusals refuse: an unwritable store is named before any work, locks are whole and taken over only when
their owner is gone, temporary files of dead writers go at the next write."""

import errno
import json
import os
import socket
import time

import pytest
from typer.testing import CliRunner

import audit.store.files
import audit.store.locks
from audit.errors import WorkError
from audit.spec.run import RunSpec
from audit.store.files import check_writable, read_run, write_run
from audit.store.locks import LOCK_STALE_SECONDS, LockUnwritable, RunLocked, run_lock
from audit.store.record import RunRecord
from cli import app

runner = CliRunner()
TINY = ["--model", "mlp-1x16", "--train-size", "100", "--variants", "true", "--seeds", "1", "--epochs", "1"]


def fail_writes_in(monkeypatch, folder, code):
    """Every file created in folder fails with the errno code, as on a read-only mount or a full disk."""
    real_open = os.open

    def refusing(path, flags, *args, **kwargs):
        if str(path).startswith(str(folder)) and flags & os.O_CREAT:
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(audit.store.files.os, "open", refusing)


@pytest.mark.parametrize("code, reason", [(errno.EROFS, "Read-only file system"),
                                          (errno.EACCES, "Permission denied"),
                                          (errno.ENOSPC, "no space left on the device")])
def test_a_store_that_cannot_be_written_is_named_before_any_work(tmp_path, monkeypatch, code, reason):
    store = tmp_path / "s"
    assert runner.invoke(app, ["run", *TINY, "--measure", "l2", "--out", str(store)]).exit_code == 0
    before = {p.name: p.read_bytes() for p in (store / "runs").iterdir()}
    fail_writes_in(monkeypatch, store, code)
    for args in (["score", str(store), "--measure", "params"], ["run", *TINY, "--seeds", "2", "--out", str(store)],
                 ["verify", str(store), "--upgrade"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 1, (args, result.output)
        lines = result.stderr.strip().splitlines()
        assert lines == [f"audit: failed: the store cannot be written: {store / 'runs'}: {reason}; make it "
                         "writable or choose another store (nothing was done)"], result.stderr
    assert {p.name: p.read_bytes() for p in (store / "runs").iterdir()} == before  # no lock, no temp file


def test_score_with_everything_cached_reads_an_unwritable_store(tmp_path, monkeypatch):
    store = tmp_path / "s"
    assert runner.invoke(app, ["run", *TINY, "--measure", "l2", "--out", str(store)]).exit_code == 0
    fail_writes_in(monkeypatch, store, errno.EROFS)
    result = runner.invoke(app, ["score", str(store), "--measure", "l2", "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["runs"][0]["measures"]["l2"] > 0


def test_a_lock_that_cannot_be_written_leaves_nothing_behind(tmp_path, monkeypatch):
    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(audit.store.locks.Path, "write_text", full)
    with pytest.raises(LockUnwritable, match="cannot write the lock .*No space left"):
        with run_lock(tmp_path / "r.h5"):
            pass
    assert list(tmp_path.iterdir()) == []


def lock_of(tmp_path, **info):
    lock = tmp_path / "r.lock"
    lock.write_text(json.dumps(info) if info else "")
    return lock


@pytest.mark.parametrize("info", [
    {},  # 0 bytes: locks appear whole, so no live writer left it
    {"pid": 999999999, "host": socket.gethostname(), "heartbeat": time.time()},  # dead on this host
    {"pid": 1, "host": "elsewhere", "heartbeat": time.time() - LOCK_STALE_SECONDS - 5},  # stale on another
    {"pid": "x", "host": socket.gethostname()},  # garbage
])
def test_abandoned_locks_are_taken_over_at_once(tmp_path, info):
    lock_of(tmp_path, **info)
    start = time.monotonic()
    with run_lock(tmp_path / "r.h5") as lock:
        held = json.loads(lock.read_text())
        assert held["pid"] == os.getpid() and held["host"] == socket.gethostname() and "heartbeat" in held
    assert time.monotonic() - start < 1 and not lock.exists()


@pytest.mark.parametrize("info", [
    {"pid": os.getppid(), "host": socket.gethostname(), "heartbeat": 0},  # alive on this host
    {"pid": 1, "host": "elsewhere", "heartbeat": None},  # a fresh heartbeat from another host (set below)
])
def test_live_locks_are_respected(tmp_path, info):
    info = {**info, "heartbeat": time.time() if info["heartbeat"] is None else info["heartbeat"]}  # now, not at
    lock = lock_of(tmp_path, **info)  # collection: a long suite would make it stale
    with pytest.raises(RunLocked, match=f"held by pid {info['pid']} on {info['host']}"):
        with run_lock(tmp_path / "r.h5"):
            pass
    assert json.loads(lock.read_text()) == info


def test_temporary_files_of_dead_writers_go_at_the_next_write(tmp_path):
    path = tmp_path / "r.h5"
    dead, alive = path.with_name("r.h5.tmp999999999"), path.with_name(f"r.h5.tmp{os.getppid()}")
    dead.write_bytes(b"half a file")
    alive.write_bytes(b"being written")
    write_run(path, RunRecord(spec=RunSpec()))
    assert not dead.exists() and alive.exists() and read_run(path).status == "running"
    stale = time.time() - LOCK_STALE_SECONDS - 5
    os.utime(alive, (stale, stale))  # as old as a stale lock: a writer on another host that never came back
    write_run(path, RunRecord(spec=RunSpec()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.h5"]


def test_check_writable_names_the_folder(tmp_path):
    check_writable(tmp_path)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(WorkError, match="the store cannot be written: .*missing"):
        check_writable(tmp_path / "missing")
