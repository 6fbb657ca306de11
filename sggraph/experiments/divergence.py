"""Stopping a training run that diverges, keeping a resumable checkpoint of its last good step.

Every step the trainers check what costs nothing — the policy's outputs (and, for POPGym,
the loss and the gradient norm); a NaN or infinite gradient is caught by the compiled net's
mixers — and before every checkpoint that every parameter is finite, so a checkpoint is
always good. A failed check raises :class:`Diverged`; the trainer then replays from the last
checkpoint, checking every parameter after every step (exact, because runs are
deterministic), finds the first step that went wrong, saves the step before it as
``checkpoint.pt`` and stops with a :class:`~sggraph.GradientError` naming that step and the
likely fix.

>>> import torch
>>> all_finite([torch.ones(3), torch.zeros(2, 2)]), all_finite([torch.tensor([1.0, float("nan")])])
(True, False)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from ..engine import all_finite as tensor_finite
from ..exceptions import GradientError

__all__ = ["Diverged", "all_finite", "check_step", "divergence_error", "keep_last_good", "train_guarded"]


class Diverged(Exception):
    """A training step produced a non-finite loss, gradient or parameter (internal: becomes a GradientError)."""

    def __init__(self, step: int, reason: str) -> None:
        self.step = step
        self.reason = reason
        super().__init__(f"step {step}: {reason}")


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether every element of every tensor is finite (:func:`sggraph.engine.mixing.all_finite` on each)."""
    return all(tensor_finite(t) for t in tensors)


def check_step(step: int, parameters: Iterable[torch.Tensor], loss: float | None = None) -> None:
    """Raise :class:`Diverged` when the step's loss or the updated parameters are not finite."""
    if loss is not None and not math.isfinite(loss):
        raise Diverged(step, f"the loss is {loss}")
    if not all_finite(parameters):
        raise Diverged(step, "the update made parameters NaN or infinite")


def keep_last_good(rundir: Any, diverged: Diverged, replay: Callable[[bool, int], object],
                   key: str = "step") -> tuple[Diverged, int | None]:
    """Make ``checkpoint.pt`` hold the last good step before ``diverged``; returns the first bad step's
    :class:`Diverged` and the last good step (None: no checkpoint could be kept).

    ``replay(resume, stop)`` trains from the checkpoint (``resume``) or from the start up to step ``stop``,
    checking every step, and checkpoints it; ``key`` is the checkpoint's entry that counts the steps. A
    divergence noticed late (a run checks its parameters at checkpoints, its outputs every step) is traced
    back to the step that caused it this way. Should a replay diverge later than the run did (a run that is
    not deterministic), the last checkpoint written stays.
    """
    def checkpointed() -> int | None:
        return int(rundir.load_checkpoint(keys=(key,))[key]) if rundir.has_checkpoint() else None

    first = diverged
    for _ in range(3):
        last_good = first.step - 1
        saved = checkpointed()
        try:
            replay(saved is not None and saved <= last_good, last_good)
            return first, last_good
        except Diverged as earlier:
            if earlier.step >= first.step:
                break
            first = earlier
    return first, checkpointed()


def divergence_error(diverged: Diverged, last_good: int | None, unit: str, fix: str, file: str) -> GradientError:
    """The error a diverged run stops with: the step, why, where its checkpoint stands, and the fix."""
    kept = "no checkpoint was kept" if last_good is None else \
        f"checkpoint.pt holds {unit} {last_good}, the last good one (--resume continues from it)"
    return GradientError(f"training diverged at {unit} {diverged.step}: {diverged.reason.rstrip('.')}; the run "
                         f"stopped and {kept}", file=file, fix=fix)


def train_guarded(out: Any, config: dict, train: Callable[..., Any], *, unit: str, growable: str, fix: str,
                  resume: bool, overwrite: bool, progress: bool, checkpoints: bool) -> Any:
    """Claim the run directory ``out`` (:func:`~sggraph.experiments.rundir.open_run`) and ``train`` in it.

    ``train(rundir, resume, progress, checkpoints, stop=None)`` runs the experiment; ``unit`` ("step",
    "batch") names its steps and its checkpoint's counter, ``growable`` the setting a resumed run may extend
    ("steps", "batches"). When it raises :class:`Diverged`, the last
    good step is replayed into ``checkpoint.pt`` and a :class:`~sggraph.GradientError` naming the step and
    ``fix`` is raised.
    """
    from .rundir import open_run

    with open_run(out, config, growable=growable, resume=resume, overwrite=overwrite) as rd:
        try:
            return train(rd, resume, progress, checkpoints)
        except Diverged as diverged:
            first, last_good = keep_last_good(rd, diverged, lambda again, stop: train(rd, again, False, True, stop),
                                              key=unit)
            raise divergence_error(first, last_good, unit, fix, str(rd.path)) from None
