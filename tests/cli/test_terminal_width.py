"""Item 9 of issue 17: tables readable at 100 columns, --wide shows everything, the progress bar gone before them."""

import importlib.util
import json
import os
import re
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from cli import app

runner = CliRunner()


def lines_of(text: str) -> list[str]:
    return text.splitlines()


def test_the_report_at_100_columns_fits_and_shows_every_measure_and_verdict_in_full(small_store):
    document = json.loads(runner.invoke(app, ["report", str(small_store), "--json"]).stdout)
    verdicts = {s["measure"]: s["verdict"] for s in document["summary"]}
    assert len(verdicts) > 20  # the default measures
    result = runner.invoke(app, ["report", str(small_store)], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.stderr
    lines = lines_of(result.stdout)
    assert max(len(line) for line in lines) <= 100
    rows = {line.split()[0]: line for line in lines if line.split() and line.split()[0] in verdicts}
    assert set(rows) == set(verdicts)
    for name, verdict in verdicts.items():
        assert re.search(rf"\s{re.escape(verdict)}\s*$", rows[name]), rows[name]  # in full, not "disti…"
    assert "…" not in result.stdout
    note = [line for line in lines if line.startswith("not shown at 100 columns:")]
    assert len(note) == 1 and "worst sign-err" in note[0] and "--wide" in note[0]


def test_wide_shows_the_columns_the_narrow_table_leaves_out(small_store):
    narrow = runner.invoke(app, ["report", str(small_store)], env={"COLUMNS": "100"}).stdout
    wide = runner.invoke(app, ["report", str(small_store), "--wide"], env={"COLUMNS": "100"}).stdout
    header = next(line for line in lines_of(wide) if line.startswith("measure "))
    assert header.split()[:3] == ["measure", "kind", "dir"] and header.rstrip().endswith("s/run")
    assert "worst sign-err" in header and "worst sign-err" not in next(
        line for line in lines_of(narrow) if line.startswith("measure "))
    assert "not shown at" not in wide
    assert max(len(line) for line in lines_of(wide)) > 100
    text_lines = [line for line in lines_of(wide) if line.startswith("  ")]  # the rule still wraps at 100
    assert text_lines and max(len(line) for line in text_lines) <= 100


def test_a_wider_terminal_keeps_more_columns(small_store):
    def header(columns: str) -> list[str]:
        out = runner.invoke(app, ["report", str(small_store)], env={"COLUMNS": columns}).stdout
        return next(line for line in lines_of(out) if line.startswith("measure ")).split()

    assert len(header("80")) < len(header("100")) < len(header("160"))
    assert {"measure", "verdict"} <= set(header("80"))


@pytest.mark.skipif(shutil.which("audit") is None or importlib.util.find_spec("pyte") is None,
                    reason="needs the installed audit command and pyte (pip install -e '.[test]')")
def test_the_progress_bar_is_gone_before_the_tables_on_a_real_terminal(tmp_path, terminal=60, columns="100"):
    """Run in a pseudo-terminal and read the screen as a terminal shows it (pyte). As seen: with COLUMNS=100 in
    a narrower terminal the bar wrapped, and its wrapped rows stayed above the tables ("…0:00:03store ...")."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    import pyte
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, terminal, 0, 0))
    env = {**os.environ, "COLUMNS": columns, "LINES": "50", "TERM": "xterm-256color"}
    process = subprocess.Popen(["audit", "run", "--model", "mlp-1x16", "--variants", "true,random-labels",
                                "--seeds", "2", "--epochs", "3", "--measure", "l2", "--out", str(tmp_path / "s")],
                               stdin=slave, stdout=slave, stderr=slave, env=env, cwd=tmp_path, close_fds=True)
    os.close(slave)
    data = b""
    while True:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            data += chunk
        elif process.poll() is not None:
            break
    assert process.wait() == 0
    assert "━" in data.decode(errors="replace")  # a bar was drawn while it trained
    screen = pyte.Screen(terminal, 400)
    pyte.ByteStream(screen).feed(data)
    shown = [line.rstrip() for line in screen.display if line.strip()]
    assert shown[0].startswith("store ")  # the first line on the screen: the report, nothing before it
    assert not any("━" in line or re.search(r"\d:\d\d:\d\d", line) for line in shown), shown
    assert any(" insufficient " in line for line in shown)  # the verdict table, wrapped by the terminal


def test_the_sweep_plan_fits_100_columns_one_line_per_run(tmp_path):
    document = json.loads(runner.invoke(app, ["run", "sweep", "--plan", "--out", str(tmp_path / "s"),
                                              "--json"]).stdout)
    result = runner.invoke(app, ["run", "sweep", "--plan", "--out", str(tmp_path / "s")], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.stderr
    lines = lines_of(result.stdout)
    assert max(len(line) for line in lines) <= 100
    for run in document["runs"]:  # the run's varying settings in full on its own line
        line = next(line for line in lines if line.startswith(run["run_id"]))
        assert run["settings"] in line and run["variant"] in line
    assert "(every one dataset digits, state new)" in " ".join(result.stdout.split())
