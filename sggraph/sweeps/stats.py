"""Comparisons of two methods over seeds: paired differences, t-intervals and bootstrap intervals.

The results document reads every comparison the same way: with ``n`` seeds, method A is
*ahead* of method B only when the 95 % interval of the paired difference A − B (the same
seeds, which share their data, mazes and random tables) excludes zero; otherwise the two are
*within noise*. :func:`paired` returns that difference, its SEM (``std(ddof=1)/√n``), the
t-interval ``mean ± t₀.₉₇₅,ₙ₋₁ · SEM`` and the verdict; :func:`bootstrap_ci` gives the
percentile bootstrap interval of a mean (seeds resampled as units, fixed RNG seed).

The Student-t quantile is computed here (regularised incomplete beta function by its continued
fraction, inverted by bisection), so no statistics package is needed.

Examples
--------
>>> round(t_quantile(0.975, 5), 4)
2.5706
>>> d = paired([0.8, 0.7, 0.9], [0.5, 0.6, 0.55])     # three seeds: +0.25 on average, but spread
>>> round(d.mean, 4), d.n, d.verdict
(0.25, 3, 'within noise')
>>> paired([0.8, 0.7, 0.9], [0.5, 0.45, 0.6]).verdict
'ahead'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Difference", "bootstrap_ci", "paired", "t_cdf", "t_quantile"]


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """Cumulative distribution function of Student's t with ``df`` degrees of freedom.

    >>> t_cdf(0.0, 3)
    0.5
    >>> round(t_cdf(12.706204736, 1), 6)
    0.975
    """
    x = df / (df + t * t)
    tail = 0.5 * _betainc(df / 2.0, 0.5, x)
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on :func:`t_cdf`).

    >>> round(t_quantile(0.975, 1), 3), round(t_quantile(0.975, 2), 4)
    (12.706, 4.3027)
    """
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def bootstrap_ci(values: Sequence[float] | np.ndarray, resamples: int = 10_000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampled as units; NaN for n < 2).

    >>> bootstrap_ci([1.0, 1.0, 1.0])
    (1.0, 1.0)
    """
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(resamples, len(v)))].mean(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    return float(np.percentile(means, tail)), float(np.percentile(means, 100.0 - tail))


@dataclass(frozen=True)
class Difference:
    """The paired difference A − B over ``n`` seeds: mean, SEM, 95 % t-interval and the verdict.

    ``verdict`` is ``"ahead"`` (the interval is above zero: A ahead of B), ``"behind"`` (below
    zero) or ``"within noise"`` (the interval contains zero, or n < 2).
    """

    mean: float
    sem: float
    low: float
    high: float
    n: int

    @property
    def verdict(self) -> str:
        if self.n < 2 or not math.isfinite(self.low):
            return "within noise"
        if self.low > 0:
            return "ahead"
        if self.high < 0:
            return "behind"
        return "within noise"

    def __str__(self) -> str:
        return f"{self.mean:+.3f} ± {self.sem:.3f} [{self.low:+.3f}, {self.high:+.3f}], n = {self.n}"


def paired(a: Sequence[float], b: Sequence[float] | None = None, level: float = 0.95) -> Difference:
    """The paired difference ``a − b`` (or the values ``a`` alone when ``b`` is None) with its t-interval.

    Parameters
    ----------
    a, b : sequences of float, shape [n]
        One value per seed, the same seeds in the same order.
    level : float
        Coverage of the t-interval ``mean ± t_{(1+level)/2, n−1} · SEM``.

    >>> str(paired([1.0, 2.0, 3.0]))
    '+2.000 ± 0.577 [-0.484, +4.484], n = 3'
    """
    d = np.asarray(a, dtype=float)
    if b is not None:
        bb = np.asarray(b, dtype=float)
        if bb.shape != d.shape:
            raise ValueError(f"paired: {d.shape[0]} values against {bb.shape[0]}; pair the same seeds")
        d = d - bb
    n = len(d)
    mean = float(d.mean()) if n else float("nan")
    if n < 2:
        return Difference(mean, float("nan"), float("nan"), float("nan"), n)
    sem = float(d.std(ddof=1) / math.sqrt(n))
    half = t_quantile((1.0 + level) / 2.0, n - 1) * sem
    return Difference(mean, sem, mean - half, mean + half, n)
