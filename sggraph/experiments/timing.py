"""Interleaved step timing for the benchmarks (``sggraph bench``): warm-up rounds, then medians.

>>> ms = median_ms({"a": lambda: None, "b": lambda: None}, steps=3, warmup=1)
>>> sorted(ms), all(v >= 0 for v in ms.values())
(['a', 'b'], True)
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

__all__ = ["median_ms", "nothing", "run_rounds"]


def nothing() -> None:
    """The default ``tick``: no progress display."""


def run_rounds(steps_of: dict[str, Callable[[], None]], rounds: int, tick: Callable[[], object] = nothing) -> None:
    """Run each of ``steps_of``'s steps ``rounds`` times, untimed (warm-up)."""
    for _ in range(rounds):
        for step in steps_of.values():
            step()
            tick()


def median_ms(steps_of: dict[str, Callable[[], None]], steps: int, warmup: int,
              tick: Callable[[], object] = nothing) -> dict[str, float]:
    """Median milliseconds of each of ``steps_of``'s steps over ``steps`` timed rounds after ``warmup``
    untimed ones; the steps are interleaved so drift in the machine's load hits all alike."""
    times: dict[str, list[float]] = {m: [] for m in steps_of}
    run_rounds(steps_of, warmup, tick)
    for _ in range(steps):
        for m, step in steps_of.items():
            t0 = time.perf_counter()
            step()
            times[m].append(time.perf_counter() - t0)
            tick()
    return {m: statistics.median(t) * 1e3 for m, t in times.items()}
