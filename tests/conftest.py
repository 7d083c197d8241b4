import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(int(os.environ.get("AUDIT_TEST_THREADS", "2")))


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
