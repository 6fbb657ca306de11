"""Validation shared by the experiment configs."""

from __future__ import annotations

import math

from ..exceptions import ConfigError

__all__ = ["check_lambda_setting"]


def check_lambda_setting(lam: str, symbol: str = "λ") -> None:
    """Raise :class:`~sggraph.ConfigError` unless ``lam`` is ``"adaptive"`` or a number in ``[0, 1]``.

    >>> check_lambda_setting("0.5"); check_lambda_setting("adaptive")
    >>> check_lambda_setting("2")
    Traceback (most recent call last):
    ...
    sggraph.exceptions.ConfigError: --lambda 2.0 is outside [0, 1]. Fix: use a λ in [0, 1].
    """
    if lam == "adaptive":
        return
    try:
        value = float(lam)
    except ValueError:
        raise ConfigError(f"--lambda must be 'adaptive' or a number, got {lam!r}",
                          fix="pass --lambda adaptive or e.g. --lambda 0.9") from None
    if not 0 <= value <= 1 or math.isnan(value):
        raise ConfigError(f"--lambda {value} is outside [0, 1]", fix=f"use a {symbol} in [0, 1]")
