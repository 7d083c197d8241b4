"""Plugins: a researcher's measures (and models, datasets, variants) loaded from a file, a module or an
installed package, registered through the same registries as the built-ins.

Three sources: `--plugin PATH.py` or `--plugin package.module` (a bad one is a UsageError: one line, exit 2);
the os.pathsep-separated AUDIT_PLUGINS and the entry-point group `audit.plugins` (a bad one is a warning and
the command goes on without it: a broken installed package must not make every store unreadable). A plugin
that fails half-way leaves nothing registered. Each plugin measure records the plugin's module, file and the
SHA-256 of its source (the module file, or every file of its package).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

from audit.data.sources import DATASETS
from audit.data.variants import VARIANTS
from audit.errors import UsageError
from audit.models.registry import MODELS
from audit.registry import source_digest
from measures._registry import MEASURES

ENTRY_POINT_GROUP = "audit.plugins"
ENVIRONMENT = "AUDIT_PLUGINS"
REGISTRIES = (MEASURES, MODELS, DATASETS, VARIANTS)


@dataclass(frozen=True)
class Plugin:
    module: str  # the module name it is imported as
    file: str  # its source file (a package's __init__.py)
    source_sha256: str  # of the module file, or of every file of its package

    def record(self) -> dict[str, str]:
        return {"module": self.module, "file": self.file, "source_sha256": self.source_sha256}


LOADED: dict[str, Plugin] = {}  # by what was asked for: a path or a module name


def locate(target: str) -> tuple[str, Path]:
    """The module name a plugin is imported as and its source file, without importing it."""
    if target.endswith(".py") or os.sep in target:
        path = Path(target).resolve()
        if not path.is_file():
            raise UsageError(f"plugin {target}: no such file; give a .py file or an importable module name")
        return f"audit_plugin_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}", path
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        spec = importlib.util.find_spec(target)
    except (ImportError, ValueError) as err:
        spec, problem = None, str(err)
    else:
        problem = "not found"
    if spec is None or spec.origin is None:
        raise UsageError(f"plugin {target}: no module of that name can be imported ({problem}); give a .py "
                         "file, or install the package or add its folder to PYTHONPATH")
    return target, Path(spec.origin)


def _where(err: BaseException, path: Path) -> str:
    """The plugin's own file and line where the error arose."""
    if isinstance(err, SyntaxError):
        return f"{err.filename}:{err.lineno}"
    home = path.parent if path.name == "__init__.py" else path
    frames = [f for f in traceback.extract_tb(err.__traceback__) if Path(f.filename).is_relative_to(home)]
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else str(path)


def load(target: str) -> Plugin:
    """Import the plugin once; any failure is a UsageError naming the plugin, where it failed and the fix, and
    nothing it registered stays registered."""
    if target in LOADED:
        return LOADED[target]
    name, path = locate(target)
    before = [set(registry.names()) for registry in REGISTRIES]
    try:
        if name == target:
            importlib.import_module(name)
        else:
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            sys.modules[name] = module
            spec.loader.exec_module(module)  # type: ignore[union-attr]
    except BaseException as err:
        _forget(before)
        sys.modules.pop(name, None)
        if isinstance(err, UsageError):  # a bad registration: a duplicate name, an unknown cost, a signature
            raise UsageError(f"plugin {target}: {err}") from None
        if isinstance(err, SyntaxError):
            raise UsageError(f"plugin {target}: syntax error at {_where(err, path)}: {err.msg}; fix the file") from None
        if isinstance(err, Exception):  # anything the plugin's own code raised while importing
            raise UsageError(f"plugin {target}: importing it raised {type(err).__name__}: {err} (at "
                             f"{_where(err, path)}); fix it or leave it out") from None
        raise
    plugin = Plugin(name, str(path), source_digest(path))
    for measure_name in set(MEASURES.names()) - before[0]:
        MEASURES[measure_name] = dataclasses.replace(MEASURES[measure_name], plugin=plugin.record())
    LOADED[target] = plugin
    return plugin


def _forget(before: list[set[str]]) -> None:
    for registry, names in zip(REGISTRIES, before):
        for name in set(registry.names()) - names:
            del registry[name]


def discovered() -> list[tuple[str, str]]:
    """(where it was found, target) for every plugin named by AUDIT_PLUGINS or an entry point."""
    found = [(ENVIRONMENT, item) for item in os.environ.get(ENVIRONMENT, "").split(os.pathsep) if item.strip()]
    for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.append((f"entry point {point.name}", point.value.split(":")[0]))
    return found


def load_plugins(explicit: list[str]) -> list[str]:
    """Load the discovered plugins (a failure: a warning line, returned) and then the explicit ones (a failure:
    UsageError). Returns the warnings."""
    warnings = []
    for source, target in discovered():
        try:
            load(target)
        except UsageError as err:
            warnings.append(f"{err} (found through {source}; audit goes on without it)")
    for target in explicit:
        load(target)
    return warnings
