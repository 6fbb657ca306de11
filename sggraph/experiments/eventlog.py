"""TensorBoard event files in a run directory (``torch.utils.tensorboard.SummaryWriter``).

Every training run writes, beside ``metrics.csv``, TensorBoard event files into its own
directory, so ``tensorboard --logdir RUN_DIR`` shows one run and ``tensorboard --logdir
SWEEP_DIR`` (or any parent folder) compares every run below it, one run per directory.
Scalars carry the names of ``metrics.csv``'s columns (``eval_reward``, ``lambda_h1``,
``success_rate``...) plus the per-step training quantities (``train_reward``,
``generator_loss``, ``grad_norm``, ``seconds_per_step``); histograms ``lambda/NODE`` hold
the per-neuron λ (θ) of each layer or state.

A resumed run discards the events its killed predecessor wrote after the checkpoint it
resumes from (``purge_step``), so every step appears once.

>>> import tempfile
>>> from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
>>> d = tempfile.mkdtemp()
>>> with EventLog(d) as log:
...     log.scalars({"step": 1, "eval_reward": 0.5, "method": "sgprop"}, step=1)
>>> acc = EventAccumulator(d); _ = acc.Reload()
>>> acc.Tags()["scalars"], [e.value for e in acc.Scalars("eval_reward")]
(['eval_reward'], [0.5])
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from numbers import Real
from pathlib import Path
from typing import Any

__all__ = ["EventLog"]


class EventLog:
    """The TensorBoard event writer of one run directory.

    Parameters
    ----------
    path : str or Path
        The run directory (event files ``events.out.tfevents.*`` go directly into it).
    purge_step : int, optional
        A resumed run's first step: events of earlier files at or after it are discarded.
    skip : iterable of str
        Row keys that are axes, not scalars (``step``, ``batch``...).
    """

    def __init__(self, path: str | Path, purge_step: int | None = None,
                 skip: Iterable[str] = ("step", "batch", "samples", "episodes")) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.path = Path(path)
        self.skip = frozenset(skip)
        self.writer = SummaryWriter(log_dir=str(self.path), purge_step=purge_step, flush_secs=30)

    def scalar(self, tag: str, value: float, step: int) -> None:
        """One scalar (non-finite values are skipped)."""
        if math.isfinite(value):
            self.writer.add_scalar(tag, value, global_step=step)

    def scalars(self, row: Mapping[str, Any], step: int) -> None:
        """Every numeric entry of a ``metrics.csv`` row but the axes, under its column name."""
        for key, value in row.items():
            if key not in self.skip and isinstance(value, Real) and not isinstance(value, bool):
                self.scalar(key, float(value), step)

    def histogram(self, tag: str, values: Any, step: int) -> None:
        """A histogram of ``values`` (a tensor or array)."""
        self.writer.add_histogram(tag, values, global_step=step)

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EventLog({str(self.path)!r})"
