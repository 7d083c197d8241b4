"""What `audit list` lists: every registry the same way (an item per entry, then one per name pattern), and
the shipped experiments with their rough cost."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import measures
from audit.data.preprocess import PREPROCESSINGS
from audit.data.sources import DATASETS
from audit.data.variants import VARIANTS
from audit.errors import UsageError
from audit.models.registry import MODELS, build_model, count_params
from audit.pipeline.cost import estimate
from audit.registry import Entry, Registry
from audit.spec.experiment import ExperimentSpec
from audit.theory.kernel import KERNELS
from audit.train.state import OPTIMIZERS


@dataclass(frozen=True)
class Listing:
    """One `audit list KIND`: the registry, the table's columns, and how an entry becomes an item."""

    help: str  # the subcommand's help
    registry: Registry
    columns: tuple[str, ...]
    describe: Callable[[Entry], dict[str, Any]] | None = None  # default: its name (or label) and meta columns
    patterns: bool = True  # also an item per name pattern (mlp-DxW, folder:PATH, ...)
    order: Callable[[], list[str]] | None = None  # the names in listing order; default: registration order
    note: str = ""  # printed under the table


def meta_item(name: str, meta: dict[str, Any], columns: tuple[str, ...]) -> dict[str, Any]:
    """An item from registered metadata: the name (or the meta's label), then each other column's value."""
    return {"name": meta.get("label", name), **{c: meta.get(c) for c in columns if c != "name"}}


def params(name: str, shape: tuple[int, ...], classes: int = 10) -> int | None:
    """Parameters of the model for this input shape; None when the model does not take it."""
    try:
        return count_params(build_model(name, shape, classes))
    except UsageError:  # a model for larger images only (inception-v3: RGB, at least 75×75)
        return None


def model_item(entry: Entry) -> dict[str, Any]:
    return {"name": entry.name, "description": entry.value.description,
            "params_digits": params(entry.name, (1, 8, 8)), "params_cifar28": params(entry.name, (3, 28, 28))}


LISTINGS: dict[str, Listing] = {
    "models": Listing("The model registry, with parameter counts for 10 classes on the digits input (1×8×8) and "
                      "on CIFAR cropped to 28×28 (3×28×28).", MODELS,
                      ("name", "params_digits", "params_cifar28", "description"), model_item, patterns=False,
                      note="mlp-DxW works for any depth D and width W; — : the model does not take that input"),
    "measures": Listing("The measure catalogue with each measure's metadata.", measures.MEASURES,
                        ("name", "family", "direction", "cost", "needs", "settings", "formula"),
                        lambda entry: entry.value.metadata(), patterns=False, order=measures.names),
    "variants": Listing("The data variants of the randomization test.", VARIANTS, ("name", "axis", "description")),
    "datasets": Listing("Datasets audit can load.", DATASETS, ("name", "description")),
    "kernels": Listing("The kernels of `audit kernel`, with their formulas.", KERNELS, ("name", "formula")),
    "optimizers": Listing("The optimizers a run can name (optimizer = ...).", OPTIMIZERS, ("name", "description")),
    "preprocessings": Listing("The preprocessings a run can name (--preprocess).", PREPROCESSINGS,
                              ("name", "description")),
}


def list_items(kind: str) -> list[dict[str, Any]]:
    """The items of `audit list KIND`: one per registered entry, then one per name pattern."""
    listing = LISTINGS[kind]
    registry = listing.registry
    entries = registry.entries() if listing.order is None else [registry.entry(n) for n in listing.order()]
    items = [listing.describe(e) if listing.describe else meta_item(e.name, e.meta, listing.columns)
             for e in entries]
    if listing.patterns:
        items += [meta_item(p.label, p.meta, listing.columns) for p in registry.patterns()]
    return items


EXPERIMENT_COLUMNS = ("name", "runs", "max_pflop", "cpu_hours_at_most", "gpu_hours_at_most", "description")
EXPERIMENT_NOTE = "cost: every run at its full epoch budget, 30 GFLOP/s on 2 CPU cores, 100 TFLOP/s on a GPU"


def experiment_items(experiments: dict[str, ExperimentSpec]) -> list[dict[str, Any]]:
    """Per experiment: its runs, store, description and an upper bound of its cost (every run at its whole
    epoch budget)."""
    items = []
    for name, spec in experiments.items():
        cost = estimate(spec)
        items.append({"name": name, "runs": cost["runs"], "store": spec.store, "description": spec.description,
                      "max_pflop": round(cost["max_pflop"], 3), "cpu_hours_at_most": round(cost["cpu_hours"], 2),
                      "gpu_hours_at_most": round(cost["gpu_hours"], 3)})
    return items
