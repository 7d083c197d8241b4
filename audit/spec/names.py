"""Name grammars of the spec: variants (corrupt:P), preprocessings (imagenet[:SIZE]), plain names and store names."""

from __future__ import annotations

import math
from typing import Any

from audit.errors import UsageError, unknown_name
from audit.spec.run import VARIANT_NAME, VARIANTS, control_character


def parse_variant(text: str) -> tuple[str, float | None]:
    """'true', 'corrupt:0.2', 'random-labels', ... → (variant, p). corrupt:0 is true, corrupt:1 random-labels.
    Another well-formed name is a plugin's variant on the input axis (p None); whether one is registered is
    checked where specs enter (audit.pipeline.names), so that reading a store never needs the plugin."""
    check_text("variant", text)
    name, _, arg = text.strip().partition(":")
    if name == "corrupt":
        try:
            p = float(arg)
        except ValueError:
            raise UsageError(f"variant '{text}': corrupt needs a probability, e.g. corrupt:0.2") from None
        if not 0.0 <= p <= 1.0 or math.isnan(p):
            raise UsageError(f"variant '{text}': the corruption p must lie in [0, 1]")
        if p == 0.0:
            return "true", 0.0
        if p == 1.0:
            return "random-labels", 1.0
        return "corrupt", p
    if arg or (name not in VARIANTS and not VARIANT_NAME.fullmatch(name)):
        raise unknown_name("variant", text, list(VARIANTS) + ["corrupt:P"])
    if name == "true":
        return "true", 0.0
    if name == "random-labels":
        return "random-labels", 1.0
    return name, None


def check_text(what: str, text: Any) -> str:
    """text, when it is a non-empty string free of control characters; else a UsageError naming what."""
    if not isinstance(text, str):
        raise UsageError(f"{what} must be a string, got {text!r}")
    if not text.strip():
        raise UsageError(f"{what} must be a non-empty string")
    char = control_character(text)
    if char is not None:
        raise UsageError(f"{what} holds a control character ({char!a}): {text!r}")
    return text


def check_store_name(text: Any, what: str = "store") -> str:
    """A store name: a relative path under ./audit-runs, with no empty, '.' or '..' part, that the file system can
    hold (each part at most 255 bytes); else a UsageError naming what. (--out takes any path instead.)"""
    text = check_text(what, text)
    if text.startswith("/"):
        raise UsageError(f"{what} '{text}' is absolute: a store name is a folder under ./audit-runs (give any "
                         "path with --out instead)")
    parts = text.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise UsageError(f"{what} '{text}' must be a name under ./audit-runs, with no empty, '.' or '..' part "
                         "(give any path with --out instead)")
    if any(len(part.encode("utf-8", "surrogatepass")) > 255 for part in parts) or len(text) > 1024:
        raise UsageError(f"{what} '{text[:40]}...' is too long for a folder name")
    return text
