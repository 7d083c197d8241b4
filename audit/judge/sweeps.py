"""The hyperparameter protocols over true-label runs (Jiang et al. 2020; Dziugaite et al. 2020): τ, Ψ, sign-error, CMI."""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any

import numpy as np

from audit.judge.statistics import conditional_mutual_information, hoeffding, json_key, kendall


def axes_of(rows: list[dict[str, Any]]) -> list[str]:
    """Hyperparameters that take more than one value among the rows."""
    keys = set().union(*(r["hyperparameters"] for r in rows)) if rows else set()
    varying = [k for k in sorted(keys) if len({json_key(r["hyperparameters"].get(k)) for r in rows}) > 1]
    if "width" in varying or "depth" in varying:
        varying = [k for k in varying if k != "model"]  # the model axis is its width and depth
    return varying


def axis_groups(rows: list[dict[str, Any]], axis: str, axes: list[str]) -> list[list[dict[str, Any]]]:
    """Groups of runs equal in every other axis and in seed, varying along `axis`."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        key = tuple(json_key(r["hyperparameters"].get(a)) for a in axes if a != axis) + (r["seed"],)
        groups[key].append(r)
    return [g for g in groups.values() if len({json_key(r["hyperparameters"].get(axis)) for r in g}) > 1]


def sweep_stats(rows: list[dict[str, Any]], name: str, direction: int) -> dict[str, Any]:
    """Ψ, sign-error and CMI of one measure over the complete true-label runs of all families."""
    runs = [r for r in rows if r["status"] == "complete" and r["variant"] == "true"
            and r["measures"].get(name) is not None and r["gap"] is not None]
    axes = axes_of(runs)
    psi: dict[str, float] = {}
    errors: dict[str, list[float]] = {}
    agreements: dict[str, list[tuple[int, int]]] = {}
    for axis in axes:
        taus = []
        for group in axis_groups(runs, axis, axes):
            tau, _ = kendall([r["measures"][name] for r in group], [r["gap"] for r in group])
            if tau is not None:
                taus.append(tau)
            for a, b in itertools.combinations(group, 2):
                if a["hyperparameters"].get(axis) == b["hyperparameters"].get(axis):
                    continue
                noise = 2 * hoeffding(min(a.get("test_size") or 1, b.get("test_size") or 1))
                gap_change = b["gap"] - a["gap"]
                if abs(gap_change) <= noise:
                    continue
                change = direction * (b["measures"][name] - a["measures"][name])
                errors.setdefault(axis, []).append(0.5 if change == 0 else float(np.sign(change) != np.sign(gap_change)))
                # both orders of the pair, so that sign(Δgap) is balanced and only agreement is measured
                agreements.setdefault(axis, []).extend([(int(change > 0), int(gap_change > 0)),
                                                        (int(change < 0), int(gap_change < 0))])
        if taus:
            psi[axis] = float(np.mean(taus))
    per_axis_error = {axis: float(np.mean(e)) for axis, e in errors.items()}
    pairs = sum(len(e) for e in errors.values())
    cmi, sign = conditional_mutual_information(agreements)
    return {"axes": axes, "psi": psi, "psi_overall": float(np.mean(list(psi.values()))) if psi else None,
            "sign_error_mean": float(np.mean([x for e in errors.values() for x in e])) if pairs else None,
            "sign_error_worst": max(per_axis_error.values()) if per_axis_error else None,
            "sign_error_by_axis": per_axis_error, "sign_error_pairs": pairs, "cmi": cmi, "cmi_sign": sign}
