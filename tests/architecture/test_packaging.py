"""The wheel holds every package of the source tree: a subpackage added under audit/, measures/ or
experiments/ and missed by [tool.setuptools.packages.find] fails here, not on a user's `pip install`.

The wheel is built from a copy of the source tree: pip builds in place, and setuptools puts what it finds
in build/lib into the wheel, so a stale build/ in the checkout would hide a package missing from the
find configuration (and building there would write into the checkout)."""

import configparser
import importlib.util
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOP_PACKAGES = ("audit", "measures", "experiments")
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__",
                                    ".*_cache", ".hypothesis", "audit-runs")


def source_packages() -> list[Path]:
    """Every folder under audit/, measures/ and experiments/ (themselves included) holding an __init__.py."""
    found = []
    for top in TOP_PACKAGES:
        found += [init.parent for init in (ROOT / top).rglob("__init__.py") if "__pycache__" not in init.parts]
    return sorted(found)


def expected_files() -> set[str]:
    """Wheel paths the source tree says must be there."""
    files = {"cli.py"}
    for package in source_packages():
        files |= {p.relative_to(ROOT).as_posix() for p in package.glob("*.py")}
    files |= {p.relative_to(ROOT).as_posix() for p in (ROOT / "experiments").glob("*.toml")}
    return files


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Iterator[zipfile.ZipFile]:
    source = tmp_path_factory.mktemp("source") / "audit"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), "."]
    if importlib.util.find_spec("setuptools") is not None:  # build with the venv's setuptools, offline
        command.insert(4, "--no-build-isolation")
    done = subprocess.run(command, check=False, cwd=source, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    wheels = list(out.glob("*.whl"))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as archive:
        yield archive


def test_the_source_tree_has_the_packages_the_test_looks_for():
    packages = {p.relative_to(ROOT).as_posix() for p in source_packages()}
    assert set(TOP_PACKAGES) <= packages
    assert any("/" in p for p in packages), "no subpackage found: the discovery is broken"
    assert list((ROOT / "experiments").glob("*.toml")) and (ROOT / "cli.py").is_file()


def test_wheel_holds_every_package_module_cli_and_experiment_file(wheel):
    names = set(wheel.namelist())
    missing_packages = sorted(p.relative_to(ROOT).as_posix() for p in source_packages()
                              if f"{p.relative_to(ROOT).as_posix()}/__init__.py" not in names)
    assert not missing_packages, f"packages missing from the wheel: {missing_packages}"
    missing = sorted(expected_files() - names)
    assert not missing, f"files missing from the wheel: {missing}"


def test_wheel_declares_the_audit_entry_point(wheel):
    [path] = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    entry_points = configparser.ConfigParser()
    entry_points.read_string(wheel.read(path).decode())
    assert entry_points["console_scripts"]["audit"].strip() == "cli:main"
