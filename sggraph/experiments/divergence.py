"""Stopping a training run that diverges, keeping a resumable checkpoint of its last good step.

After every step the trainers check that the loss, and every parameter after the update,
are finite (a NaN or infinite gradient is caught by the compiled net's mixers, or turns the
updated parameters non-finite). A step that fails raises :class:`Diverged`; the trainer
then rebuilds the state of the step before it — by replaying from the last checkpoint,
which is exact because runs are deterministic — saves it as ``checkpoint.pt``, and stops
with a :class:`~sggraph.GradientError` that names the step and the likely fix.

>>> import torch
>>> all_finite([torch.ones(3), torch.zeros(2, 2)]), all_finite([torch.tensor([1.0, float("nan")])])
(True, False)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from ..exceptions import GradientError

__all__ = ["Diverged", "all_finite", "check_step", "divergence_error", "keep_last_good"]


class Diverged(Exception):
    """A training step produced a non-finite loss, gradient or parameter (internal: becomes a GradientError)."""

    def __init__(self, step: int, reason: str) -> None:
        self.step = step
        self.reason = reason
        super().__init__(f"step {step}: {reason}")


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether every element of every tensor is finite (one synchronisation)."""
    sums = [t.detach().sum(dtype=torch.float64) for t in tensors if t.numel()]
    return not sums or bool(torch.isfinite(torch.stack(sums)).all())


def check_step(step: int, parameters: Iterable[torch.Tensor], loss: float | None = None) -> None:
    """Raise :class:`Diverged` when the step's loss or the updated parameters are not finite."""
    if loss is not None and not math.isfinite(loss):
        raise Diverged(step, f"the loss is {loss}")
    if not all_finite(parameters):
        raise Diverged(step, "the update made parameters NaN or infinite")


def keep_last_good(rundir: Any, diverged: Diverged, replay: Callable[[bool, int], object],
                   key: str = "step") -> int | None:
    """Make ``checkpoint.pt`` hold the step before ``diverged.step``; returns that step (None: no checkpoint).

    ``replay(resume, stop)`` trains from the checkpoint (``resume``) or from the start up to step ``stop`` and
    checkpoints it; ``key`` is the checkpoint's entry that counts the steps. Should the replay itself diverge
    (a run that is not deterministic), the last checkpoint written stays.
    """
    last_good = diverged.step - 1
    resume = rundir.has_checkpoint() and rundir.load_checkpoint(keys=(key,))[key] <= last_good
    try:
        replay(resume, last_good)
    except Diverged:
        return int(rundir.load_checkpoint(keys=(key,))[key]) if rundir.has_checkpoint() else None
    return last_good


def divergence_error(diverged: Diverged, last_good: int | None, unit: str, fix: str, file: str) -> GradientError:
    """The error a diverged run stops with: the step, why, where its checkpoint stands, and the fix."""
    kept = "no checkpoint was kept" if last_good is None else \
        f"checkpoint.pt holds {unit} {last_good}, the last good one (--resume continues from it)"
    return GradientError(f"training diverged at {unit} {diverged.step}: {diverged.reason.rstrip('.')}; the run "
                         f"stopped and {kept}", file=file, fix=fix)
