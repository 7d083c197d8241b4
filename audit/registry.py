"""The one registry mechanism: named things (measures, models, datasets, variants, preprocessings, kernels,
optimizers, paper tables) registered by decorator or call, looked up with suggestions, listed with metadata.

A name grammar (mlp-DxW, module:function, folder:PATH, imagenet[:SIZE]) is a pattern: a label for
listings and suggestions, and a function that resolves a matching name or returns None.
"""

from __future__ import annotations

import hashlib
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.errors import UsageError, unknown_name

MISSING = object()


class DuplicateName(UsageError):
    """A name registered twice: both definitions are named."""


@dataclass(frozen=True)
class Entry:
    name: str
    value: Any
    meta: dict[str, Any] = field(default_factory=dict)
    origin: str = "?"  # file:line of the definition


@dataclass(frozen=True)
class Pattern:
    label: str  # how the grammar is written in listings, e.g. mlp-DxW
    resolve: Callable[[str], Any]  # the value for a matching name, or None
    meta: dict[str, Any] = field(default_factory=dict)


def origin_of(value: Any, depth: int) -> str:
    """Where a value was defined: a function's own file and line, else the registering call's."""
    code = getattr(value, "__code__", None)
    if code is not None:
        return f"{code.co_filename}:{code.co_firstlineno}"
    frame = sys._getframe(depth)
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


def source_digest(file: Path) -> str:
    """SHA-256 of a module's source file, or of every file of its package (names and bytes)."""
    if file.name == "__init__.py":
        files = sorted(p for p in file.parent.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    else:
        files = [file]
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(file.parent)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def raised_in(error: BaseException, home: Path) -> str:
    """file:line of the deepest frame of the error's traceback inside `home` (a file, or a package's folder
    when it is an __init__.py), else of the deepest frame."""
    frames = traceback.extract_tb(error.__traceback__)
    home = home.parent if home.name == "__init__.py" else home
    own = [f for f in frames if Path(f.filename) == home or Path(f.filename).is_relative_to(home)]
    frame = (own or frames or [None])[-1]
    return "?" if frame is None else f"{frame.filename}:{frame.lineno}"


class Registry:
    """Entries by name, in registration order, and name patterns tried after them."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._patterns: list[Pattern] = []

    def add(self, name: str, value: Any, *, origin: str | None = None, **meta: Any) -> Any:
        """Register value under name; a name already taken is a DuplicateName naming both definitions."""
        where = origin or origin_of(value, 2)
        if not isinstance(name, str) or not name.strip():
            raise UsageError(f"a {self.kind} needs a non-empty name, got {name!r} ({where})")
        if name in self._entries:
            raise DuplicateName(f"{self.kind} '{name}' is registered twice: at {self._entries[name].origin} and at "
                                f"{where}; rename one of them")
        self._entries[name] = Entry(name, value, dict(meta), where)
        return value

    def register(self, name: str, **meta: Any) -> Callable[[Any], Any]:
        """Decorator form of add: @REGISTRY.register("name", description=...)."""

        def decorate(value: Any) -> Any:
            return self.add(name, value, origin=origin_of(value, 2), **meta)

        return decorate

    def pattern(self, label: str, resolve: Callable[[str], Any], **meta: Any) -> None:
        self._patterns.append(Pattern(label, resolve, dict(meta)))

    def get(self, name: str, default: Any = MISSING) -> Any:
        """The value registered as name or resolved by a pattern; else default if given (as dict.get), or one
        line with the closest names."""
        if name in self._entries:
            return self._entries[name].value
        for pattern in self._patterns:
            value = pattern.resolve(name)
            if value is not None:
                return value
        if default is not MISSING:
            return default
        raise unknown_name(self.kind, name, self.labels())

    def entry(self, name: str) -> Entry:
        if name not in self._entries:
            raise unknown_name(self.kind, name, self.labels())
        return self._entries[name]

    def knows(self, name: str) -> bool:
        """Whether get(name) would succeed (patterns included)."""
        try:
            self.get(name)
        except UsageError:
            return False
        return True

    def names(self) -> list[str]:
        return list(self._entries)

    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def patterns(self) -> list[Pattern]:
        return list(self._patterns)

    def labels(self) -> list[str]:
        """Registered names, then the patterns' labels: what a listing or a suggestion shows."""
        return self.names() + [p.label for p in self._patterns]

    # Mapping access by exact name, for callers (and tests) that swap an entry's value in place.
    def __getitem__(self, name: str) -> Any:
        return self.entry(name).value

    def __setitem__(self, name: str, value: Any) -> None:
        old = self._entries.get(name)
        self._entries[name] = Entry(name, value, old.meta if old else {}, old.origin if old else origin_of(value, 2))

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def values(self) -> list[Any]:
        return [e.value for e in self._entries.values()]
