"""The paper's numbers (Zhang et al. 2017, REFERENCE.md §1) and our runs beside them, row by row."""

from __future__ import annotations

from statistics import median
from typing import Any

from audit.errors import UsageError
from audit.registry import Registry

# Table 1 (CIFAR10): (model, random crop, weight decay, variant) → (train %, test %)
TABLE1: list[tuple[str, bool, bool, str, float, float]] = [
    ("inception-small", True, True, "true", 100.0, 89.05),
    ("inception-small", True, False, "true", 100.0, 89.31),
    ("inception-small", False, True, "true", 100.0, 86.03),
    ("inception-small", False, False, "true", 100.0, 85.75),
    ("inception-small", False, False, "random-labels", 100.0, 9.78),
    ("inception-small-nobn", False, True, "true", 100.0, 83.00),
    ("inception-small-nobn", False, False, "true", 100.0, 82.00),
    ("inception-small-nobn", False, False, "random-labels", 100.0, 10.12),
    ("alexnet-small", True, True, "true", 99.90, 81.22),
    ("alexnet-small", True, False, "true", 99.82, 79.66),
    ("alexnet-small", False, True, "true", 100.0, 77.36),
    ("alexnet-small", False, False, "true", 100.0, 76.07),
    ("alexnet-small", False, False, "random-labels", 99.82, 9.86),
    ("mlp-3x512", False, True, "true", 100.0, 53.35),
    ("mlp-3x512", False, False, "true", 100.0, 52.39),
    ("mlp-3x512", False, False, "random-labels", 100.0, 10.48),
    ("mlp-1x512", False, True, "true", 99.80, 50.39),
    ("mlp-1x512", False, False, "true", 100.0, 50.51),
    ("mlp-1x512", False, False, "random-labels", 99.34, 10.61),
]

# Figure 1 (read off the figure, ≈): test error at p = 0 and p = 1, and time to overfit at p = 1 relative to true
FIG1: dict[str, dict[str, float]] = {
    "inception-small": {"error_p0": 0.13, "error_p1": 0.90, "fit_ratio_p1": 3.6},
    "alexnet-small": {"error_p0": 0.30, "error_p1": 0.90, "fit_ratio_p1": 1.55},
    "mlp-1x512": {"error_p0": 0.50, "error_p1": 0.90, "fit_ratio_p1": 2.0},
}
# Table 2 (ImageNet, Inception v3): (augmentation, dropout, weight decay, variant) → train top-1, top-5, test top-1,
# top-5 (%)
TABLE2: list[tuple[bool, bool, bool, str, float, float, float, float]] = [
    (True, True, True, "true", 92.18, 99.21, 77.84, 93.92),
    (True, False, False, "true", 92.33, 99.17, 72.95, 90.43),
    (False, False, True, "true", 90.60, 100.0, 67.18, 86.44),
    (False, False, False, "true", 99.53, 100.0, 59.80, 80.38),
    (False, True, True, "random-labels", 91.18, 97.95, 0.09, 0.49),
    (False, False, True, "random-labels", 87.81, 96.15, 0.12, 0.50),
    (False, False, False, "random-labels", 95.20, 99.14, 0.11, 0.56),
]


def table1_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each Table 1 row with the median of our matching CIFAR10 runs (seeds) and the differences."""
    out = []
    for model, crop, decay, variant, train, test in TABLE1:
        ours = [r for r in rows if r["status"] == "complete" and r["dataset"] == "cifar10" and r["model"] == model
                and r["variant"] == variant and ("crop" in r["hyperparameters"]["augment"]) == crop
                and (r["hyperparameters"]["weight_decay"] > 0) == decay]
        our_train = median([100 * r["train_acc"] for r in ours]) if ours else None
        our_test = median([100 * r["test_acc"] for r in ours]) if ours else None
        out.append({"model": model, "crop": crop, "weight_decay": decay, "variant": variant, "runs": len(ours),
                    "paper_train": train, "paper_test": test, "train": our_train, "test": our_test,
                    "train_diff": None if our_train is None else our_train - train,
                    "test_diff": None if our_test is None else our_test - test})
    return out


def fig1_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Test error at p = 0 and 1 and time to fit at p = 1 (relative to true) per model, ours beside the paper's."""
    out = []
    for model, paper in FIG1.items():
        mine = [r for r in rows if r["status"] == "complete" and r["dataset"] == "cifar10" and r["model"] == model
                and r["corrupt"] is not None]
        errors = {p: [1 - r["test_acc"] for r in mine if r["corrupt"] == p] for p in (0.0, 1.0)}
        steps = {p: [r["steps_to_fit"] for r in mine if r["corrupt"] == p and r["steps_to_fit"]] for p in (0.0, 1.0)}
        ratio = median(steps[1.0]) / median(steps[0.0]) if steps[0.0] and steps[1.0] else None
        ours = {"error_p0": median(errors[0.0]) if errors[0.0] else None,
                "error_p1": median(errors[1.0]) if errors[1.0] else None, "fit_ratio_p1": ratio}
        for key, value in paper.items():
            out.append({"model": model, "quantity": key, "paper": value, "ours": ours[key],
                        "diff": None if ours[key] is None else ours[key] - value, "runs": len(mine)})
    return out


def table2_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each Table 2 row with the median of our matching ImageNet Inception v3 runs (seeds): top-1 and top-5 (%),
    train and test, and the differences; top-5 is null for runs that did not record it."""
    out = []

    def med(values: list[float | None]) -> float | None:
        known = [100 * v for v in values if v is not None]
        return median(known) if known else None

    for augment, dropout, decay, variant, *paper in TABLE2:
        ours = [r for r in rows if r["status"] == "complete" and r["dataset"] == "imagenet"
                and r["model"] == "inception-v3" and r["variant"] == variant
                and (r["hyperparameters"]["augment"] != "none") == augment
                and (r["hyperparameters"]["dropout"] > 0) == dropout
                and (r["hyperparameters"]["weight_decay"] > 0) == decay]
        line: dict[str, Any] = {"augment": augment, "dropout": dropout, "weight_decay": decay, "variant": variant,
                                "runs": len(ours)}
        for key, value in zip(("train", "train_top5", "test", "test_top5"), paper):
            field = {"train": "train_acc", "test": "test_acc"}.get(key, key)
            mine = med([r.get(field) for r in ours])
            line.update({f"paper_{key}": value, key: mine, f"{key}_diff": None if mine is None else mine - value})
        out.append(line)
    return out


def check_paper(paper: str | None) -> str | None:
    """--paper: a registered comparison (or None), else a one-line UsageError naming them."""
    if paper is not None and paper not in PAPERS:
        raise UsageError(f"unknown paper comparison '{paper}': use one of {', '.join(PAPERS)}")
    return paper


def compare(paper: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return PAPERS.get(paper)(rows)


PAPERS = Registry("paper comparison")
PAPERS.add("table1", table1_rows, description="Table 1: CIFAR10 train and test accuracy per model and regularizer")
PAPERS.add("table2", table2_rows, description="Table 2: ImageNet top-1 and top-5 accuracy")
PAPERS.add("fig1", fig1_rows, description="Figure 1: test error and time to fit at p = 0 and 1")
