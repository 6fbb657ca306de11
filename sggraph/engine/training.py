"""One training step for any compiled graph: one forward, one backward, two optimizers.

The step is: forward; the caller's loss; one backward (the λ mixing happens inside
it); optional adaptive λ from that same backward; optional gradient clipping; the
model optimizer's step; then one generator update on the targets recorded in that
same backward — no second pass over the network.

Examples
--------
>>> import torch, sggraph
>>> g = sggraph.Graph(); g.add_node("z", 3); g.add_node("y", 1, ["z"], fn="linear")
>>> net = sggraph.compile(g)
>>> opt = torch.optim.SGD(net.model_parameters(), lr=0.1)
>>> gen_opt = torch.optim.SGD(net.generator_parameters(), lr=0.1)
>>> x = torch.randn(16, 3)
>>> result = train_step(net, lambda out: (out["y"] - 1).pow(2).mean(), {"z": x}, opt, gen_opt)
>>> result.loss > 0, result.generator_loss is not None
(True, True)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs
import torch

from .compile import CompiledGraph

__all__ = ["StepResult", "adam", "train_step"]


def adam(params, lr: float) -> torch.optim.Adam:
    """``torch.optim.Adam(params, lr)`` with the fused kernel where torch has one for the parameters.

    The same update rule and defaults (β = (0.9, 0.999), ε = 1e-8, no weight decay) in one pass
    over each parameter instead of about ten elementwise ops: measured here 4.4 → 1.5 ms per step
    on the bandit SparseNet's 2.8 M parameters (1 thread). Parameters may differ from the unfused
    loop in the last bits (a different order of the same floating-point operations).

    >>> opt = adam([torch.nn.Parameter(torch.zeros(3))], lr=0.01)
    >>> opt.defaults["lr"], opt.defaults["fused"]
    (0.01, True)
    """
    params = list(params)
    fusable = all(p.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64) for p in params)
    return torch.optim.Adam(params, lr=lr, fused=fusable or None)


@attrs.frozen
class StepResult:
    """What one :func:`train_step` produced.

    Attributes
    ----------
    loss : float
        The model loss.
    generator_loss : float or None
        The generators' regression loss on this step's targets (None when not updated).
    outputs : dict
        The forward's terminal outputs (detached).
    """

    loss: float
    generator_loss: float | None
    outputs: Mapping[str, torch.Tensor]


def train_step(net: CompiledGraph, loss_fn: Callable[[Mapping[str, torch.Tensor]], torch.Tensor],
               inputs: Mapping[str, torch.Tensor], optimizer: torch.optim.Optimizer,
               generator_optimizer: torch.optim.Optimizer | None = None, *,
               adapt_lambda: Mapping[str, object] | None = None, clip_grad_norm: float | None = None) -> StepResult:
    """Run one training step of ``net``.

    Parameters
    ----------
    net : CompiledGraph
    loss_fn : callable
        ``outputs -> scalar loss`` (it may sample actions, etc.).
    inputs : mapping
        Source tensors for ``net(inputs)``.
    optimizer : Optimizer
        Over ``net.model_parameters()``.
    generator_optimizer : Optimizer, optional
        Over ``net.generator_parameters()``; the generators update only when given and
        ``net.synthetic`` is on.
    adapt_lambda : mapping, optional
        Keyword arguments for ``net.adapt_lambda`` (e.g. ``{"momentum": 0.9}``), run
        after the backward and before the optimizer step.
    clip_grad_norm : float, optional
        Clip the model gradient's global norm.

    Returns
    -------
    StepResult
    """
    optimizer.zero_grad(set_to_none=True)
    outputs = net(inputs)
    loss = loss_fn(outputs)
    loss.backward()
    if adapt_lambda is not None and net.synthetic:
        net.adapt_lambda(**adapt_lambda)  # type: ignore[attr-defined]
    if clip_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(list(net.model_parameters()), clip_grad_norm)
    optimizer.step()
    generator_loss = None
    if generator_optimizer is not None and net.synthetic:
        generator_loss = net.update_generators(generator_optimizer)
    return StepResult(float(loss.detach()), generator_loss, {k: v.detach() for k, v in outputs.items()})
