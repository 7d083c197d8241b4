"""Small pieces shared by the HTML report's sections: escaping, anchors, figures as data URIs, table cells,
the variant colour key, and which cached measures are natural logs."""

from __future__ import annotations

import base64
import html
import io
import re
from typing import Any

from audit.render.palette import VARIANT_COLOURS, variant_colour
from audit.render.tables import fmt
from audit.store.record import RunRecord

DPI = 90


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def measure_anchors(names: list[str]) -> dict[str, str]:
    """An id per measure, unique and made of safe characters."""
    anchors: dict[str, str] = {}
    for name in names:
        base = "m-" + re.sub(r"[^A-Za-z0-9_-]+", "_", name)
        anchor, n = base, 1
        while anchor in anchors.values():
            n += 1
            anchor = f"{base}-{n}"
        anchors[name] = anchor
    return anchors


def png_uri(plt: Any, figure: Any, dpi: int = DPI, tight: bool = False) -> str:
    """The figure as a base64 PNG data URI; the figure is closed."""
    buffer = io.BytesIO()
    if tight:
        figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=dpi)
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


EXTERNAL = re.compile(r"""(?:href|src)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?\s*(?:https?:)?//""", re.I)


def image_uri(image: bytes | str) -> str:
    """A caller's PNG bytes or SVG text as a data URI; an SVG that would fetch anything is refused."""
    if isinstance(image, bytes):
        if not image.startswith(b"\x89PNG\r\n\x1a\n"):
            raise ValueError("an extra figure given as bytes must be a PNG")
        return "data:image/png;base64," + base64.b64encode(image).decode("ascii")
    if EXTERNAL.search(image):
        raise ValueError("an extra figure's SVG refers to an outside address; the report must fetch nothing")
    return "data:image/svg+xml;base64," + base64.b64encode(image.encode("utf-8")).decode("ascii")


def img(uri: str, alt: str, css: str = "") -> str:
    return f'<img src="{uri}" alt="{esc(alt)}"{f" class={chr(34)}{css}{chr(34)}" if css else ""}>'


def cell_value(value: Any) -> tuple[str, str]:
    """(text shown, sort key) of a table cell."""
    if isinstance(value, bool):
        return ("yes" if value else "no"), str(int(value))
    if isinstance(value, (int, float)):
        return fmt(value, 3), repr(float(value))
    if value is None:
        return "—", ""
    if isinstance(value, (list, tuple)):
        text = ", ".join(fmt(v, 3) if isinstance(v, float) else str(v) for v in value)
        return (text or "—"), text
    if isinstance(value, dict):
        text = "; ".join(f"{k}: {cell_value(v)[0]}" for k, v in value.items())
        return (text or "—"), text
    return str(value), str(value)


def measure_logs(records: list[RunRecord]) -> dict[str, bool]:
    """Whether each cached measure is reported as a natural log, as its cached values recorded."""
    logs: dict[str, bool] = {}
    for record in records:
        for key, entry in record.measures.items():
            if "log" in entry:
                logs.setdefault(key.split("@")[0], bool(entry["log"]))
    return logs


def legend_html(rows: list[dict[str, Any]]) -> str:
    """The variant colours used by every figure, as a key."""
    present = {r["variant"] for r in rows}
    keys = [v for v in VARIANT_COLOURS if v in present] + sorted(present - set(VARIANT_COLOURS))
    swatches = "".join(f'<span class="key"><i style="background:{variant_colour(v)}"></i>{esc(v)}</span>'
                       for v in keys)
    return f"<p class=\"legend\">colours: {swatches}</p>"
