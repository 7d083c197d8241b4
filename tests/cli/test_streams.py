"""Results go to stdout even while the progress bar is live on a terminal's stderr: the bar is stopped before
anything is printed (rich's live display would otherwise carry stdout's lines to stderr)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OLD = ROOT / "tests" / "data" / "old_store" / "store"


def test_score_json_reaches_stdout_with_a_live_progress_bar(tmp_path):
    store = tmp_path / "store"
    shutil.copytree(OLD, store)
    env = dict(os.environ, FORCE_COLOR="1", OMP_NUM_THREADS="1")  # rich takes stderr for a terminal: the bar is live
    done = subprocess.run([sys.executable, "-m", "cli", "score", str(store), "--measure", "l2", "--json"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["store"] == str(store) and len(document["runs"]) == 3
    assert '"verdicts"' not in done.stderr
