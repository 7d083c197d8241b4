"""Commands that did nothing and said nothing (issue 17, item 11): each now says in one line what happened."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

from typer.testing import CliRunner

from cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_report_and_score_at_a_point_no_run_kept_refuse_in_one_line(small_store):
    for command in ("report", "score"):
        result = invoke(command, small_store, "--at", "loss:0.1")
        assert result.exit_code == 2, result.output
        assert result.stderr.strip().splitlines() == [
            f"audit: error: no run of {small_store} kept the point loss:0.1 (kept: none); train with `audit run ... "
            "--keep loss:0.1` into a new store (--out) to judge there"]


def test_keep_asked_of_complete_runs_says_it_keeps_nothing(tmp_path, small_store):
    store = tmp_path / "copy"
    shutil.copytree(small_store, store)
    grid = ["run", "--model", "mlp-1x256", "--variants", "true,corrupt:0.5,random-labels", "--seeds", "2", "--lr", "0.1",
            "--out", store]
    assert invoke(*grid).exit_code == 0  # the shared store's cached measures up to date (other tests change them)
    before = sorted(p.read_bytes() for p in (store / "runs").glob("*.h5"))
    result = invoke(*grid, "--keep", "epoch:1")
    assert result.exit_code == 0, result.output
    assert ("audit: 6 complete runs passed epoch:1 before it was asked and kept no weights there (complete runs "
            "are not retrained): train into a new store with --out --keep epoch:1 to keep it") in result.stderr
    assert sorted(p.read_bytes() for p in (store / "runs").glob("*.h5")) == before


def test_a_second_run_while_another_holds_every_run_says_so_instead_of_reporting_zero_runs(tmp_path):
    store = tmp_path / "s"
    args = ["run", "quick", "--seeds", "1", "--variants", "true,random-labels", "--out", store]
    planned = json.loads(invoke(*args, "--plan", "--json").stdout)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (store / "runs").mkdir(parents=True)
        for item in planned["runs"]:
            lock = {"owner": "other", "pid": holder.pid, "host": socket.gethostname(), "started": time.time(),
                    "heartbeat": time.time()}
            (store / "runs" / f"{item['run_id']}.lock").write_text(json.dumps(lock))
        result = invoke(*args)
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("audit: failed: every run of this experiment is held by another process (")
    assert f"pid {holder.pid}" in lines[-1] and f"`audit report {store}` once that one finishes" in lines[-1]
    assert "0 runs" not in result.output and not list((store / "runs").glob("*.h5"))
    assert os.environ.get("AUDIT_DEBUG") is None
