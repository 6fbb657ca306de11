"""Adaptive mixing weights: the batch estimate of the optimal λ (eq. 18, App. H.2 eq. 145).

For a node (or neuron) with per-sample parameter gradients ``p̃_b`` under the feedback it
received and ``s̃_b`` under its synthetic prediction, write ``u_b = s̃_b − p̃_b``. The mixture ``λ p̂ + (1 − λ) ŝ = p̂ + (1 − λ) û`` has
MSE ``Var p̂ + 2 (1 − λ) Cov(p̂, û) + (1 − λ)² E‖û‖²``, minimised at

    λ_batch = clip(1 + c / (v + b²), 0, 1)

with ``v`` the variance of the batch mean of ``u``, ``c`` the covariance of the batch means
of ``p̃`` and ``u``, and ``b² = max(‖ū‖² − v, 0)``; then ``λ ← μ λ + (1 − μ) λ_batch``.
A batch of one sample carries no variance estimate and leaves λ unchanged.

The paper (App. H.2) normalises "the gradients to unit ℓ2 norm" first; ``normalize`` says which:

* ``"feedback"`` — the authors' experiment code: per sample and neuron, the feedback at the
  neuron's nonlinear output (``g`` on ``h̄``; for a residual slot neuron ``g ⊙ (1 − tanh² h̄)``)
  is scaled to unit norm, then mapped to ``p̃_b`` (and the prediction likewise to ``s̃_b``);
* ``"gradient"`` (or ``True``) — each per-sample parameter gradient ``p̃_b``, ``s̃_b`` is scaled
  to unit norm;
* ``"none"`` (or ``False``) — raw gradients.

Everything needed is the batch means of ``p̃`` and ``s̃`` and the per-sample inner
products ``⟨p̃_b, p̃_b⟩, ⟨p̃_b, s̃_b⟩, ⟨s̃_b, s̃_b⟩``. The generic path builds the per-sample
gradients with ``torch.func``; the slot-neuron array has a closed form (its per-sample
weight gradient is an outer product ``D_b ⊗ u_b``, so inner products factor and means are
one ``bmm``) that never forms them.

>>> import torch
>>> p = torch.randn(32, 1, 5); s = p.mean(0, keepdim=True).expand(32, 1, 5)  # exact, noiseless synthetic
>>> float(batch_lambda_from_vectors(p, s, normalize=False)[0]) < 0.2
True
"""

from __future__ import annotations

import torch
from torch.func import functional_call, grad, vmap

from ...exceptions import LambdaError

__all__ = [
    "NORMALIZATIONS",
    "batch_lambda_from_moments",
    "batch_lambda_from_stats",
    "batch_lambda_from_vectors",
    "normalization_mode",
    "per_sample_param_grads",
    "unit_feedback",
]


#: The normalisations of per-sample gradients before eq. 18 (see the module docstring).
NORMALIZATIONS = ("feedback", "gradient", "none")

_DIRECTION_EPS = 1e-12


def normalization_mode(normalize: bool | str) -> str:
    """``True`` → ``"gradient"``, ``False`` → ``"none"``; a name is checked against :data:`NORMALIZATIONS`."""
    if normalize is True:
        return "gradient"
    if normalize is False or normalize is None:
        return "none"
    if normalize not in NORMALIZATIONS:
        raise LambdaError(f"unknown normalisation {normalize!r}", fix=f"use one of {', '.join(NORMALIZATIONS)}")
    return str(normalize)


def unit_feedback(cot: torch.Tensor, gain: torch.Tensor | None = None, dim: int = -1) -> torch.Tensor:
    """Per-sample direction of the feedback: ``cot / ‖gain ⊙ cot‖`` over ``dim`` (the feedback's
    features; ``dim`` other than the last for sample-last layouts, where the norm is a sum across rows).

    With ``gain`` (e.g. a residual neuron's ``1 − tanh² h̄``) the feedback on the nonlinear part
    ``gain ⊙ cot`` gets unit norm; rows of zero feedback stay zero.
    """
    eff = cot if gain is None else cot * gain
    if dim in (-1, cot.dim() - 1):
        return cot / eff.norm(dim=-1, keepdim=True).clamp_min(_DIRECTION_EPS)
    return cot / (eff * eff).sum(dim, keepdim=True).sqrt_().clamp_min_(_DIRECTION_EPS)


def batch_lambda_from_stats(p_mean: torch.Tensor, s_mean: torch.Tensor, pp: torch.Tensor, ps: torch.Tensor,
                            ss: torch.Tensor) -> torch.Tensor:
    """λ_batch per unit from sufficient statistics of the per-sample gradients.

    Parameters
    ----------
    p_mean, s_mean : ``[U, P]``
        Batch means of ``p̃_b`` and ``s̃_b`` (already normalised if normalising).
    pp, ps, ss : ``[U, B]``
        Per-sample inner products ``⟨p̃_b, p̃_b⟩``, ``⟨p̃_b, s̃_b⟩``, ``⟨s̃_b, s̃_b⟩``.

    Returns
    -------
    Tensor ``[U]``; NaN where ``B < 2`` or ``v + b² = 0`` (λ is then kept).
    """
    u_mean = s_mean - p_mean
    return batch_lambda_from_moments((u_mean * u_mean).sum(-1), (p_mean * u_mean).sum(-1), pp, ps, ss)


def batch_lambda_from_moments(mean_uu: torch.Tensor, mean_pu: torch.Tensor, pp: torch.Tensor, ps: torch.Tensor,
                              ss: torch.Tensor) -> torch.Tensor:
    """:func:`batch_lambda_from_stats` from ``‖ū‖²`` and ``⟨p̄, ū⟩`` (``[U]``, ``ū = s̄ − p̄``) instead of
    the means themselves: what the slot arrays' closed form accumulates chunk by chunk."""
    b = pp.shape[-1]
    if b < 2:
        return torch.full(pp.shape[:-1], float("nan"), dtype=pp.dtype, device=pp.device)
    diag_uu = (ss - 2 * ps + pp).sum(-1)  # Σ_b ‖u_b‖²
    diag_pu = (ps - pp).sum(-1)  # Σ_b ⟨p_b, u_b⟩
    denom = b * (b - 1)
    v = (diag_uu - b * mean_uu) / denom  # variance of the batch mean of u
    c = (diag_pu - b * mean_pu) / denom  # covariance of the batch means of p and u
    bias2 = (mean_uu - v).clamp_min(0)
    total = v + bias2
    lam = (1 + c / total).clamp(0, 1)
    return torch.where(total > 0, lam, torch.full_like(lam, float("nan")))


def batch_lambda_from_vectors(p: torch.Tensor, s: torch.Tensor, normalize: bool | str = True,
                              eps: float = 1e-12) -> torch.Tensor:
    """λ_batch per unit from explicit per-sample gradients ``p, s: [B, U, P]`` → ``[U]``.

    ``normalize`` ``"gradient"``/``True`` scales each vector to unit norm; ``"feedback"`` and
    ``"none"`` use the vectors as given (feedback normalisation happens before the vectors exist).
    """
    if normalization_mode(normalize) == "gradient":
        p = p / (p.norm(dim=-1, keepdim=True) + eps)
        s = s / (s.norm(dim=-1, keepdim=True) + eps)
    pt, st = p.transpose(0, 1), s.transpose(0, 1)  # [U, B, P]
    return batch_lambda_from_stats(pt.mean(1), st.mean(1), (pt * pt).sum(-1), (pt * st).sum(-1),
                                   (st * st).sum(-1))


def per_sample_param_grads(function: torch.nn.Module, inputs: tuple, cotangent: torch.Tensor,
                           count: int | None = None) -> torch.Tensor:
    """Per-sample gradients of ``function``'s parameters under ``cotangent`` → ``[B, U, P]``.

    Generic (``torch.func``): works for any node function. ``inputs`` are the forward's detached
    inputs (:attr:`~sggraph.engine.trace.NodeTrace.inputs`): ``(z [B, d],)`` for a plain node
    (``U = 1``), ``(u [N, B, d], r [N, B, q] or None)`` for an array of ``count`` neurons (one unit
    per neuron: their parameters carry the neuron index first).
    """

    fn = function
    params = {k: v.detach() for k, v in fn.named_parameters()}
    if count is not None:
        u, r = inputs

        def dot(ps, u1, r1, c1):
            out, _ = functional_call(fn, ps, (u1.unsqueeze(1), None if r1 is None else r1.unsqueeze(1)))
            return (out.squeeze(1) * c1).sum()

        per = vmap(grad(dot), in_dims=(None, 1, None if r is None else 1, 1))(params, u, r, cotangent)
        flat = [g.reshape(g.shape[0], count, -1) for g in per.values()]
        return torch.cat(flat, dim=-1)

    (z,) = inputs

    def dot_node(ps, z1, c1):
        return (functional_call(fn, ps, (z1.unsqueeze(0),)).squeeze(0) * c1).sum()

    per = vmap(grad(dot_node), in_dims=(None, 0, 0))(params, z, cotangent)
    return torch.cat([g.reshape(g.shape[0], 1, -1) for g in per.values()], dim=-1)


def _slot_rows(alpha: torch.Tensor, y: torch.Tensor, alpha_dtanh: torch.Tensor, squash: torch.Tensor | None,
               scale: torch.Tensor | float, cot: torch.Tensor, unit: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample gradient rows of slot neurons under cotangent ``cot [N, R, q]``.

    A neuron's per-sample parameter gradient is ``(dlogit ⊗ x, dpre ⊗ x, dpre)`` for its keys,
    slot maps and biases, with ``x`` its input. Returns ``dlogit [N, R, M]`` and ``dpre [N, R, M q]``.
    ``alpha_dtanh = α ⊙ (1 − y²)`` is shared by both cotangents. ``unit``: the feedback on ``h̄``
    is scaled to unit norm per row first (``normalize="feedback"``).
    """
    dh = cot * squash if squash is not None else cot
    if unit:
        dh = unit_feedback(dh)
    dpre = (alpha_dtanh * dh.unsqueeze(2)).flatten(2)
    dalpha = torch.matmul(y, dh.unsqueeze(-1)).squeeze(-1)
    dlogit = alpha * (dalpha - (alpha * dalpha).sum(-1, keepdim=True)) * scale
    return dlogit, dpre


def _lambda_from_rows(rows_p, rows_s, x2: torch.Tensor, inputs: list[torch.Tensor], normalize: bool | str,
                      eps: float = 1e-12) -> torch.Tensor:
    """λ_batch ``[N]`` from the rows of ``p̃`` and ``s̃``.

    ``x2 [N, R]`` is each sample's ``‖x_b‖²``; ``inputs`` are the input blocks ``[k, R, d]`` whose
    outer products with the rows form the weight gradients (block ``k < N`` covers neurons ``0 … k−1``).
    Normalisation folds ``1/‖g_b‖`` into per-sample weights instead of rescaling the rows.
    """
    n, r = x2.shape

    def dot(a, b):
        bias = (a[1] * b[1]).sum(-1)
        return ((a[0] * b[0]).sum(-1) + bias) * x2 + bias

    pp, ps, ss = dot(rows_p, rows_p), dot(rows_p, rows_s), dot(rows_s, rows_s)
    wp = ws = None  # per-sample weights (None: all ones, no pass spent on them)
    if normalization_mode(normalize) == "gradient":
        wp, ws = 1 / (pp.clamp_min(0).sqrt() + eps), 1 / (ss.clamp_min(0).sqrt() + eps)
        pp, ps, ss = pp * wp * wp, ps * wp * ws, ss * ws * ws

    def means():
        """Both batch means: the per-sample weights fold into the inputs, one bmm per row block."""
        parts_p, parts_s = [], []
        for x in inputs:
            k = x.shape[0]
            for rows, w, parts in ((rows_p, wp, parts_p), (rows_s, ws, parts_s)):
                xw = x if w is None else x * w[:k].unsqueeze(-1)
                for row in rows:
                    block = torch.bmm(row[:k].transpose(1, 2), xw).reshape(k, -1)
                    if k < n:
                        block = torch.cat([block, block.new_zeros(n - k, block.shape[1])], dim=0)
                    parts.append(block)
        for rows, w, parts in ((rows_p, wp, parts_p), (rows_s, ws, parts_s)):
            parts.append((rows[1] if w is None else rows[1] * w.unsqueeze(-1)).sum(1))
        return torch.cat(parts_p, dim=-1) / r, torch.cat(parts_s, dim=-1) / r

    p_mean, s_mean = means()
    return batch_lambda_from_stats(p_mean, s_mean, pp, ps, ss)


def _routing_gate(alpha: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``α_s (1 − y_s²)`` ``[N, R, M, q]``: ∂ slot pre-activation / ∂ h̄, shared by both cotangents' rows."""
    return alpha.unsqueeze(-1) * (1 - y * y)
