"""Stopping a training run between two steps, as a Ctrl-C would: the run directory then holds exactly what the
last checkpoint wrote."""

from __future__ import annotations

import contextlib

from sggraph.experiments import mnist_bandit


class Interrupted(BaseException):
    """Raised between two steps (a BaseException, like KeyboardInterrupt: no handler of the run catches it)."""


def run_bandit_until(cfg, out, steps_in_segment: int | None, monkeypatch, **kwargs) -> None:
    """``run_bandit(cfg, out, **kwargs)``, stopped before the segment's step ``steps_in_segment + 1``
    (None: to its end). The stop is raised where every step begins (``follow_load``)."""
    calls = [0]
    real = mnist_bandit.follow_load

    def follow_load():
        calls[0] += 1
        if steps_in_segment is not None and calls[0] > steps_in_segment:
            raise Interrupted
        real()

    with monkeypatch.context() as m:
        m.setattr(mnist_bandit, "follow_load", follow_load)
        with contextlib.suppress(Interrupted):
            mnist_bandit.run_bandit(cfg, out, **kwargs)
