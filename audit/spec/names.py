"""Name grammars of the spec: variants (corrupt:P), preprocessings (imagenet[:SIZE])."""

from __future__ import annotations

import math

from audit.errors import UsageError, unknown_name
from audit.spec.run import VARIANTS


def parse_variant(text: str) -> tuple[str, float | None]:
    """'true', 'corrupt:0.2', 'random-labels', ... → (variant, p). corrupt:0 is true, corrupt:1 random-labels."""
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
    if name not in VARIANTS or arg:
        raise unknown_name("variant", text, list(VARIANTS) + ["corrupt:P"])
    if name == "true":
        return "true", 0.0
    if name == "random-labels":
        return "random-labels", 1.0
    return name, None
