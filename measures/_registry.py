"""The measure registry (private; `measures` is the public face): every candidate generalization measure with its metadata.

A measure is a function of a Context (the model with final weights in eval mode, its init, the
fitted train data, the run's spec and history) returning a float, or raising Undefined with the
reason when it is not defined for that run. Register one with @measure(...).
"""

from __future__ import annotations

import inspect
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from audit.errors import UsageError, WorkError, unknown_name
from audit.registry import Registry, origin_of
from measures.layers import prepare

FAMILIES = ("count", "norm", "spectral", "path", "margin", "margin-normalized", "sharpness", "flatness",
            "pac-bayes", "curvature", "information", "spectra", "capacity", "optimization", "kernel",
            "sensitivity")
NEEDS = ("weights", "init", "train", "history", "procedure")
COSTS = ("instant", "pass", "heavy")


class Undefined(Exception):
    """The measure is not defined for this run; the message says why."""

@dataclass(frozen=True)
class Measure:
    name: str
    fn: Callable[..., float]
    family: str
    needs: tuple[str, ...]
    direction: int  # +1: larger means more complex; -1: smaller means more complex
    cost: str
    reference: str
    formula: str
    log: bool = False  # reported as a natural log
    invariant: bool = False  # invariant to rescaling ReLU layers (layer i × c, layer i+1 ÷ c)
    settings: dict[str, Any] = field(default_factory=dict)
    version: int = 1
    default: bool = True  # part of the default set that `audit run` scores
    plugin: dict[str, str] | None = None  # a plugin's measure: its module, file and the hash of its source
    group: Callable[..., list[Any]] | None = None  # group(ctxs, **settings): each run's value or Undefined

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "needs": list(self.needs),
                "direction": "larger = more complex" if self.direction > 0 else "smaller = more complex",
                "cost": self.cost, "log": self.log, "invariant": self.invariant,
                "settings": dict(self.settings), "version": self.version, "default": self.default,
                "reference": self.reference, "formula": self.formula, "plugin": self.plugin}


MEASURES = Registry("measure")


def check_metadata(name: str, family: str, needs: tuple[str, ...], direction: int, cost: str) -> None:
    """A UsageError naming the measure and the first bad keyword (checked always, never by assert)."""
    problems = [(isinstance(family, str) and bool(family.strip()) and family.isprintable(),
                 f"family must be a name: one of {', '.join(FAMILIES)} or a new one, got {family!r}"),
                (set(needs) <= set(NEEDS), f"needs {tuple(needs)} must be drawn from {', '.join(NEEDS)}"),
                (direction in (1, -1), f"direction must be 1 (larger = more complex) or -1, got {direction!r}"),
                (cost in COSTS, f"cost '{cost}' is not one of {', '.join(COSTS)}")]
    for ok, problem in problems:
        if not ok:
            raise UsageError(f"measure '{name}': {problem}")


def measure(name: str, *, family: str, needs: tuple[str, ...], direction: int, cost: str, reference: str,
            formula: str, log: bool = False, invariant: bool = False, settings: dict[str, Any] | None = None,
            version: int = 1, default: bool = True,
            group: Callable[..., list[Any]] | None = None) -> Callable[[Callable[..., float]], Callable[..., float]]:
    """Register fn(ctx, **settings) -> float as a measure. With `group`, group(ctxs, **settings) computes it on
    several runs together and returns, per context, its value or an Undefined; each run's value must be the
    one it gets alone (evaluate computes a lone run as a group of one)."""
    check_metadata(name, family, needs, direction, cost)

    def register(fn: Callable[..., float]) -> Callable[..., float]:
        check_signature(name, fn, settings or {})
        if group is not None:
            check_signature(name, group, settings or {})
        MEASURES.add(name, Measure(name, fn, family, tuple(needs), direction, cost, reference, formula, log,
                                   invariant, dict(settings or {}), version, default, group=group),
                     origin=origin_of(fn, 2))
        return fn

    return register


def check_signature(name: str, fn: Callable[..., Any], settings: dict[str, Any]) -> None:
    """A UsageError unless fn can be called as fn(ctx, **settings), as evaluate calls it."""
    try:
        inspect.signature(fn).bind(None, **settings)
    except TypeError as err:
        keys = "".join(f", {key}=..." for key in settings)
        raise UsageError(f"measure '{name}': its function must take (ctx{keys}), the context and its settings as "
                         f"keywords ({err})") from None
    except ValueError:  # no signature to read (a builtin): called as it is
        pass


@dataclass
class Context:
    """What a measure may look at. Weights are read from `model` (eval mode, batch norm folded)."""
    model: nn.Module
    init: nn.Module | None = None
    x: torch.Tensor | None = None
    y: torch.Tensor | None = None
    num_classes: int | None = None
    spec: Any = None  # RunSpec when scored from a store
    record: Any = None  # RunRecord when scored from a store
    raw_model: nn.Module | None = None  # as trained, before folding (for parameter counts)
    device: torch.device = torch.device("cpu")
    cache: dict[str, Any] = field(default_factory=dict)
    refit: Callable[..., float] | None = None  # refit(x, y, num_classes, seed) -> train accuracy by the run's procedure
    refit_many: Callable[[list[tuple]], list[float]] | None = None  # refit_many([(x, y, classes, seed), ...]) at once
    shared: Any = None  # the store: get_shared(kind, key) -> dict | None, put_shared(kind, key, dict)

    def cached(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]

    def require_train(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.x is None or self.y is None:
            raise Undefined("needs the train data; pass train=(x, y)")
        return self.x, self.y

    def logits(self) -> torch.Tensor:
        """Outputs of the model on the whole fitted train set, computed once."""
        def run() -> torch.Tensor:
            x, _ = self.require_train()
            with torch.inference_mode():
                return torch.cat([self.model(x[i:i + 8192]) for i in range(0, len(x), 8192)]).float()
        return self.cached("logits", run)


@dataclass
class Result:
    value: float | None
    seconds: float
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)  # per-layer values etc., arrays or numbers
    failed: bool = False  # the measure raised: recorded for this run, never cached


def keep_detail(ctx: Context, name: str, **values: Any) -> None:
    """Keep per-layer (or other) detail beside a measure's scalar; it is stored with the cached value."""
    ctx.cache.setdefault(f"detail:{name}", {}).update(values)


def get(name: str) -> Measure:
    return MEASURES.get(name)


def names(default_only: bool = False) -> list[str]:
    def rank(m: Measure) -> int:  # the built-in families in their order, then plugins' new ones
        return FAMILIES.index(m.family) if m.family in FAMILIES else len(FAMILIES)

    ordered = sorted(MEASURES.values(), key=rank)  # stable: registration order within a family
    return [m.name for m in ordered if m.default or not default_only]


def judged(names_: list[str]) -> dict[str, dict[str, Any]]:
    """What judging needs of each measure (audit.judge takes no measure objects): direction, family, log."""
    return {name: {"direction": get(name).direction, "family": get(name).family, "log": get(name).log}
            for name in names_}


def resolved_settings(name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    measure_ = get(name)
    settings = dict(measure_.settings)
    for key, value in (overrides or {}).items():
        if key not in settings:
            raise unknown_name(f"setting of {name}", key, list(settings))
        default = settings[key]
        try:
            settings[key] = type(default)(value) if default is not None and not isinstance(default, bool) else value
        except (TypeError, ValueError):
            raise UsageError(f"setting {name}.{key} must be a {type(default).__name__}, got {value!r}") from None
    return settings


def evaluate(ctx: Context, name: str, overrides: dict[str, Any] | None = None) -> Result:
    """One measure on one context; Undefined becomes a null value with its reason."""
    return evaluate_group([ctx], name, overrides)[0]


def evaluate_group(ctxs: list[Context], name: str, overrides: dict[str, Any] | None = None) -> list[Result]:
    """One measure on several runs' contexts, together where the measure has a group form (each run's value
    is the one it gets alone), else one by one. A failure of the group is retried run by run, so that it
    stays the failing run's own. Seconds are each run's share of the time."""
    measure_ = get(name)
    settings = resolved_settings(name, overrides)
    if measure_.group is None:
        return [_timed(ctx, name, lambda ctx=ctx: [measure_.fn(ctx, **settings)], measure_)[0] for ctx in ctxs]
    results = _timed(ctxs, name, lambda: measure_.group(ctxs, **settings), measure_)
    if len(ctxs) > 1 and any(r.failed for r in results):
        return [evaluate_group([ctx], name, overrides)[0] for ctx in ctxs]
    return results


def _timed(ctxs: Context | list[Context], name: str, compute_values: Callable[[], list[Any]],
           measure_: Measure) -> list[Result]:
    ctxs = ctxs if isinstance(ctxs, list) else [ctxs]
    start = time.perf_counter()
    for ctx in ctxs:
        ctx.cache.pop(f"detail:{name}", None)
    try:
        values = list(compute_values())
    except Undefined as why:
        values = [why] * len(ctxs)
    except (WorkError, KeyboardInterrupt):
        raise
    except Exception as error:  # a bug or a model the measure does not handle: these runs only
        first_line = (str(error).strip().splitlines() or [""])[0]
        reason = f"failed: {type(error).__name__}: {first_line} (at {raised_at(error, measure_)})"
        return [Result(None, (time.perf_counter() - start) / len(ctxs), reason, failed=True) for _ in ctxs]
    seconds = (time.perf_counter() - start) / len(ctxs)
    return [_result(value, seconds, ctx.cache.pop(f"detail:{name}", {})) for ctx, value in zip(ctxs, values)]


def _result(value: Any, seconds: float, detail: dict[str, Any]) -> Result:
    if isinstance(value, Undefined):
        return Result(None, seconds, str(value))
    value = float(value)
    if not math.isfinite(value):
        return Result(None, seconds, f"not finite ({value})", detail)
    return Result(value, seconds, None, detail)


def raised_at(error: BaseException, measure_: Measure) -> str:
    """file:line of the measure's own code where the error arose: the deepest frame in the file that defines the
    measure (a plugin's package: any of its files), else the deepest frame."""
    frames = traceback.extract_tb(error.__traceback__)
    try:
        home = Path(measure_.plugin["file"] if measure_.plugin else inspect.getfile(measure_.fn))
    except TypeError:  # no source file (a builtin or a partial): the deepest frame
        home = Path(frames[-1].filename)
    home = home.parent if home.name == "__init__.py" else home
    own = [f for f in frames if Path(f.filename) == home or Path(f.filename).is_relative_to(home)]
    frame = (own or frames)[-1]
    return f"{frame.filename}:{frame.lineno}"


HISTORY_REASON = "needs a run's training history or procedure: score it through a store (`audit score`)"


def compute(model: nn.Module, names_: list[str], train: tuple[torch.Tensor, torch.Tensor] | None = None,
            init: nn.Module | None = None, device: str | torch.device = "cpu",
            settings: dict[str, dict[str, Any]] | None = None) -> dict[str, Result]:
    """Measures of any torch model, measured in eval mode: {name: Result} in the order asked.

    Each Result has .value (a float, or None) and .reason (why it is None: the measure is not defined
    for this model, it needs a run's history, or it failed: "failed: ..."); one failing measure never
    aborts the others. A measure that needs train data or init weights that were not given is a
    UsageError naming every such measure and the argument to pass."""
    for name in names_:
        get(name)  # unknown names fail first, with the closest match
    computable = [name for name in names_ if not {"history", "procedure"} & set(get(name).needs)]
    missing = {arg: [name for name in computable if need in get(name).needs and given is None]
               for arg, need, given in (("train=(x, y)", "train", train), ("init=", "init", init))}
    missing = {arg: names for arg, names in missing.items() if names}
    if missing:
        raise UsageError("; ".join(f"{', '.join(names)} need{'s' if len(names) == 1 else ''} {arg}"
                                   for arg, names in missing.items()) + ": pass it to measures.compute")
    device = torch.device(device)
    x, y = (train[0].to(device), train[1].to(device)) if train is not None else (None, None)
    ctx = Context(model=prepare(model, device), init=prepare(init, device) if init is not None else None,
                  x=x, y=y, raw_model=model, device=device, num_classes=None)
    results = {}
    for name in names_:
        needs = get(name).needs
        if "history" in needs or "procedure" in needs:
            results[name] = Result(None, 0.0, HISTORY_REASON)
        else:
            results[name] = evaluate(ctx, name, (settings or {}).get(name))
    return results
