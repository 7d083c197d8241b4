"""Every input error is one line, and every hint names a command that exists (issue 17, item 10)."""

import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from audit.errors import LISTED
from cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("variants", ["", ",", " , "])
@pytest.mark.parametrize("plan", [True, False])
def test_empty_variants_is_one_line_in_run_and_plan(tmp_path, variants, plan):
    result = invoke("run", "--variants", variants, "--out", tmp_path / "s", *(["--plan"] if plan else []))
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.output
    assert "--variants needs at least one variant" in result.stderr
    assert not (tmp_path / "s").exists()


def named_commands() -> set[str]:
    """Every `audit ...` command named in a string of audit's code (hints of errors, notices, help texts),
    cut where its options or arguments start; `audit list {kind}s` as each listed kind."""
    named = set()
    for path in [ROOT / "cli.py", *ROOT.glob("audit/**/*.py"), *ROOT.glob("measures/**/*.py")]:
        for text in re.findall(r"`audit ([^`]*)`", path.read_text()):
            text = text.replace("{kind}s", "KINDS")
            words = []
            for word in text.split():
                if not re.fullmatch(r"[a-z][a-z-]*|KINDS", word):
                    break
                words.append(word)
            if words == ["list", "KINDS"]:
                named |= {f"list {kind}s" for kind in LISTED}
            elif words:
                named.add(" ".join(words))
    return named


def command_path(words: list[str]) -> list[str]:
    """The longest prefix of words that names a command or group of the CLI; the rest are its arguments."""
    command = typer.main.get_command(app)  # typer bundles its own click: groups are told by their commands
    path = []
    for word in words:
        if word not in getattr(command, "commands", {}):
            break
        command = command.commands[word]
        path.append(word)
    return path


def test_every_command_named_in_a_message_exists():
    named = named_commands()
    assert {"run", "score", "list measures", "verify"} <= named  # the scan finds the hints: it cannot find nothing
    for text in sorted(named):
        words = text.split()
        path = command_path(words)
        assert path and path[0] == words[0], f"`audit {text}` names no command"
        if path == ["list"] and len(words) > 1:  # a group takes no arguments: `audit list spec fields` was named
            raise AssertionError(f"`audit {text}` names no `audit list` subcommand")
        result = invoke(*path, "--help")
        assert result.exit_code == 0, f"`audit {' '.join(path)} --help` failed: {result.output}"


@pytest.fixture(scope="module")
def interpreter_startup() -> float:
    """Seconds Python itself takes to start (site import) here, before any audit code can run.

    A Ctrl-C inside that window is the interpreter's own 'Fatal Python error', out of audit's reach;
    each delay below counts from the end of it, measured on this machine in this run."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return 2 * (time.perf_counter() - start)


@pytest.mark.skipif(shutil.which("audit") is None, reason="the audit command is not installed (pip install -e .)")
@pytest.mark.parametrize("delay", [0.0, 0.4, 1.0, 2.0, 4.0])
def test_ctrl_c_at_any_moment_is_one_line_and_exit_130(tmp_path, delay, interpreter_startup):
    process = subprocess.Popen(["audit", "run", "quick", "--out", str(tmp_path / "s"), "--seeds", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    time.sleep(interpreter_startup + delay)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    if process.returncode == 0:
        pytest.skip(f"the run finished within {delay} s, before the interrupt")
    assert process.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert [line for line in err.splitlines() if line.startswith("audit:")] == [err.strip().splitlines()[-1]]
    assert "interrupted" in err.strip().splitlines()[-1]
