"""The benchmark's leaderboard: per suite experiment the randomization verdict (audit.judge.verdict.judge), over
the sweep experiments the hyperparameter protocols (audit.judge.sweeps.sweep_stats), each measure ranked per
column and overall. Pure: rows in, plain values out."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import median
from typing import Any

from audit.judge.sweeps import sweep_stats
from audit.judge.verdict import judge, rule

MIN_SIGN_PAIRS = 10  # sign-error and CMI are ranked only when they rest on this many pairs outside test noise

AGGREGATION = ("rank per column: 1 = best, equal values share the mean of their places, a measure without a "
               "value (undefined, constant, not cached) shares the last places; a column no measure has a value "
               f"in is left out, and so are sign-error and CMI when they rest on fewer than {MIN_SIGN_PAIRS} pairs "
               "of runs outside test noise. score = the mean of a measure's ranks over every column shown, each column "
               "counting once; the overall rank orders the scores (lower is better), ties sharing the mean place")

ORIENTATION = ("values are oriented by each measure's direction (flipped where smaller means more complex), so "
               "larger is better in every column but sign-error")


@dataclass(frozen=True)
class Column:
    """One ranked column of the leaderboard."""

    key: str  # in the JSON: the rank's key under "ranks", and the value's key (plus .verdict/.auc/.trend)
    label: str  # the table's header
    protocol: str  # "randomization" or "sweeps"
    better: str  # "higher" or "lower"
    what: str


@dataclass(frozen=True)
class PartRows:
    """One suite experiment's rows (audit.judge.rows.run_rows) and whether it enters the sweep protocols."""

    name: str
    rows: list[dict[str, Any]]
    sweep: bool


def average_ranks(keys: list[tuple[float, ...] | None]) -> list[float]:
    """Rank 1 for the largest key (tuples compare in order); equal keys share the mean of their places; None
    keys share the last places."""
    order = sorted(range(len(keys)), key=lambda i: (keys[i] is None, tuple(-k for k in keys[i] or ())))
    ranks = [0.0] * len(keys)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and keys[order[end + 1]] == keys[order[start]]:
            end += 1
        for i in order[start:end + 1]:
            ranks[i] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def oriented(value: float | None, direction: int) -> float | None:
    return None if value is None else value * direction


def middle(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(median(present)) if present else None


def randomization_entries(part: PartRows, judged: dict[str, dict[str, Any]], correction: str) -> dict[str, dict]:
    """Per measure, for one suite experiment: its overall verdict and the median over the experiment's families
    of the oriented auc and trend."""
    judgement = judge(part.rows, judged, correction)
    summaries = {s["measure"]: s for s in judgement["summary"]}
    out = {}
    for name, measure_ in judged.items():
        direction = measure_["direction"]
        mine = [s for s in judgement["verdicts"] if s["measure"] == name]
        auc = middle([None if s.get("auc") is None else (s["auc"] if direction > 0 else 1 - s["auc"]) for s in mine])
        trend = middle([oriented(s.get("trend"), direction) for s in mine])
        out[name] = {f"{part.name}.verdict": summaries[name]["verdict"], f"{part.name}.auc": auc,
                     f"{part.name}.trend": trend}
    return out


def sweep_entries(rows: list[dict[str, Any]], judged: dict[str, dict[str, Any]]) -> tuple[dict[str, dict], list[str]]:
    """Per measure, over the true-label runs of every sweep experiment together: Ψ per axis and overall
    (oriented), sign-error mean and worst axis, CMI with its sign; and the axes that have a Ψ."""
    out, axes = {}, set()
    for name, measure_ in judged.items():
        direction = measure_["direction"]
        stats = sweep_stats(rows, name, direction)
        axes |= set(stats["psi"])
        cmi, sign = stats["cmi"], stats["cmi_sign"]
        out[name] = {**{f"psi.{axis}": oriented(psi, direction) for axis, psi in stats["psi"].items()},
                     "psi": oriented(stats["psi_overall"], direction),
                     "sign_error_mean": stats["sign_error_mean"], "sign_error_worst": stats["sign_error_worst"],
                     "sign_error_pairs": stats["sign_error_pairs"],
                     "cmi": None if cmi is None else cmi * (sign or 0), "cmi_sign": sign}
    return out, sorted(axes)


def columns_for(parts: list[PartRows], axes: list[str]) -> list[Column]:
    columns = [Column(p.name, p.name, "randomization", "higher",
                      f"{p.name}: the randomization test, ranked by the median oriented auc over its families, "
                      "then the median oriented trend") for p in parts]
    columns += [Column(f"psi.{axis}", f"Ψ {axis}", "sweeps", "higher",
                       f"granulated Kendall Ψ along {axis} (oriented)") for axis in axes]
    columns += [Column("psi", "Ψ", "sweeps", "higher", "Ψ averaged over the axes (oriented)"),
                Column("sign_error_mean", "sign-err", "sweeps", "lower", "sign-error over every pair, mean"),
                Column("sign_error_worst", "worst", "sweeps", "lower", "sign-error of the worst axis"),
                Column("cmi", "CMI±", "sweeps", "higher", "conditional mutual information (bits) times the sign "
                                                          "of the agreement of the oriented measure with the gap")]
    return columns


def rank_key(entry: dict[str, Any], column: Column) -> tuple[float, ...] | None:
    if column.key in PAIRED and (entry.get("sign_error_pairs") or 0) < MIN_SIGN_PAIRS:
        return None
    if column.protocol == "randomization":
        auc, trend = entry[f"{column.key}.auc"], entry[f"{column.key}.trend"]
        return None if auc is None else (auc, -math.inf if trend is None else trend)
    value = entry.get(column.key)
    if value is None:
        return None
    return (value,) if column.better == "higher" else (-value,)


PAIRED = ("sign_error_mean", "sign_error_worst", "cmi")  # columns computed over pairs outside test noise


def left_out(entries: dict[str, dict[str, Any]], columns: list[Column]) -> list[str]:
    """Why a sweep statistic that some measure has is not a column."""
    kept = {c.key for c in columns}
    pairs = max((e.get("sign_error_pairs") or 0 for e in entries.values()), default=0)
    if any(k not in kept for k in PAIRED) and any(e.get("sign_error_mean") is not None for e in entries.values()):
        return [f"sign-error and CMI are not ranked: they rest on at most {pairs} pair{'s' * (pairs != 1)} of runs "
                f"outside test noise, fewer than {MIN_SIGN_PAIRS}"]
    return []


def leaderboard(parts: list[PartRows], judged: dict[str, dict[str, Any]], correction: str = "holm") -> dict[str, Any]:
    """The leaderboard of the measures of `judged` (in order; they are the correction family) over the parts."""
    entries = {name: {"measure": name, "measure_family": m["family"], "direction": m["direction"]}
               for name, m in judged.items()}
    for part in parts:
        for name, values in randomization_entries(part, judged, correction).items():
            entries[name].update(values)
    sweep_rows = [row for part in parts if part.sweep for row in part.rows]
    swept, axes = sweep_entries(sweep_rows, judged)
    for name, values in swept.items():
        entries[name].update(values)
    columns = []
    for column in columns_for(parts, axes):
        keys = [rank_key(entries[name], column) for name in judged]
        if any(k is not None for k in keys):
            columns.append(column)
            for name, place in zip(judged, average_ranks(keys)):
                entries[name].setdefault("ranks", {})[column.key] = place
    for entry in entries.values():
        ranks = entry.setdefault("ranks", {})
        entry["score"] = sum(ranks.values()) / len(ranks) if ranks else None
    overall = average_ranks([None if e["score"] is None else (-e["score"],) for e in entries.values()])
    for entry, place in zip(entries.values(), overall):
        entry["rank"] = place
    board = sorted(entries.values(), key=lambda e: (e["rank"], list(judged).index(e["measure"])))
    return {"leaderboard": [{"measure": e["measure"], "rank": e["rank"], **e} for e in board],
            "columns": [asdict(c) for c in columns], "left_out": left_out(entries, columns), "aggregation": AGGREGATION, "orientation": ORIENTATION,
            "correction": {"method": correction, "family": list(judged), "size": len(judged)},
            "sweep_experiments": [p.name for p in parts if p.sweep], "rule": rule(correction)}
