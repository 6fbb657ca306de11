"""How a run writes its metrics: to significant digits, never to fixed decimals.

A fixed number of decimals writes a generator loss of ``3e-10`` as ``0.0`` in every row;
significant digits keep what a number measures at any scale.

>>> significant(3.14159265e-10), significant(1234.56789), significant(-0.000123456789, 3)
(3.14159e-10, 1234.57, -0.000123)
>>> significant(0.0), significant(float("nan")) != significant(float("nan"))
(0.0, True)
"""

from __future__ import annotations

import math

__all__ = ["METRIC_DIGITS", "significant"]

#: Significant digits of a metric written to ``metrics.csv``.
METRIC_DIGITS = 6


def significant(value: float, digits: int = METRIC_DIGITS) -> float:
    """``value`` rounded to ``digits`` significant digits (NaN and infinities unchanged)."""
    value = float(value)
    if not math.isfinite(value) or value == 0.0:
        return value
    return float(f"{value:.{digits}g}")
