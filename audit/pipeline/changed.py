"""Runs whose model changed since they were trained: a user's or a plugin's model factory edited after `audit
run`. Training and scoring compare the recorded architecture with today's (they build the model anyway);
reading commands only hash the recorded source file, never importing user code."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from audit.errors import UsageError
from audit.models.architecture import changes, loads, source_state
from audit.models.registry import current_architecture, model_entry
from audit.spec.run import KERNEL_PREFIX, is_user_model
from audit.store.record import RunRecord


def own_model(name: str) -> bool:
    """A model whose definition lives outside audit: module:function, or registered by a plugin."""
    if name.startswith(KERNEL_PREFIX):
        return False
    return is_user_model(name) or model_entry(name).source is not None


def changed_runs(records: Iterable[RunRecord]) -> list[tuple[RunRecord, list[str]]]:
    """Each run of a user's or plugin's model whose architecture or source differs from today's, with what
    changed. Today's model is built once per recorded shape (importing the user's module, as training does);
    a run whose module cannot be imported from here is left to the command, which names it when it needs it."""
    today: dict[str, dict[str, Any] | None] = {}
    found = []
    for record in records:
        recorded = loads(record.attrs.get("architecture"))
        if recorded is None or not own_model(record.spec.model):
            continue
        key = f"{record.spec.model}|{recorded['input_shape']}|{recorded['num_classes']}|{record.spec.dropout}|" \
              f"{record.spec.batchnorm}"
        if key not in today:
            try:
                today[key] = current_architecture(record.spec.model, recorded, dropout=record.spec.dropout,
                                                  batchnorm=record.spec.batchnorm)
            except UsageError:  # "cannot load model ...": not importable from this directory
                today[key] = None
        if today[key] is None:
            continue
        what = changes(recorded, today[key])
        if what:
            found.append((record, what))
    return found


def describe_changed(changed: list[tuple[RunRecord, list[str]]]) -> str:
    """One line: how many runs, the first one and what changed in it."""
    record, what = changed[0]
    others = f" and {len(changed) - 1} more run{'s' * (len(changed) > 2)}" if len(changed) > 1 else ""
    return (f"run {record.run_id} ({record.spec.variant_label} seed {record.spec.seed}){others} were trained with "
            f"another {record.spec.model}: {'; '.join(what)}")


def refuse_changed(changed: list[tuple[RunRecord, list[str]]], command: str) -> None:
    """The one-line refusal of `run` or `score` on runs whose model changed."""
    if not changed:
        return
    if command == "run":
        fix = "train them again in place with --retrain, or into a new store with --out"
    else:
        fix = "retrain them with `audit run ... --retrain` (or train into a new store with --out) before scoring"
    raise UsageError(f"{describe_changed(changed)}; {fix}")


def replace_changed(changed: list[tuple[RunRecord, list[str]]]) -> list[str]:
    """--retrain: move each changed run's file aside (NAME.h5.replaced, never overwritten) so that it trains
    again in place; one line per run saying so."""
    lines = []
    for record, what in changed:
        path = Path(record.path)
        aside = path.with_name(path.name + ".replaced")
        number = 1
        while aside.exists():
            aside, number = path.with_name(f"{path.name}.replaced.{number}"), number + 1
        path.rename(aside)
        lines.append(f"retraining run {record.run_id} ({record.spec.variant_label} seed {record.spec.seed}): "
                     f"{'; '.join(what)}; the old file is kept as {aside.name}")
    return lines


def source_notices(records: Iterable[RunRecord]) -> list[str]:
    """For `report` and `show`: one line per user's model whose recorded source changed or cannot be checked."""
    seen: dict[str, str] = {}
    for record in records:
        recorded = loads(record.attrs.get("architecture"))
        if record.spec.model in seen or (recorded is None and not is_user_model(record.spec.model)):
            continue
        if recorded is None or recorded.get("source") is not None:
            seen[record.spec.model] = source_state(recorded)
    return [f"model {model}: source {state}; `audit run --retrain` retrains its runs" if state.startswith("changed")
            else f"model {model}: source {state}" for model, state in seen.items() if state != "unchanged"]
