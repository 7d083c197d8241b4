"""Named experiment specs shipped with audit (this package's *.toml files)."""

from __future__ import annotations

from pathlib import Path

from audit.errors import UsageError, unknown_name
from audit.pipeline.names import check_experiment
from audit.spec.experiment import ExperimentSpec, load_experiment_file

FOLDER = Path(__file__).parent


def names() -> list[str]:
    return sorted(p.stem for p in FOLDER.glob("*.toml"))


def load(name_or_path: str) -> ExperimentSpec:
    """A shipped experiment by name, or an experiment file by path, its names checked."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise UsageError(f"experiment file {path} does not exist")
        return check_experiment(load_experiment_file(path))
    if name_or_path not in names():
        raise unknown_name("experiment", name_or_path, names())
    return check_experiment(load_experiment_file(FOLDER / f"{name_or_path}.toml"))
