"""A sweep's run records and the two numbers read from each learning curve: AUC and final.

A sweep directory holds one run directory per grid cell (``sggraph sweep``), each with a
``metrics.csv`` and, once finished, a ``summary.json``; a run's settings come from its
``sweep_run.json`` (or, failing that, from its name ``key=value,key=value``). The same layout
is what ``examples/sync_runs.py`` commits under ``examples/results/<study>/runs/``.

The AUC of a run is the area under its learning curve divided by the span of the x axis
(the mean height of the curve, trapezoid rule): ``Σ (y_i + y_{i+1})/2 · (x_{i+1} − x_i) /
(x_last − x_first)`` (the single value for a one-point curve). Its *final* value is the y value
of its last row. These two are the project's only definitions of "AUC" and "final"
(:func:`auc_and_final`).

Examples
--------
>>> curve_auc([0, 1, 3], [0.0, 1.0, 1.0])
0.8333333333333334
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import ConfigError

__all__ = ["Run", "auc_and_final", "curve_auc", "load_runs", "mean_sem"]


@dataclass
class Run:
    """One finished run: its name, settings and metric columns."""

    name: str
    path: Path
    settings: dict[str, Any]
    metrics: dict[str, np.ndarray] = field(repr=False)

    def __repr__(self) -> str:
        return f"Run({self.name!r}, {len(next(iter(self.metrics.values()), []))} rows)"


def _number(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return np.nan


def _parse_name(name: str) -> dict[str, Any]:
    from ..core.safe_yaml import parse_yaml
    from ..exceptions import SpecError

    out: dict[str, Any] = {}
    for part in name.split(","):
        if "=" in part:
            key, value = part.split("=", 1)
            try:
                out[key] = parse_yaml(value).data
            except SpecError:
                out[key] = value
    return out


def load_runs(sweep_dir: str | Path) -> tuple[list[Run], list[str]]:
    """The finished runs of a sweep directory (in the sweep's order), and the names of unfinished ones.

    Raises
    ------
    ConfigError
        The directory does not exist.
    """
    root = Path(sweep_dir)
    if not root.is_dir():
        raise ConfigError(f"no sweep directory {root}", fix="pass the --out directory of `sggraph sweep`")
    order: list[str] = []
    status = root / "sweep.json"
    if status.exists():
        try:
            order = [r["name"] for r in json.loads(status.read_text()).get("runs", [])]
        except (ValueError, KeyError, TypeError):
            order = []
    dirs = sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "metrics.csv").exists())
    names = [n for n in order if n in dirs] + [n for n in dirs if n not in order]
    runs, unfinished = [], []
    for name in names:
        path = root / name
        if not (path / "summary.json").exists():
            unfinished.append(name)
            continue
        settings = None
        if (path / "sweep_run.json").exists():
            try:
                settings = json.loads((path / "sweep_run.json").read_text()).get("grid")
            except ValueError:
                settings = None
        if settings is None:
            settings = _parse_name(name)
        with open(path / "metrics.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        if not rows:
            unfinished.append(name)
            continue
        metrics = {col: np.array([_number(r.get(col) or "") for r in rows], dtype=float) for col in rows[0]}
        runs.append(Run(name, path, dict(settings), metrics))
    return runs, unfinished


def curve_auc(x: Sequence[float], y: Sequence[float]) -> float:
    """Area under ``y(x)`` divided by the span of ``x`` (trapezoid rule): the curve's mean height.

    >>> curve_auc([5], [0.25])
    0.25
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) == 1 or x[-1] == x[0]:
        return float(y.mean())
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / (x[-1] - x[0]))


def auc_and_final(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """A run's AUC (:func:`curve_auc`) and final value (``y`` at the last row) from its learning curve.

    Parameters
    ----------
    x, y : sequences of float, shape [rows]
        The x column (samples, episodes, ...) and the y column (evaluation reward, success rate, ...)
        of the run's ``metrics.csv``, in row order.

    >>> auc_and_final([0, 1, 3], [0.0, 1.0, 0.5])
    (0.6666666666666666, 0.5)
    """
    return curve_auc(x, y), float(np.asarray(y, dtype=float)[-1])


def mean_sem(values: Sequence[float] | np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error of the mean (``std(ddof=1) / √n``; NaN for n = 1) along ``axis``.

    >>> mean_sem([1.0, 2.0, 3.0])
    (2.0, 0.5773502691896258)
    """
    a = np.asarray(values, dtype=float)
    n = a.shape[axis]
    mean = a.mean(axis=axis)
    sem = a.std(axis=axis, ddof=1) / math.sqrt(n) if n > 1 else np.full_like(mean, np.nan)
    if np.ndim(mean) == 0:
        return float(mean), float(sem)
    return mean, sem
