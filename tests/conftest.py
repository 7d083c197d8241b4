import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(int(os.environ.get("AUDIT_TEST_THREADS", "2")))


@pytest.fixture(autouse=True, scope="session")
def command_built_once() -> Iterator[None]:
    """CliRunner builds the click command from the typer app on every call (0.1 s, most of a --plan or a
    report of a small store): here it is built once for the session. It patches typer.testing's private
    _get_command: if typer renames it, this fails loudly."""
    import typer.main
    import typer.testing

    from cli import app

    command = typer.main.get_command(app)
    original = typer.testing._get_command
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(typer.testing, "_get_command", lambda given: command if given is app else original(given))
        yield


@pytest.fixture
def seed() -> Iterator[int]:
    """Seeds torch's and numpy's global generators with 0 for one test, and restores them after: a test that
    draws from the global streams takes this fixture instead of seeding by hand."""
    numpy_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        np.random.seed(0)
        yield 0
    np.random.set_state(numpy_state)


@pytest.fixture(scope="session")
def small_store(tmp_path_factory) -> Path:
    """A store with true, corrupt:0.5 and random-labels runs of a narrow MLP on digits, 2 seeds, scored."""
    from typer.testing import CliRunner

    from cli import app

    root = tmp_path_factory.mktemp("stores") / "small"
    result = CliRunner().invoke(app, ["run", "--model", "mlp-1x256", "--variants", "true,corrupt:0.5,random-labels",
                                      "--seeds", "2", "--lr", "0.1", "--out", str(root), "--json"])
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory) -> tuple[Path, dict]:
    """The README's first command, `audit run` (the quick audit), run once: (working folder, its JSON)."""
    import json

    from typer.testing import CliRunner

    from cli import app

    folder = tmp_path_factory.mktemp("quick")
    previous = os.getcwd()
    os.chdir(folder)
    try:
        result = CliRunner().invoke(app, ["run", "--json"])
    finally:
        os.chdir(previous)
    assert result.exit_code == 0, result.stderr
    return folder, json.loads(result.stdout)


ZYGOTE = r"""
import json, os, sys
import cli  # every import paid once; nothing computed here, so no thread pool is forked
import torch
torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)  # its first construction imports torch._dynamo (3 s)
for line in sys.stdin:
    request = json.loads(line)
    if "poll" in request:
        done, status = os.waitpid(request["poll"], os.WNOHANG)
        print(json.dumps({"code": os.waitstatus_to_exitcode(status) if done else None}), flush=True)
        continue
    pid = os.fork()
    if pid == 0:
        sys.stdin.close()
        os.environ.update(request["env"])
        if "OMP_NUM_THREADS" in request["env"]:  # as a fresh process would read it (the fork has torch's pool)
            torch.set_num_threads(int(request["env"]["OMP_NUM_THREADS"]))
        os.chdir(request["cwd"])
        for fd, path in ((1, request["out"]), (2, request["err"])):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(target, fd)
        sys.argv = ["audit", *request["argv"]]
        code = 0
        try:
            cli.main()
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    print(json.dumps({"pid": pid}), flush=True)
"""


class Zygote:
    """A process that has imported audit once and forks a fresh `audit` command per request, so that the kill
    tests start a command in a fraction of a second instead of re-importing torch for each."""

    def __init__(self, root: Path, folder: Path) -> None:
        import subprocess
        import sys

        self.root, self.folder, self.count = root, folder, 0
        self.process = subprocess.Popen([sys.executable, "-c", ZYGOTE], cwd=root, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)

    def _ask(self, request: dict) -> dict:
        import json

        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def start(self, *args: object, env: dict | None = None) -> tuple[int, Path, Path]:
        """Fork `audit ARGS` with env added; returns its pid and the files of its stdout and stderr."""
        self.count += 1
        out, err = self.folder / f"{self.count}.out", self.folder / f"{self.count}.err"
        reply = self._ask({"argv": [str(a) for a in args], "env": env or {}, "cwd": str(self.root),
                           "out": str(out), "err": str(err)})
        return reply["pid"], out, err

    def poll(self, pid: int) -> int | None:
        """The command's exit code (negative: killed by that signal), or None while it runs."""
        return self._ask({"poll": pid})["code"]

    def wait(self, pid: int, timeout: float = 120) -> int:
        """Its exit code; a command still running after timeout seconds is killed and the test fails."""
        import signal
        import time

        deadline = time.monotonic() + timeout
        while (code := self.poll(pid)) is None:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                self.wait(pid)
                pytest.fail(f"an audit command ran over {timeout} s and was killed")
            time.sleep(0.02)
        return code

    def run(self, *args: object, env: dict | None = None) -> tuple[int, str, str]:
        """Run `audit ARGS` to its end: (exit code, stdout, stderr)."""
        pid, out, err = self.start(*args, env=env)
        code = self.wait(pid)
        return code, out.read_text(), err.read_text()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.fixture(scope="session")
def zygote(tmp_path_factory) -> Iterator[Zygote]:
    forker = Zygote(Path(__file__).parents[1], tmp_path_factory.mktemp("zygote"))
    yield forker
    forker.close()
