"""Adaptive mixing weights: the batch estimate of the optimal λ (eq. 18, App. H.2 eq. 145).

For a node (or neuron) with per-sample parameter gradients ``p̃_b`` under the feedback it
received and ``s̃_b`` under its synthetic prediction (optionally each normalised to unit
ℓ2 norm), write ``u_b = s̃_b − p̃_b``. The mixture ``λ p̂ + (1 − λ) ŝ = p̂ + (1 − λ) û`` has
MSE ``Var p̂ + 2 (1 − λ) Cov(p̂, û) + (1 − λ)² E‖û‖²``, minimised at

    λ_batch = clip(1 + c / (v + b²), 0, 1)

with ``v`` the variance of the batch mean of ``u``, ``c`` the covariance of the batch means
of ``p̃`` and ``u``, and ``b² = max(‖ū‖² − v, 0)``; then ``λ ← μ λ + (1 − μ) λ_batch``.
A batch of one sample carries no variance estimate and leaves λ unchanged.

Everything needed is a Gram matrix of per-sample gradients, ``K_XY[b, b'] = ⟨X_b, Y_b'⟩``.
The generic path builds the per-sample gradients with ``torch.func``; the slot-neuron
array has a closed form (its per-sample weight gradient is an outer product ``D_b ⊗ u_b``,
so ``⟨D_b ⊗ u_b, D'_b' ⊗ u_b'⟩ = ⟨D_b, D'_b'⟩⟨u_b, u_b'⟩``) that never forms them.

>>> import torch
>>> p = torch.randn(32, 1, 5); s = p.mean(0, keepdim=True).expand(32, 1, 5)  # exact, noiseless synthetic
>>> float(batch_lambda_from_vectors(p, s, normalize=False)[0]) < 0.2
True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import torch
from torch.func import functional_call, grad, vmap

from .exceptions import LambdaError

if TYPE_CHECKING:
    from .compile import CompiledGraph

__all__ = ["batch_lambda_from_grams", "batch_lambda_from_vectors", "per_sample_param_grads",
           "slot_array_grams", "adapt_lambda"]


def batch_lambda_from_grams(k_pp: torch.Tensor, k_ps: torch.Tensor, k_ss: torch.Tensor,
                            normalize: bool = True, eps: float = 1e-12) -> torch.Tensor:
    """λ_batch per unit from Gram matrices ``[U, B, B]`` (``k_ps[b, b'] = ⟨p̃_b, s̃_b'⟩``).

    Returns ``[U]``; NaN where the batch has fewer than two samples or ``v + b² = 0``.
    """
    b = k_pp.shape[-1]
    if b < 2:
        return torch.full(k_pp.shape[:-2], float("nan"), dtype=k_pp.dtype, device=k_pp.device)
    if normalize:
        n_p = k_pp.diagonal(dim1=-2, dim2=-1).clamp_min(0).sqrt() + eps
        n_s = k_ss.diagonal(dim1=-2, dim2=-1).clamp_min(0).sqrt() + eps
        k_pp = k_pp / (n_p.unsqueeze(-1) * n_p.unsqueeze(-2))
        k_ps = k_ps / (n_p.unsqueeze(-1) * n_s.unsqueeze(-2))
        k_ss = k_ss / (n_s.unsqueeze(-1) * n_s.unsqueeze(-2))
    k_sp = k_ps.transpose(-1, -2)
    k_uu = k_ss - k_sp - k_ps + k_pp  # ⟨u_b, u_b'⟩
    k_pu = k_ps - k_pp  # ⟨p_b, u_b'⟩
    mean_uu = k_uu.mean(dim=(-1, -2))  # ‖ū‖²
    mean_pu = k_pu.mean(dim=(-1, -2))  # ⟨p̄, ū⟩
    denom = b * (b - 1)
    v = (k_uu.diagonal(dim1=-2, dim2=-1).sum(-1) - b * mean_uu) / denom
    c = (k_pu.diagonal(dim1=-2, dim2=-1).sum(-1) - b * mean_pu) / denom
    bias2 = (mean_uu - v).clamp_min(0)
    total = v + bias2
    lam = (1 + c / total).clamp(0, 1)
    return torch.where(total > 0, lam, torch.full_like(lam, float("nan")))


def batch_lambda_from_vectors(p: torch.Tensor, s: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """λ_batch per unit from explicit per-sample gradients ``p, s: [B, U, P]`` → ``[U]``."""
    pt, st = p.transpose(0, 1), s.transpose(0, 1)  # [U, B, P]
    return batch_lambda_from_grams(pt @ pt.transpose(1, 2), pt @ st.transpose(1, 2), st @ st.transpose(1, 2),
                                   normalize)


def per_sample_param_grads(block, cotangent: torch.Tensor) -> torch.Tensor:
    """Per-sample gradients of a block's parameters under ``cotangent`` → ``[B, U, P]``.

    Generic (``torch.func``): works for any node function. Plain nodes have ``U = 1``; arrays
    have one unit per neuron (their parameters carry the neuron index first).
    """
    from .compile import _ArrayBlock

    fn = block.function
    params = {k: v.detach() for k, v in fn.named_parameters()}
    if isinstance(block, _ArrayBlock):
        u, r = block.last_inputs

        def dot(ps, u1, r1, c1):
            out, _ = functional_call(fn, ps, (u1.unsqueeze(1), None if r1 is None else r1.unsqueeze(1)))
            return (out.squeeze(1) * c1).sum()

        per = vmap(grad(dot), in_dims=(None, 1, None if r is None else 1, 1))(params, u, r, cotangent)
        flat = [g.reshape(g.shape[0], block.count, -1) for g in per.values()]
        return torch.cat(flat, dim=-1)

    (z,) = block.last_inputs

    def dot_node(ps, z1, c1):
        return (functional_call(fn, ps, (z1.unsqueeze(0),)).squeeze(0) * c1).sum()

    per = vmap(grad(dot_node), in_dims=(None, 0, 0))(params, z, cotangent)
    return torch.cat([g.reshape(g.shape[0], 1, -1) for g in per.values()], dim=-1)


@torch.no_grad()
def slot_array_grams(array, u: torch.Tensor, residual: torch.Tensor | None, cot_p: torch.Tensor,
                     cot_s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Closed-form Gram matrices ``[N, B, B]`` of the slot neurons' per-sample parameter gradients.

    Parameters
    ----------
    array : SlotNeuronArray
    u : ``[N, B, d]`` local inputs; residual : ``[N, B, q]`` or None
    cot_p, cot_s : ``[N, B, q]`` the received feedback and the synthetic prediction
    """
    n, b, _ = u.shape
    m, q = array.slots, array.dim
    out = torch.bmm(u, array.proj.transpose(1, 2))
    alpha = torch.softmax(out[..., :m] * array.scale, dim=-1)
    y = torch.tanh(out[..., m:] + array.bias.unsqueeze(1)).view(n, b, m, q)
    squash = None
    if array.residual:
        hbar = torch.matmul(alpha.unsqueeze(-2), y).squeeze(-2)
        squash = 1 - torch.tanh(hbar) ** 2

    def backward_rows(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dh = c * squash if squash is not None else c
        dpre = (alpha.unsqueeze(-1) * dh.unsqueeze(2) * (1 - y * y)).reshape(n, b, m * q)
        dalpha = (dh.unsqueeze(2) * y).sum(-1)
        dlogit = alpha * (dalpha - (alpha * dalpha).sum(-1, keepdim=True)) * array.scale
        return torch.cat([dlogit, dpre], dim=-1), dpre

    dp, bp = backward_rows(cot_p)
    ds, bs = backward_rows(cot_s)
    gu = torch.bmm(u, u.transpose(1, 2))

    def gram(x, bx, y_, by):
        return torch.bmm(x, y_.transpose(1, 2)) * gu + torch.bmm(bx, by.transpose(1, 2))

    return gram(dp, bp, dp, bp), gram(dp, bp, ds, bs), gram(ds, bs, ds, bs)


def _block_lambda(block, normalize: bool, fast: bool) -> torch.Tensor | None:
    from .compile import _ArrayBlock
    from .neuron import SlotNeuronArray

    rec = block.record
    if rec is None or rec.received is None or block.prediction is None or block.last_inputs is None:
        return None
    received, predicted = rec.received, block.prediction.detach()
    if isinstance(block, _ArrayBlock) and fast and isinstance(block.function, SlotNeuronArray):
        u, r = block.last_inputs
        grams = slot_array_grams(block.function, u, r, received, predicted)
        return batch_lambda_from_grams(*grams, normalize=normalize)
    p = per_sample_param_grads(block, received)
    s = per_sample_param_grads(block, predicted)
    return batch_lambda_from_vectors(p, s, normalize)


def adapt_lambda(net: "CompiledGraph", momentum: float = 0.9, normalize: bool = True,
                 nodes: Iterable[str] | None = None, fast: bool = True) -> dict[str, torch.Tensor]:
    """Update ``θ_v ← μ θ_v + (1 − μ) λ_batch`` from the last backward (per-child grouping).

    Parameters
    ----------
    net : CompiledGraph
        Compiled with ``grouping="child"``; call after ``loss.backward()``.
    momentum : float
        ``μ`` in [0, 1].
    normalize : bool
        Normalise each per-sample gradient to unit ℓ2 norm first (App. H.2).
    nodes : iterable of str, optional
        Nodes/arrays to adapt (default: every node that ran a generator).
    fast : bool
        Use the slot array's closed form (tested equal to the generic path).

    Returns
    -------
    dict
        ``λ_batch`` per adapted node (``[]``-shaped for nodes, ``[N]`` for arrays; NaN = kept).
    """
    if net.grouping != "child":
        raise LambdaError(f"adaptive λ is implemented for the 'child' grouping, this net uses '{net.grouping}'",
                          fix="compile with grouping='child' (the paper's experiment code), or set λ by hand")
    if not 0 <= momentum <= 1:
        raise LambdaError(f"momentum = {momentum} is outside [0, 1]", fix="use a momentum in [0, 1], e.g. 0.9")
    names = list(net.blocks) if nodes is None else list(nodes)
    result = {}
    for name in names:
        block = net._block(name)
        lam_batch = _block_lambda(block, normalize, fast)
        if lam_batch is None:
            continue
        lam_batch = lam_batch.reshape(block.lam_self.shape).to(block.lam_self)
        with torch.no_grad():
            new = momentum * block.lam_self + (1 - momentum) * lam_batch
            new = torch.where(torch.isnan(lam_batch), block.lam_self, new).clamp(0, 1)
            block.lam_self.copy_(new)
            block.lam.copy_(new.unsqueeze(-1).expand_as(block.lam) if block.lam.dim() == 2 else new.expand_as(block.lam))
        result[name] = lam_batch
    return result
