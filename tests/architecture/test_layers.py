"""The house rules, checked: layers that only import downward, no import cycle, small modules and functions,
function-local imports only for optional or slow dependencies."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("audit", "measures", "experiments")
SOURCES = sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))
LAZY_ALLOWED = ("ray", "matplotlib", "torchvision", "sklearn")  # optional or slow to import
MAX_MODULE_LINES = 400
MAX_CLI_LINES = 665  # the first eleven, check, benchmark, export-data, issue 17's options, landscape, density, score --plan
MAX_FUNCTION_LINES = 80


def test_lint_imports_keeps_every_contract():
    command = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert command, "import-linter is a test dependency: pip install -e '.[test]'"
    result = subprocess.run([command], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


def strongly_connected(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """Tarjan's components of more than one module (each is an import cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for imported in graph.find_modules_directly_imported_by(module) & modules:
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in sorted(modules):
        if module not in index:
            visit(module)
    return cycles


def test_no_import_cycle_counting_every_import_statement():
    """grimp counts imports inside functions and under TYPE_CHECKING, and a package's __init__ imports."""
    graph = grimp.build_graph(*PACKAGES)
    modules = {m for m in graph.modules if m.split(".")[0] in PACKAGES}
    assert len(modules) > 60
    assert strongly_connected(graph, modules) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for name in ("a", "a.x", "a.y", "a.z"):
        graph.add_module(name)
    graph.add_import(importer="a.x", imported="a.y")
    graph.add_import(importer="a.y", imported="a.x")
    graph.add_import(importer="a.z", imported="a.x")
    assert strongly_connected(graph, {"a.x", "a.y", "a.z"}) == [["a.x", "a.y"]]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_are_small(path):
    assert len(path.read_text().splitlines()) <= MAX_MODULE_LINES


def test_cli_is_thin():
    assert len((ROOT / "cli.py").read_text().splitlines()) <= MAX_CLI_LINES


def functions(path: Path) -> list[ast.FunctionDef]:
    return [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


@pytest.mark.parametrize("path", [*SOURCES, ROOT / "cli.py"], ids=lambda p: str(p.relative_to(ROOT)))
def test_functions_are_short(path):
    long = [f"{f.name} ({f.end_lineno - f.lineno + 1} lines)" for f in functions(path)
            if f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []


@pytest.mark.parametrize("path", [*SOURCES, ROOT / "cli.py"], ids=lambda p: str(p.relative_to(ROOT)))
def test_function_local_imports_are_only_for_optional_or_slow_dependencies(path):
    lines = path.read_text().splitlines()
    bad = []
    for function in functions(path):
        for node in ast.walk(function):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                cuda_only = path.name == "resources.py" and module == "torch"  # a CUDA device's free memory
                allowed = (module or "").split(".")[0] in LAZY_ALLOWED or cuda_only
                if not allowed or "#" not in lines[node.lineno - 1]:
                    bad.append(f"line {node.lineno}: {lines[node.lineno - 1].strip()}")
    assert bad == []
