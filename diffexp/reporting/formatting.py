"""Numbers as the report prints them: about three significant digits per column, intervals as
``point [low, high]``, infinities as words."""

from __future__ import annotations

import math

import numpy as np


def decimals(values) -> int:
    """Decimals giving about three significant digits for the largest magnitude in a column."""
    finite = [abs(v) for v in values if v is not None and np.isfinite(v)]
    top = max(finite, default=0.0)
    return 3 if top == 0 else int(min(6, max(0, 2 - math.floor(math.log10(top)))))


def fmt(value: float, digits: int, inf: str = "not reached") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if np.isinf(value):
        return inf if value > 0 else "-" + inf
    return f"{value:,.{digits}f}"


def fmt_ci(point: float, low: float, high: float, digits: int, inf: str = "not reached") -> str:
    text = fmt(point, digits, inf)
    if text == "–" or low is None or (isinstance(low, float) and math.isnan(low)):
        return text
    return f"{text} [{fmt(low, digits, '∞')}, {fmt(high, digits, '∞')}]"


def slug(text: str) -> str:
    """A file-name-safe key from a label."""
    return "".join(c if c.isalnum() else "_" for c in text).strip("_")[:40] or "task"
