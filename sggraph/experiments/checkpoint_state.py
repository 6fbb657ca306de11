"""What a resume checkpoint stores of a model: its ``state_dict`` without the parameters the run
never uses.

A compiled net always carries its synthetic-gradient generators, but a backprop run
(``synthetic`` off) never evaluates, updates or reads them: they stay exactly as the seeded
construction made them. Its checkpoint leaves them out (for the MNIST bandit's SparseNet that
is 2.57 M of 5.39 M stored numbers, 10 MB), and resuming rebuilds them from the seed, so the
resumed run continues bit for bit. Everything else a resumed run needs is stored: the
parameters it trains, every λ, and (beside this, in the checkpoint) the optimizers' moments,
the random generators' states and the metrics so far.

>>> import torch
>>> m = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
>>> state = model_state(m, unused=m[1].parameters())
>>> sorted(state)
['0.bias', '0.weight']
>>> load_model_state(m, state, unused=m[1].parameters())
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..exceptions import ConfigError

__all__ = ["load_model_state", "model_state", "unused_parameters"]


def _names(module: torch.nn.Module, parameters: Iterable[torch.nn.Parameter]) -> set[str]:
    ids = {id(p) for p in parameters}
    return {name for name, p in module.named_parameters() if id(p) in ids}


def unused_parameters(net) -> list[torch.nn.Parameter]:
    """The parameters a run of ``net`` never uses: its generators' when synthetic gradients are off
    (``net`` None: none)."""
    if net is None or net.synthetic:
        return []
    return list(net.generator_parameters())


def model_state(module: torch.nn.Module, unused: Iterable[torch.nn.Parameter] = ()) -> dict:
    """``module.state_dict()`` without the entries of the ``unused`` parameters."""
    skip = _names(module, unused)
    return {k: v for k, v in module.state_dict().items() if k not in skip}


def load_model_state(module: torch.nn.Module, state: dict, unused: Iterable[torch.nn.Parameter] = ()) -> None:
    """Load a :func:`model_state` (or a full ``state_dict``) into ``module``.

    Raises
    ------
    ConfigError
        The state lacks entries other than the ``unused`` parameters', or has entries the module lacks.
    """
    result = module.load_state_dict(state, strict=False)
    missing = set(result.missing_keys) - _names(module, unused)
    if missing or result.unexpected_keys:
        what = sorted(missing)[:3] if missing else sorted(result.unexpected_keys)[:3]
        raise ConfigError(f"the checkpoint does not fit this model ({'missing' if missing else 'unexpected'} "
                          f"entries such as {', '.join(what)})",
                          fix="resume with the settings the run was started with, or start it anew")
