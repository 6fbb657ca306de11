"""The autograd operations that put eq. 5–6 inside PyTorch's own backward.

Three identity-forward operations carry the whole backward rule:

* :class:`OutMix` at a node's output: its backward receives the feedback
  ``g̃_v`` the node received, records it (the generator's bootstrapped target)
  and passes on ``λ g̃_v + (1 − λ) ĥ_v``. One cotangent then reaches both the
  node's parameters and its parents: the paper's per-child grouping
  (``λ^self_v = λ_{·→v} = θ_v``), at the cost of plain backprop.
* :class:`InMix` on a node's (concatenated) input: its backward turns the
  native ``J_uᵀ g̃_v`` of each column into ``λ_{u→v} J_uᵀ g̃_v + (1 − λ_{u→v}) J_uᵀ ĥ_v``,
  with ``J_uᵀ ĥ_v`` computed in the forward (it only depends on forward quantities).
* :class:`ParamMix` on a parameter: ``λ^self J_θᵀ g̃ + (1 − λ^self) J_θᵀ ĥ``.

Each backward is ``torch.lerp(synthetic, grad, lam)`` = ``lam·grad + (1 − lam)·synthetic``
in one fused kernel, which evaluates ``grad − (grad − synthetic)·(1 − lam)`` for
``lam ≥ 0.5``: at ``lam = 1`` that is ``grad`` bit for bit, so λ = 1 is plain
backpropagation exactly (tested).

Examples
--------
>>> import torch
>>> rec = Record("v")
>>> rec.synthetic_output = torch.full((2, 3), 5.0)  # ĥ_v
>>> x = torch.ones(2, 3, requires_grad=True)
>>> y = OutMix.apply(x * 2, torch.tensor(0.5), rec)
>>> y.sum().backward()
>>> x.grad[0].tolist(), rec.received[0].tolist()
([6.0, 6.0, 6.0], [1.0, 1.0, 1.0])
"""

from __future__ import annotations

import math

import torch

from ..exceptions import GradientError

__all__ = ["InMix", "OutMix", "ParamMix", "Record", "RecordGrad", "all_finite"]


def all_finite(x: torch.Tensor) -> bool:
    """Whether every element of ``x`` is finite (no NaN, no ±inf).

    The sum is checked first: a NaN or an infinity in ``x`` makes the sum NaN or infinite, so a
    finite sum proves every element finite in one reduction (about 3 µs for a ``[128, 20, 6]``
    gradient against 34 µs for ``isfinite(x).all()`` here). A non-finite sum (which large finite
    elements can also give by overflow) is settled by the elementwise test.

    >>> all_finite(torch.tensor([1.0, -2.0])), all_finite(torch.tensor([1.0, float("nan")]))
    (True, False)
    >>> all_finite(torch.tensor([3e38, 3e38]))  # the sum overflows, the elements are finite
    True
    """
    if x.is_complex():
        return bool(torch.isfinite(x).all())
    if not x.is_floating_point():  # integers and booleans are always finite
        return True
    x = x.detach()
    return math.isfinite(float(x.sum())) or bool(torch.isfinite(x).all())


class Record:
    """Per-node scratch shared by the mixing operations of one forward.

    Attributes
    ----------
    node : str
        Node (or array) name, used in error messages.
    received : Tensor or None
        The feedback ``g̃_v`` the node received in the last backward (detached).
    synthetic_input : Tensor or None
        ``J_zᵀ ĥ_v`` for the node's input columns (general path).
    synthetic_params : dict
        ``J_θᵀ ĥ_v`` per parameter name (general path with ``λ^self < 1``).
    check_finite : bool
        Raise :class:`~sggraph.GradientError` when a non-finite gradient arrives.
    """

    __slots__ = ("check_finite", "node", "received", "synthetic_input", "synthetic_output", "synthetic_params")

    def __init__(self, node: str, check_finite: bool = True) -> None:
        self.node = node
        self.received: torch.Tensor | None = None
        self.synthetic_input: dict[int, torch.Tensor] = {}
        self.synthetic_params: dict[str, torch.Tensor] = {}
        self.synthetic_output: torch.Tensor | None = None
        self.check_finite = check_finite

    def check(self, grad: torch.Tensor, where: str) -> None:
        if self.check_finite and not all_finite(grad):
            raise GradientError(f"a non-finite gradient (NaN or inf) reached the {where} mixer", node=self.node,
                                fix="find where the first NaN/inf appears: the inputs, a node's own function "
                                    "(a log or a division), the loss, or activations exploding after a too large "
                                    "learning rate (lower it or clip gradients)")

    def __repr__(self) -> str:
        shape = None if self.received is None else tuple(self.received.shape)
        return f"Record({self.node!r}, received={shape})"


class OutMix(torch.autograd.Function):
    """Identity on a node's output; backward ``g ↦ λ g + (1 − λ) ĥ`` (and records ``g``).

    ``ĥ`` is read from ``record.synthetic_output`` at backward time, so it may be set after
    the forward (a recurrent cell runs its generator once over all steps after the loop).
    """

    @staticmethod
    def forward(ctx, out: torch.Tensor, lam: torch.Tensor, record: Record):  # type: ignore[override]
        ctx.save_for_backward(lam)
        ctx.record = record
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (lam,) = ctx.saved_tensors
        record: Record = ctx.record
        record.check(grad, "output")
        record.received = grad.detach()
        return torch.lerp(record.synthetic_output, grad, lam), None, None


class RecordGrad(torch.autograd.Function):
    """Identity that records the gradient it passes on (the node's received feedback)."""

    @staticmethod
    def forward(ctx, out: torch.Tensor, record: Record):  # type: ignore[override]
        ctx.record = record
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        record: Record = ctx.record
        record.check(grad, "output")
        record.received = grad.detach()
        return grad, None


class _KeyedMix(torch.autograd.Function):
    """Identity forward; backward ``g ↦ λ g + (1 − λ) ĥ`` with ``ĥ = getattr(record, STORE)[key]``.

    The synthetic part is filled into ``record`` later in the same forward (it needs the node's
    output), hence the indirection through ``key``. Non-finite gradients are checked here, once
    for both subclasses.
    """

    STORE = ""
    WHERE = ""

    @classmethod
    def forward(cls, ctx, x: torch.Tensor, lam: torch.Tensor, record: Record, key):  # type: ignore[override]
        ctx.save_for_backward(lam)
        ctx.record = record
        ctx.key = key
        return x.view_as(x)

    @classmethod
    def backward(cls, ctx, grad: torch.Tensor):  # type: ignore[override]
        (lam,) = ctx.saved_tensors
        record: Record = ctx.record
        record.check(grad, cls.WHERE)
        synthetic = getattr(record, cls.STORE)[ctx.key]
        return torch.lerp(synthetic, grad, lam), None, None, None


class InMix(_KeyedMix):
    """Identity on input columns; backward ``g ↦ λ g + (1 − λ) record.synthetic_input[key]``."""

    STORE = "synthetic_input"
    WHERE = "input"


class ParamMix(_KeyedMix):
    """Identity on a parameter; backward ``g ↦ λ g + (1 − λ) record.synthetic_params[name]``."""

    STORE = "synthetic_params"
    WHERE = "parameter"
