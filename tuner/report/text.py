"""Text for the report: escaping and number formatting, shared by the figures
and the page so both show a value the same way.

Every string that comes from data goes through `esc`, in the page and in figure
text alike: a run's files may have been written by anyone.
"""

from __future__ import annotations

import html
import math


def esc(x) -> str:
    return html.escape(str(x), quote=True)


def finite_or_none(x: float | None) -> float | None:
    """A finite float, or None (a gap in a figure)."""
    return float(x) if x is not None and math.isfinite(x) else None


def fmt_num(x: float | None, digits: int = 1) -> str:
    return "—" if finite_or_none(x) is None else f"{x:,.{digits}f}"


def clip(text: str, max_chars: int) -> str:
    """One line of at most `max_chars` characters (reasons can be whole tracebacks)."""
    text = " ".join(str(text).split())
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"
