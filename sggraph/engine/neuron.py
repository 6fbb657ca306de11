"""The SparseNet slot-routing neuron (paper App. H.2), vectorised over a whole array.

Neuron ``i`` of an array sees its local input ``u_i ∈ R^d`` (its parents' outputs
concatenated), routes it over ``M`` slots and mixes the slot outputs:

    α_{i,s} = softmax_s(⟨u_i, k_{i,s}⟩ / √d)            (eq. 140)
    y_{i,s} = tanh(A_{i,s} u_i + b_{i,s})               (eq. 141)
    h̄_i     = Σ_s α_{i,s} y_{i,s}                       (eq. 142)
    h_i     = tanh(h̄_i) + r_i     with a residual parent r_i (eq. 143), else h̄_i

All ``count`` neurons run as one batched matmul: activations are shaped
``[count, B, features]`` (neuron-major) so ``torch.bmm`` batches over neurons. A feed-forward
array stores them batch-last — the tensors are transposed views of ``[count, features, B]``
memory (:func:`is_batch_last`) — so every elementwise pass of the routing runs along rows of
``B`` samples and the next array's gather copies whole rows; shapes are unchanged, so any
code that reads them by shape works either way.

>>> import torch
>>> arr = SlotNeuronArray(count=4, in_dim=6, dim=3, slots=2)
>>> h, aux = arr(torch.randn(4, 5, 6))
>>> h.shape, aux["alpha"].shape
(torch.Size([4, 5, 3]), torch.Size([4, 5, 2]))
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from ..exceptions import CompileError

__all__ = ["SlotMix", "SlotNeuronArray", "SlotRouting", "is_batch_last", "mix_slots", "slot_neuron_reference", "slot_routing", "tanh_"]


class SlotRouting(torch.autograd.Function):
    """Eq. 140–142 after the one ``bmm``: routing softmax, slot ``tanh`` and the α-weighted mix,
    with a hand-written backward.

    Forward: ``out [N, B, M + M·q]`` (routing logits, then slot pre-activations), ``bias
    [N, M·q]``, ``scale`` (a number or ``[N, 1, 1]``) → ``h̄ [N, B, q]``, ``α [N, B, M]``,
    ``y [N, B, M, q]`` (``α`` and ``y`` carry no gradient). Backward, for ``g = ∂L/∂h̄``::

        ∂L/∂α_s  = ⟨g, y_s⟩                 ∂L/∂logit = α ⊙ (∂L/∂α − ⟨α, ∂L/∂α⟩) · scale
        ∂L/∂pre_s = α_s g ⊙ (1 − y_s²)       ∂L/∂bias = Σ_b ∂L/∂pre

    The same numbers as autograd through ``softmax``, ``tanh`` and a ``matmul``, with the
    softmax over ``M`` written out (ATen's is slow on rows of 5: 1.2 → 0.25 ms on a
    ``[200, 64, 5]`` array, 1 thread) and the α-weighted sum and its backward as broadcast
    products (a batched 1×M by M×q ``matmul`` is a slow kernel on CPU: forward + backward
    3.2 → 2.0 ms on ``[200, 64, 5, 10]``). When ``out`` is batch-last (:func:`is_batch_last`, as a
    :class:`SlotNeuronArray` makes it) every pass runs along rows of ``B`` and the outputs are
    batch-last views (the bandit SparseNet's forward + backward, 5 layers, 1 thread: 58 → 40 ms).
    Tested against autograd through the literal formulas in both layouts (values and ``gradcheck``).
    """

    generate_vmap_rule = True  # torch.func (per-sample gradients) may vmap through it

    @staticmethod
    def forward(out: torch.Tensor, bias: torch.Tensor, scale, slots: int):  # type: ignore[override]
        if is_batch_last(out):
            return _routing_batch_last(out.transpose(1, 2), bias, scale, slots)
        n, b, width = out.shape
        logits, pre = out.split([slots, width - slots], dim=-1)
        logits = logits * scale
        e = (logits - logits.amax(-1, keepdim=True)).exp_()
        alpha = e.div_(e.sum(-1, keepdim=True))
        y = tanh_(pre + bias.unsqueeze(-2)).view(n, b, slots, (width - slots) // slots)
        hbar = (alpha.unsqueeze(-1) * y).sum(-2)
        return hbar, alpha, y

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # noqa: ANN001
        _, _, scale, _ = inputs
        _, alpha, y = output
        ctx.mark_non_differentiable(alpha, y)
        ctx.save_for_backward(alpha, y)
        ctx.scale = scale

    @staticmethod
    def backward(ctx, grad_hbar: torch.Tensor, _grad_alpha, _grad_y):  # type: ignore[override]
        alpha, y = ctx.saved_tensors
        if is_batch_last(alpha):
            grad_out, grad_bias = _routing_backward_batch_last(alpha.transpose(1, 2), y.permute(0, 2, 3, 1),
                                                               grad_hbar.transpose(1, 2).contiguous(), ctx.scale)
        else:
            g = grad_hbar.unsqueeze(-2)  # [N, B, 1, q]
            dalpha = (y * g).sum(-1)  # [N, B, M]
            dlogit = alpha * (dalpha - (alpha * dalpha).sum(-1, keepdim=True)) * ctx.scale
            dpre = torch.addcmul(alpha.unsqueeze(-1), alpha.unsqueeze(-1), y * y, value=-1) * g  # α_s (1 − y_s²) g
            dpre = dpre.flatten(-2)  # [N, B, M q]
            grad_out, grad_bias = torch.cat([dlogit, dpre], dim=-1), dpre.sum(-2)
        return (grad_out if ctx.needs_input_grad[0] else None), (grad_bias if ctx.needs_input_grad[1] else None), \
            None, None


def is_batch_last(t: torch.Tensor) -> bool:
    """Whether ``t [N, B, ...]`` is stored batch-last: a view whose memory is ``[N, ..., B]``
    (``t.movedim(1, -1)`` contiguous) and that is not plainly contiguous.

    >>> x = torch.zeros(3, 7, 2)
    >>> is_batch_last(x), is_batch_last(x.transpose(1, 2).contiguous().transpose(1, 2))
    (False, True)
    """
    try:
        return t.dim() >= 3 and not t.is_contiguous() and t.movedim(1, -1).is_contiguous()
    except RuntimeError:  # a tensor without strides (e.g. inside torch.func.vmap): the plain layout
        return False


def tanh_(t: torch.Tensor) -> torch.Tensor:
    """``t.tanh_()``, through NumPy's vectorised ``tanh`` where it can: a contiguous float32/float64
    CPU tensor outside ``torch.compile`` and ``torch.func`` transforms.

    ATen's CPU ``tanh`` runs about one element per 2.5 ns here (1.6 ms for a bandit layer's 640,000
    slot pre-activations, 1 thread), NumPy's SIMD one 0.26 ms, within 1.4 ulp of the float64 value
    in float32 (ATen: 0.5 ulp); measured on this project's machine. Used on tensors no autograd graph
    reads (inside :class:`SlotRouting`, which writes its own backward).

    >>> t = torch.tensor([-30.0, -0.5, 0.0, 1e-30, 2.0])
    >>> torch.allclose(tanh_(t.clone()), torch.tanh(t), rtol=2e-7, atol=0)
    True
    """
    if t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) and not torch.compiler.is_compiling():
        try:
            if t.is_contiguous() and not t.requires_grad:
                array = t.numpy()
                np.tanh(array, out=array)
                return t
        except (RuntimeError, TypeError):  # a functorch-wrapped tensor has no storage to hand NumPy
            pass
    return t.tanh_()


def _routing_batch_last(out_t: torch.Tensor, bias: torch.Tensor, scale, slots: int):
    """:class:`SlotRouting`'s forward on ``out_t [N, M + M·q, B]`` (the sample axis last, so every
    elementwise pass runs along rows of ``B``); returns batch-last views shaped as the plain path's."""
    n, width, b = out_t.shape
    logits = out_t[:, :slots] * scale  # [N, M, B]
    e = (logits - logits.amax(1, keepdim=True)).exp_()
    alpha = e.div_(e.sum(1, keepdim=True))
    y = tanh_(torch.add(out_t[:, slots:], bias.unsqueeze(-1))).view(n, slots, -1, b)  # [N, M, q, B]
    return mix_slots(y, alpha).transpose(1, 2), alpha.transpose(1, 2), y.permute(0, 3, 1, 2)


def mix_slots(values: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``Σ_s α_s values_s`` on batch-last ``values [N, M, q, B]`` and ``α [N, M, B]`` → ``[N, q, B]``, slot by
    slot (no ``[N, M, q, B]`` product): the routing's mix of the slot outputs and the slot generator's mix
    of its predictions."""
    out = values[:, 0] * alpha[:, :1]
    for s in range(1, values.shape[1]):
        out.addcmul_(values[:, s], alpha[:, s:s + 1])
    return out


class SlotMix(torch.autograd.Function):
    """``Σ_s α_s pre_s`` on batch-last ``pre [N, M, q, B]`` and ``α [N, M, B]`` (no gradient) → ``[N, q, B]``,
    slot by slot; the backward writes ``∂/∂pre = α_s g`` into one contiguous buffer (autograd through a
    broadcast product and a sum left a strided gradient that the ``view`` before it had to copy)."""

    @staticmethod
    def forward(ctx, pre: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(alpha)
        return mix_slots(pre, alpha)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (alpha,) = ctx.saved_tensors
        n, m, b = alpha.shape
        out = alpha.new_empty(n, m, grad.shape[1], b)
        torch.mul(alpha.unsqueeze(2), grad.contiguous().unsqueeze(1), out=out)
        return out, None


def _routing_backward_batch_last(alpha: torch.Tensor, y: torch.Tensor, grad_hbar: torch.Tensor, scale):
    """:class:`SlotRouting`'s backward on batch-last ``alpha [N, M, B]``, ``y [N, M, q, B]`` and
    ``grad_hbar [N, q, B]``; returns ``∂L/∂out`` (a batch-last view ``[N, B, M + M·q]``) and ``∂L/∂bias``."""
    n, slots, q, b = y.shape
    grad_out = alpha.new_empty(n, slots + slots * q, b)  # [∂L/∂logit; ∂L/∂pre], written in place (no cat)
    dpre = grad_out[:, slots:].view(n, slots, q, b)
    g = grad_hbar.unsqueeze(1)  # [N, 1, q, B]
    torch.mul(y, g, out=dpre)  # y_s ⊙ g, reduced over q for ∂L/∂α
    dalpha = dpre.sum(2)  # [N, M, B]
    dpre.mul_(y).neg_().add_(g).mul_(alpha.unsqueeze(2))  # α_s (g − y_s² g) = α_s g (1 − y_s²)
    torch.mul(alpha, dalpha - (alpha * dalpha).sum(1, keepdim=True), out=grad_out[:, :slots]).mul_(scale)
    return grad_out.transpose(1, 2), grad_out[:, slots:].sum(-1)


def slot_routing(out: torch.Tensor, bias: torch.Tensor, scale, slots: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(h̄, α, y)`` of :class:`SlotRouting` (eq. 140–142 from the ``bmm`` output).

    >>> out, bias = torch.randn(3, 4, 2 + 2 * 5), torch.randn(3, 2 * 5)
    >>> hbar, alpha, y = slot_routing(out, bias, 0.5, slots=2)
    >>> hbar.shape, alpha.sum(-1).allclose(torch.ones(3, 4)), y.shape
    (torch.Size([3, 4, 5]), True, torch.Size([3, 4, 2, 5]))
    """
    return SlotRouting.apply(out, bias, scale, slots)


def gather_by_table(prev: torch.Tensor, flat_table: torch.Tensor, count: int, fan_in: int) -> torch.Tensor:
    """Local inputs of ``count`` neurons from their parent table: ``prev [Np, B, q]`` → ``[N, B, F·q]``
    (``flat_table`` is the ``[N, F]`` table flattened row by row).

    A batch-last ``prev`` (see :func:`is_batch_last`; also any ``q = 1``) gives a batch-last result with
    no copy beyond the gather itself; a plainly laid out one gives a contiguous result.
    """
    _, b, q = prev.shape
    if fan_in == 0:
        return prev.new_zeros(count, b, 0)
    if b > 1 and prev.transpose(1, 2).is_contiguous():  # memory [Np, q, B]: gather whole rows of B
        return prev.transpose(1, 2).index_select(0, flat_table).view(count, fan_in * q, b).transpose(1, 2)
    return prev.index_select(0, flat_table).view(count, fan_in, b, q).permute(0, 2, 1, 3).reshape(count, b, fan_in * q)


def project_wired(e: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """One matmul for the neurons wired to an input: ``e [R, d_in]``, ``weight [n_in, W, d_in]`` → ``[n_in, R, W]``."""
    n_in, width, d_in = weight.shape
    return (e @ weight.reshape(n_in * width, d_in).T).view(e.shape[0], n_in, width).transpose(0, 1)

class SlotNeuronArray(nn.Module):
    """``count`` slot-routing neurons with ``M`` slots each.

    Parameters
    ----------
    count : int
        Number of neurons ``N``.
    in_dim : int
        Local input size ``d`` (fan_in × parent dim).
    dim : int
        Output size ``q``.
    slots : int
        ``M``.
    residual : bool
        Output ``tanh(h̄) + r`` with the residual parent ``r`` (eq. 143).
    init_std : float, optional
        Standard deviation of the normal init of keys, ``A`` and ``b``
        (default ``1/√d``, the paper's ``N(0, 1/(q·n_parents))``).

    Attributes
    ----------
    proj : Parameter ``[N, M + M·q, d]``
        The keys (rows ``0 … M−1``) and the slot maps (rows ``M + s·q … M + s·q + q − 1``
        for slot ``s``) in one tensor, so one ``bmm`` serves both.
    keys : view ``[N, M, d]`` of ``proj``
    weight : view ``[N, M·q, d]`` of ``proj``
    bias : Parameter ``[N, M·q]``
    """

    def __init__(self, count: int, in_dim: int, dim: int, slots: int = 5, residual: bool = False,
                 init_std: float | None = None) -> None:
        super().__init__()
        self.count, self.in_dim, self.dim, self.slots, self.residual = count, in_dim, dim, slots, residual
        std = init_std if init_std is not None else in_dim ** -0.5
        self.proj = nn.Parameter(torch.randn(count, slots + slots * dim, in_dim) * std)
        self.bias = nn.Parameter(torch.randn(count, slots * dim) * std)
        self.scale = 1.0 / math.sqrt(in_dim)

    @property
    def keys(self) -> torch.Tensor:
        """Routing keys ``[N, M, d]`` (a view of :attr:`proj`)."""
        return self.proj[:, : self.slots]

    @property
    def weight(self) -> torch.Tensor:
        """Slot maps ``[N, M·q, d]`` (a view of :attr:`proj`)."""
        return self.proj[:, self.slots:]

    def forward(self, u: torch.Tensor, residual: torch.Tensor | None = None,
                params: Mapping[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, dict]:
        """Run all neurons.

        Parameters
        ----------
        u : Tensor ``[N, B, d]``
            Local inputs, neuron-major.
        residual : Tensor ``[N, B, q]``, optional
            Residual parents (required when ``residual=True``).
        params : mapping, optional
            Replacement parameters (``proj``, ``bias``) — used by the compiler to
            route parameter gradients through a mixer.

        Returns
        -------
        h : Tensor ``[N, B, q]``
        aux : dict
            ``alpha`` ``[N, B, M]`` (the routing weights, for the slot generator), ``y``
            ``[N, B, M, q]`` (slot outputs) and, for residual arrays, ``squashed = tanh(h̄)``
            ``[N, B, q]`` — reused by adaptive λ instead of recomputing the forward.
        """
        p = params or {}
        proj = p.get("proj", self.proj)
        bias = p.get("bias", self.bias)
        out = torch.bmm(proj, u.transpose(1, 2)).transpose(1, 2)  # [N, B, M + M q], stored batch-last
        hbar, alpha, y = slot_routing(out, bias, self.scale, self.slots)  # [N, B, q], [N, B, M], [N, B, M, q]
        aux = {"alpha": alpha, "y": y}  # forward quantities the generator and adaptive λ reuse
        if self.residual:
            if residual is None:
                raise ValueError("this array is residual: pass the residual parent")
            squashed = torch.tanh(hbar)
            aux["squashed"] = squashed
            return squashed + residual, aux
        return hbar, aux

    def extra_repr(self) -> str:
        return (f"count={self.count}, in_dim={self.in_dim}, dim={self.dim}, slots={self.slots}, "
                f"residual={self.residual}")


def slot_neuron_reference(u: torch.Tensor, keys: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                          residual: torch.Tensor | None = None) -> torch.Tensor:
    """One neuron, written out literally from eq. 140–143 (for tests).

    Parameters
    ----------
    u : ``[B, d]``; keys : ``[M, d]``; weight : ``[M·q, d]``; bias : ``[M·q]``; residual : ``[B, q]``

    Returns
    -------
    Tensor ``[B, q]``
    """
    m, d = keys.shape
    q = weight.shape[0] // m
    out = torch.zeros(u.shape[0], q, dtype=u.dtype)
    logits = torch.stack([u @ keys[s] / math.sqrt(d) for s in range(m)], dim=-1)
    alpha = torch.softmax(logits, dim=-1)
    for s in range(m):
        y = torch.tanh(u @ weight[s * q:(s + 1) * q].T + bias[s * q:(s + 1) * q])
        out = out + alpha[:, s:s + 1] * y
    return torch.tanh(out) + residual if residual is not None else out


class RecurrentSlotArray(nn.Module):
    """Slot neurons whose input is ``fan_in`` neurons of the previous state, plus an external
    input for the first ``input_neurons`` neurons only.

    Parameters
    ----------
    count, rec_dim, dim, slots : int
        ``N``, ``F·q`` (previous-state input size), ``q``, ``M``.
    input_neurons, input_dim : int
        How many neurons read the external input, and its size.
    scale_dim : int, optional
        The ``d`` of every neuron's routing temperature ``1/√d`` and of its init std ``1/√d``
        (keys, slot maps, biases ~ N(0, 1/d)). None (default): each neuron's wired input size
        (``F·q``, plus ``d_in`` for the input neurons). ``F·q + d_in`` for all neurons is the
        authors' POPGym code, where every neuron's input is ``[parents, embedding]`` with the
        embedding masked to zero outside the input neurons; only what is wired is computed either way.

    Attributes
    ----------
    proj : ``[N, M + M·q, F·q]`` keys and slot maps on the recurrent input
    proj_in : ``[n_in, M + M·q, d_in]`` keys and slot maps on the external input
    bias : ``[N, M·q]``
    """

    def __init__(self, count: int, rec_dim: int, dim: int, slots: int, input_neurons: int = 0,
                 input_dim: int = 0, scale_dim: int | None = None) -> None:
        super().__init__()
        self.count, self.rec_dim, self.dim, self.slots = count, rec_dim, dim, slots
        self.input_neurons, self.input_dim, self.scale_dim = input_neurons, input_dim, scale_dim
        width = slots + slots * dim
        if scale_dim is None:
            total = torch.full((count,), float(rec_dim))
            total[:input_neurons] += input_dim
        else:
            if scale_dim < 1:
                raise CompileError(f"scale_dim must be positive, got {scale_dim}", fix="use e.g. F·q + d_in")
            total = torch.full((count,), float(scale_dim))
        std = total.rsqrt()
        self.proj = nn.Parameter(torch.randn(count, width, rec_dim) * std.view(-1, 1, 1))
        self.proj_in = nn.Parameter(torch.randn(input_neurons, width, input_dim) * std[:input_neurons].view(-1, 1, 1))
        self.bias = nn.Parameter(torch.randn(count, slots * dim) * std.view(-1, 1))
        # the integer fan-in is exact in any dtype; 1/√d is taken in the module's dtype when used
        self.register_buffer("fan_total", total, persistent=False)

    @property
    def scale(self) -> torch.Tensor:
        """Routing temperature ``1/√d_i`` per neuron ``[N]`` (``d_i``: see ``scale_dim``)."""
        return self.fan_total.rsqrt()

    def project_input(self, e: torch.Tensor, proj_in: torch.Tensor | None = None) -> torch.Tensor:
        """``e [R, d_in]`` → ``[n_in, R, M + M·q]`` (only the wired neurons)."""
        return project_wired(e, self.proj_in if proj_in is None else proj_in)

    def step(self, u: torch.Tensor, e_proj: torch.Tensor | None = None,
             params: Mapping[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, dict]:
        """One step: ``u [N, B, F·q]``, ``e_proj [n_in, B, M + M·q]`` → ``h [N, B, q]``, ``aux``."""
        p = params or {}
        proj, bias = p.get("proj", self.proj), p.get("bias", self.bias)
        n = u.shape[0]
        out = torch.bmm(u, proj.transpose(1, 2))
        if e_proj is not None and self.input_neurons:  # split, not slice: a slice's backward zero-fills
            wired, rest = out.split([self.input_neurons, n - self.input_neurons], dim=0)
            out = torch.cat([wired + e_proj, rest], dim=0)
        hbar, alpha, y = slot_routing(out, bias, self.scale.view(-1, 1, 1), self.slots)
        return hbar, {"alpha": alpha, "y": y}

    def extra_repr(self) -> str:
        scale = "" if self.scale_dim is None else f", scale_dim={self.scale_dim}"
        return (f"count={self.count}, rec_dim={self.rec_dim}, dim={self.dim}, slots={self.slots}, "
                f"input_neurons={self.input_neurons}, input_dim={self.input_dim}{scale}")


class RecurrentSlotGenerator(nn.Module):
    """Eq. 144 for the recurrent neurons: ``ĥ_i = Σ_s α_{i,s} (Ã_{i,s} [u_i, e] + b̃_{i,s})``, zero-initialised."""

    def __init__(self, count: int, rec_dim: int, dim: int, slots: int, input_neurons: int = 0,
                 input_dim: int = 0) -> None:
        super().__init__()
        self.slots, self.dim = slots, dim
        self.weight = nn.Parameter(torch.zeros(count, slots * dim, rec_dim))
        self.weight_in = nn.Parameter(torch.zeros(input_neurons, slots * dim, input_dim))
        self.bias = nn.Parameter(torch.zeros(count, slots * dim))

    def project_input(self, e: torch.Tensor) -> torch.Tensor:
        """``e [R, d_in]`` → ``[n_in, R, M·q]``."""
        return project_wired(e, self.weight_in)

    def step(self, u: torch.Tensor, e_proj: torch.Tensor | None, alpha: torch.Tensor) -> torch.Tensor:
        """``u [N, R, F·q]``, ``e_proj [n_in, R, M·q]`` (or None), ``alpha [N, R, M]`` → ``ĥ [N, R, q]``.

        The wired neurons and the rest are computed apart and joined after the slot mixing, so
        the input projection never costs a copy of the ``[N, R, M·q]`` pre-activations. The
        pre-activations are computed samples last (``[N, M·q, R]``), so the slot mix runs along rows
        of ``R``; the result is a ``[N, R, q]`` view of ``[N, q, R]`` memory.
        """
        k = 0 if e_proj is None else e_proj.shape[0]
        n = u.shape[0]
        wired, rest = zip(*(x.split([k, n - k], dim=0) for x in (u, self.weight, self.bias, alpha)))  # split: no zero-fill
        out = []
        for (u_part, weight, bias, alpha_part), e_part in ((wired, e_proj), (rest, None)):
            if u_part.shape[0] == 0:
                continue
            pre = torch.baddbmm(bias.unsqueeze(-1), weight, u_part.transpose(1, 2))  # [c, M q, R]: samples last
            if e_part is not None:
                pre.add_(e_part.transpose(1, 2))
            c, b, _ = u_part.shape
            alpha_rows = alpha_part.detach().transpose(1, 2).contiguous()  # [c, M, R]
            out.append(SlotMix.apply(pre.view(c, self.slots, self.dim, b), alpha_rows))
        return (out[0] if len(out) == 1 else torch.cat(out, dim=0)).transpose(1, 2)
