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

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch.func import functional_call, grad, vmap

from ..exceptions import LambdaError
from .blocks import ArrayBlock
from .neuron import RecurrentSlotArray, SlotNeuronArray

if TYPE_CHECKING:
    from .compile import CompiledGraph

__all__ = [
    "NORMALIZATIONS",
    "adapt_lambda",
    "batch_lambda_from_moments",
    "batch_lambda_from_stats",
    "batch_lambda_from_vectors",
    "block_lambda",
    "feedback_lambda",
    "per_sample_param_grads",
    "recurrent_state_lambda",
    "slot_array_lambda",
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


def per_sample_param_grads(block, cotangent: torch.Tensor) -> torch.Tensor:
    """Per-sample gradients of a block's parameters under ``cotangent`` → ``[B, U, P]``.

    Generic (``torch.func``): works for any node function. Plain nodes have ``U = 1``; arrays
    have one unit per neuron (their parameters carry the neuron index first).
    """

    fn = block.function
    params = {k: v.detach() for k, v in fn.named_parameters()}
    if isinstance(block, ArrayBlock):
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


@torch.no_grad()
def slot_array_lambda(array, u: torch.Tensor, residual: torch.Tensor | None, cot_p: torch.Tensor,
                      cot_s: torch.Tensor, normalize: bool | str = True, aux: dict | None = None) -> torch.Tensor:
    """Closed-form λ_batch ``[N]`` for a slot-neuron array, never forming per-sample gradients.

    A neuron's per-sample gradient is ``(D_b ⊗ u_b, β_b)`` — rows ``D_b`` (keys and slot
    maps) times its input ``u_b``, and the bias part ``β_b`` — so per-sample inner products
    are ``⟨D_b, D'_b⟩ ‖u_b‖² + ⟨β_b, β'_b⟩`` and batch means are one ``bmm``.

    Parameters
    ----------
    array : SlotNeuronArray
    u : ``[N, B, d]`` local inputs; residual : ``[N, B, q]`` or None
    cot_p, cot_s : ``[N, B, q]`` the received feedback and the synthetic prediction
    normalize : {"feedback", "gradient", "none"} or bool
        See the module docstring.
    aux : dict, optional
        The forward's ``alpha``, ``y`` (and ``squashed``): reused instead of recomputed.
    """
    if aux is None or "y" not in aux or (array.residual and "squashed" not in aux):
        aux = array(u, residual)[1]  # the forward's quantities, recomputed
    mode = normalization_mode(normalize)
    n, batch, _ = u.shape
    if batch < 2:
        return torch.full((n,), float("nan"), dtype=u.dtype, device=u.device)
    cot = torch.stack([cot_p.transpose(1, 2), cot_s.transpose(1, 2)], dim=1)  # [N, 2, q, B]: samples last
    if array.residual:  # the feedback on h̄: g ⊙ (1 − tanh² h̄)
        cot = cot * (1 - aux["squashed"] ** 2).transpose(1, 2).unsqueeze(1)
    if mode == "feedback":
        cot = unit_feedback(cot, dim=2)
    ut = u.transpose(1, 2)  # [N, d, B]: contiguous when u is batch-last (the array's own layout)
    x2 = (ut * ut).sum(1)  # [N, B] ‖u_b‖² (a reduction across rows: vector_norm is slow on strided data)
    scale = torch.as_tensor(array.scale, dtype=u.dtype, device=u.device).reshape(-1).expand(n)
    alpha, y = aux["alpha"], aux["y"]
    parts = [_state_chunk_stats(mode, u[a:b], alpha[a:b], y[a:b], cot[a:b], x2[a:b], scale[a:b], None, 0)
             for a, b in _neuron_chunks(n, y.shape[1] * y.shape[2] * y.shape[3])]
    mean_uu, mean_pu, pp, ps, ss = (torch.cat([p[i] for p in parts], dim=0) for i in range(5))
    return batch_lambda_from_moments(mean_uu / batch ** 2, mean_pu / batch ** 2, pp, ps, ss)


@torch.no_grad()
def recurrent_state_lambda(state, steps: list[int], normalize: bool | str = True,
                           max_samples: int | None = None, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Closed-form λ_batch ``[N]`` for a recurrent state array; every (step, sequence) is a sample.

    The input neurons' per-sample gradient also has the part ``D_b ⊗ e_b`` on ``proj_in``,
    so their ``‖x_b‖² = ‖u_b‖² + ‖e_b‖²``. With ``max_samples`` the estimate uses the samples
    of ``⌈max_samples / B⌉`` steps drawn uniformly without replacement (torch's global RNG).
    ``valid [T, B]`` (bool) drops the samples where it is false.
    """
    fn = state.function
    if max_samples is not None:  # a random subset of steps, all sequences of each
        batch = state.step_inputs[steps[0]][0].shape[1]
        keep = max(1, -(-max_samples // batch))
        if keep < len(steps):
            chosen = torch.randperm(len(steps))[:keep].sort().values.tolist()
            steps = [steps[i] for i in chosen]
    u = torch.cat([state.step_inputs[t][0] for t in steps], dim=1)  # [N, R, F q]
    has_e = state.step_inputs[steps[0]][1] is not None and fn.input_neurons > 0
    e = torch.cat([state.step_inputs[t][1] for t in steps], dim=0) if has_e else None  # [R, d_in]
    cot_p = torch.cat([state.records[t].received for t in steps], dim=1)
    cot_s = torch.cat([state.predictions[t].detach() for t in steps], dim=1)
    if valid is not None:
        keep_cols = torch.cat([valid[t] for t in steps]).nonzero().squeeze(1)
        if keep_cols.numel() < u.shape[1]:
            u, cot_p, cot_s = u[:, keep_cols], cot_p[:, keep_cols], cot_s[:, keep_cols]
            e = None if e is None else e[keep_cols]
    k = fn.input_neurons
    forward = fn.step(u, None if e is None else fn.project_input(e))[1]  # the step's α and y, recomputed
    alpha, y = forward["alpha"], forward["y"]
    alpha_dtanh = _routing_gate(alpha, y)
    scale = fn.scale.view(-1, 1, 1)
    x2 = (u * u).sum(-1)
    inputs = [u]
    if e is not None:
        x2 = torch.cat([x2[:k] + (e * e).sum(-1).unsqueeze(0), x2[k:]], dim=0)
        inputs.append(e.unsqueeze(0).expand(k, -1, -1))
    unit = normalization_mode(normalize) == "feedback"
    rows_p = _slot_rows(alpha, y, alpha_dtanh, None, scale, cot_p, unit)
    rows_s = _slot_rows(alpha, y, alpha_dtanh, None, scale, cot_s, unit)
    return _lambda_from_rows(rows_p, rows_s, x2, inputs, normalize)


def feedback_lambda(block, feedback: torch.Tensor, synthetic: torch.Tensor, normalize: bool | str,
                    fast: bool = True) -> torch.Tensor:
    """λ_batch of a block from two cotangents at its output: ``p̃_b`` is its per-sample parameter
    gradient under ``feedback``, ``s̃_b`` under ``synthetic`` (``[B, dim]``; arrays ``[N, B, q]``).

    Needs the block's last mixed forward (``block.last_inputs``). ``fast``: the slot array's closed
    form (:func:`slot_array_lambda`), else the generic ``torch.func`` path. Returns ``[]`` for a
    node, ``[N]`` for an array.
    """
    if isinstance(block, ArrayBlock) and fast and isinstance(block.function, SlotNeuronArray):
        u, r = block.last_inputs
        return slot_array_lambda(block.function, u, r, feedback, synthetic, normalize=normalize,
                                 aux=getattr(block, "aux", None))
    if normalization_mode(normalize) == "feedback":
        aux = getattr(block, "aux", None)
        if aux is None and isinstance(block, ArrayBlock):  # a general-path forward kept no aux: recompute it
            with torch.no_grad():
                aux = block.function(*block.last_inputs)[1]
        aux = aux or {}
        gain = 1 - aux["squashed"] ** 2 if "squashed" in aux else None
        feedback, synthetic = unit_feedback(feedback, gain), unit_feedback(synthetic, gain)
    p = per_sample_param_grads(block, feedback)
    s = per_sample_param_grads(block, synthetic)
    return batch_lambda_from_vectors(p, s, normalize)


def block_lambda(block, normalize: bool | str, fast: bool) -> torch.Tensor | None:
    """The ``child`` grouping's λ_batch of a block: its received feedback against its own prediction.

    Parameters
    ----------
    block : Block
        A compiled graph's block after a mixed forward and a backward.
    normalize : bool or str
        The normalisation before eq. 18 (:data:`NORMALIZATIONS`; ``True`` is ``"gradient"``).
    fast : bool
        The slot array's closed form where it applies, else the generic ``torch.func`` path.

    Returns
    -------
    torch.Tensor or None
        As :func:`feedback_lambda`; None when the block recorded no feedback or made no prediction.
    """
    rec = block.record
    if rec is None or rec.received is None or block.prediction is None or block.last_inputs is None:
        return None
    return feedback_lambda(block, rec.received, block.prediction.detach(), normalize, fast)


def check_momentum(momentum: float) -> None:
    """Raise :class:`~sggraph.LambdaError` unless ``0 <= momentum <= 1``."""
    if not 0 <= momentum <= 1:
        raise LambdaError(f"momentum = {momentum} is outside [0, 1]", fix="use a momentum in [0, 1], e.g. 0.9")


@torch.no_grad()
def momentum_update(lam_self: torch.Tensor, lam: torch.Tensor, lam_batch: torch.Tensor, momentum: float) -> None:
    """``θ ← clip(μ θ + (1 − μ) λ_batch, 0, 1)`` in place (NaN in ``λ_batch``: θ kept); the in-edges
    ``lam`` (one row per unit) follow θ (the ``child`` grouping)."""
    check_momentum(momentum)
    lam_batch = lam_batch.reshape(lam_self.shape).to(lam_self)
    new = momentum * lam_self + (1 - momentum) * lam_batch
    new = torch.where(torch.isnan(lam_batch), lam_self, new).clamp(0, 1)
    lam_self.copy_(new)
    lam.copy_(new.unsqueeze(-1).expand_as(lam) if lam.dim() == 2 else new.expand_as(lam))


def no_feedback_error(what: str) -> LambdaError:
    """The error of :meth:`adapt_lambda` / :meth:`update_generators` called without recorded feedback."""
    return LambdaError(f"{what} needs the feedback recorded by a backward, and no node has any since the last "
                       "forward run with gradients enabled",
                       fix="call it after loss.backward() (or record_feedback(loss)) of a forward with gradients "
                           "on and net.synthetic = True; forwards under torch.no_grad() keep the last records")


def adapt_lambda(net: CompiledGraph, momentum: float = 0.9, normalize: bool | str = True,
                 nodes: Iterable[str] | None = None, fast: bool = True) -> dict[str, torch.Tensor]:
    """Update ``θ_v ← μ θ_v + (1 − μ) λ_batch`` from the last backward (per-child grouping).

    Parameters
    ----------
    net : CompiledGraph
        Compiled with ``grouping="child"``; call after ``loss.backward()``.
    momentum : float
        ``μ`` in [0, 1].
    normalize : {"feedback", "gradient", "none"} or bool
        Which gradients get unit ℓ2 norm first (App. H.2; see the module docstring). ``True`` is
        ``"gradient"``; the paper's experiments use ``"feedback"``.
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
        raise LambdaError(f"this function adapts the 'child' grouping, and this net uses '{net.grouping}'",
                          fix="call net.adapt_lambda(), which adapts every grouping (parent and edge: "
                              "sggraph.engine.parent_lambdas)")
    check_momentum(momentum)
    normalization_mode(normalize)
    if not net.has_feedback():
        raise no_feedback_error("adapt_lambda")
    names = list(net.blocks) if nodes is None else list(nodes)
    result = {}
    for name in names:
        block = net.block(name)
        lam_batch = block_lambda(block, normalize, fast)
        if lam_batch is None:
            continue
        lam_batch = lam_batch.reshape(block.lam_self.shape).to(block.lam_self)
        momentum_update(block.lam_self, block.lam, lam_batch, momentum)
        result[name] = lam_batch
    return result


def has_forward_tensors(st) -> bool:
    """Whether the state's last forward kept what :func:`state_lambda_from_forward` reads (child path)."""
    return (st.mode == "child" and st.u_all is not None and st.fed_all is not None and st.alpha_all is not None
            and len(st.y_steps) == len(st.records) > 0 and (st.input_neurons == 0 or st.e_all is not None)
            and isinstance(st.function, RecurrentSlotArray))


@torch.no_grad()
def state_lambda_from_forward(st, steps: list[int], normalize: bool | str = True,
                              max_samples: int | None = None, valid: torch.Tensor | None = None) -> torch.Tensor:
    """λ_batch ``[N]`` of the state neurons from the last child-path forward and backward.

    The estimate of :func:`recurrent_state_lambda` (same samples, same random
    steps under ``max_samples``; tested equal), organised for speed when every sample is used:

    * the samples' inputs, routing weights and slot outputs come from the forward (no rerun of
      the slots); when most samples are used, the others get zero feedback instead of being
      gathered out (no copies); when few are (``max_samples``), those few are gathered;
    * the received and the predicted feedback are stacked, so every pass serves both;
    * a neuron's per-sample gradient is linear in its cotangent ``c_b``, so each normalisation
      is a per-sample scale of ``c_b`` (``feedback``: ``1/‖c_b‖``; ``gradient``: ``1/‖p̃_b‖``);
    * the inner products need no slot-map rows: ``⟨dpre_b, dpre′_b⟩ = Σ_j c_b[j] c′_b[j]
      Σ_s (α_s (1 − y_{s,j}²))²``;
    * each batch mean ``Σ_b rows_b ⊗ x_b`` is one matmul per input block;
    * the work runs over chunks of neurons with the sample axis last, so each intermediate is
      cache-sized and every elementwise pass runs along long contiguous rows (measured 2× faster
      than whole-array passes on the POPGym cell).
    """
    fn = st.function
    mode = normalization_mode(normalize)
    t_steps = len(st.records)
    batch = st.u_all.shape[1] // t_steps  # type: ignore[union-attr]
    if max_samples is not None:  # the samples of ⌈max_samples / B⌉ random steps (as recurrent_state_lambda)
        keep = max(1, -(-max_samples // batch))
        if keep < len(steps):
            chosen = torch.randperm(len(steps))[:keep].sort().values.tolist()
            steps = [steps[i] for i in chosen]
    u = st.u_all  # [N, R, F q], every sample of the forward
    device, dtype = u.device, u.dtype  # type: ignore[union-attr]
    mask = torch.zeros(t_steps, batch, dtype=torch.bool, device=device)
    mask[steps] = True
    if valid is not None:
        mask &= valid.to(device=device, dtype=torch.bool)
    mask = mask.reshape(-1)  # [R] the samples of the estimate
    cols = mask.nonzero().squeeze(1)
    r = cols.numel()
    n, k = fn.count, fn.input_neurons
    if r < 2:
        return torch.full((n,), float("nan"), dtype=dtype, device=device)
    received = torch.cat([rec.received for rec in st.records], dim=1)  # [N, R, q]
    fed, alpha_all, e = st.fed_all, st.alpha_all, (st.e_all if k else None)  # e: [R, d_in]
    y = torch.cat(st.y_steps, dim=1)  # [N, R, M, q]
    if 4 * r < 3 * mask.numel():  # a few samples (max_samples): gather them; most: zero-weight the rest
        u, fed, alpha_all, y, received = (x.index_select(1, cols) for x in (u, fed, alpha_all, y, received))
        e = None if e is None else e.index_select(0, cols)
        mask = torch.ones(r, dtype=torch.bool, device=device)
    cot = received.new_empty(n, 2, received.shape[2], received.shape[1])  # [N, 2, q, R]: the sample axis last
    cot[:, 0].copy_(received.transpose(1, 2))
    cot[:, 1].copy_(fed.transpose(1, 2))  # fed is stored samples last (the generator's layout): a plain copy
    cot.mul_(mask.to(dtype))
    if mode == "feedback":
        cot = unit_feedback(cot, dim=2)
    x2 = torch.linalg.vector_norm(u, dim=-1).square()  # [N, R] ‖x_b‖²
    if e is not None:
        x2 = torch.cat([x2[:k] + torch.linalg.vector_norm(e, dim=-1).square(), x2[k:]], dim=0)
    scale = fn.scale.to(u).reshape(-1).expand(n)  # [N] routing-logit scale per neuron
    parts = [_state_chunk_stats(mode, u[a:b], alpha_all[a:b], y[a:b], cot[a:b], x2[a:b],  # type: ignore[index]
                                scale[a:b], e, max(0, min(k, b) - a))
             for a, b in _neuron_chunks(n, y.shape[1] * y.shape[2] * y.shape[3])]
    mean_uu, mean_pu, pp, ps, ss = (torch.cat([p[i] for p in parts], dim=0) for i in range(5))
    pick = (lambda x: x) if r == mask.numel() else (lambda x: x.index_select(1, cols))
    return batch_lambda_from_moments(mean_uu / r ** 2, mean_pu / r ** 2, pick(pp), pick(ps), pick(ss))


_CHUNK_ELEMENTS = 1 << 19  # elements of one neuron chunk's largest intermediate (2 MiB in float32)


def _neuron_chunks(count: int, per_neuron: int) -> list[tuple[int, int]]:
    """Neuron ranges whose intermediates stay cache-sized (and below the allocator's mmap size,
    so no temporary is handed back to the kernel and page-faulted in again)."""
    size = max(1, _CHUNK_ELEMENTS // max(1, 2 * per_neuron))
    return [(a, min(count, a + size)) for a in range(0, count, size)]


def _state_chunk_stats(mode: str, u, alpha_rows, y_rows, cot, x2, scale, e, k: int):
    """Moments of the batch sums and per-sample products ``pp, ps, ss: [C, R]`` of ``C`` neurons.

    Returns ``(uu, pu, pp, ps, ss)``: ``uu = ‖Σ_b (s̃_b − p̃_b)‖²`` and ``pu = ⟨Σ_b p̃_b, Σ_b (s̃_b − p̃_b)⟩``
    ``[C]``, summed block by block of the parameters (so the ``[C, 2, P]`` sums are never joined).

    ``u [C, R, F q]``, ``alpha_rows [C, R, M]``, ``y_rows [C, R, M, q]``, ``cot [C, 2, q, R]``
    (received, predicted; already normalised and masked), ``x2 [C, R]``, ``scale [C]`` (routing
    logits); ``e [R, d_in]`` (or None when no neuron reads an input) feeds the first ``k`` of the
    chunk's neurons.
    """
    c = u.shape[0]
    alpha = alpha_rows.transpose(1, 2).unsqueeze(2)  # [C, M, 1, R]
    y = y_rows.permute(0, 2, 3, 1).contiguous()  # [C, M, q, R]
    slots, q, r = y.shape[1:]
    gate = torch.addcmul(alpha, alpha, y * y, value=-1)  # [C, M, q, R] α_s (1 − y_s²) = ∂ pre / ∂ h̄
    gate2 = (gate * gate).sum(1)  # [C, q, R]
    # both cotangents' gradient rows in one buffer, so that the batch means are one matmul per input block
    rows = cot.new_empty(c, 2, slots + slots * q, r)  # [C, 2, M + M q, R]: routing logits, then slot maps
    dlogit = rows[:, :, :slots]  # [C, 2, M, R]
    dpre = rows[:, :, slots:].view(c, 2, slots, q, r)  # [C, 2, M, q, R]
    torch.mul(cot[:, :, :1], y[:, None, :, 0], out=dlogit)  # ∂/∂ α_s = ⟨c, y_s⟩, summed over q in place
    for j in range(1, q):
        dlogit.addcmul_(cot[:, :, j:j + 1], y[:, None, :, j])
    a = alpha.squeeze(2).unsqueeze(1)  # [C, 1, M, R]
    dlogit.sub_((a * dlogit).sum(2, keepdim=True)).mul_(a).mul_(scale.view(-1, 1, 1, 1))  # ∂/∂ routing logits

    def inner(i, j):  # ⟨p̃_b, s̃_b⟩-type products per sample, without forming the slot-map rows
        pre = (gate2 * cot[:, i] * cot[:, j]).sum(1)
        return ((dlogit[:, i] * dlogit[:, j]).sum(1) + pre) * x2 + pre

    pp, ps, ss = inner(0, 0), inner(0, 1), inner(1, 1)
    if mode == "gradient":  # unit per-sample gradients: scale each cotangent by 1/‖p̃_b‖ (the map is linear)
        w = torch.stack([pp, ss], dim=1).clamp_min(0).sqrt().add(1e-12).reciprocal()  # [C, 2, R]
        pp, ps, ss = pp * w[:, 0] ** 2, ps * w[:, 0] * w[:, 1], ss * w[:, 1] ** 2
        cot = cot * w.unsqueeze(2)
        dlogit.mul_(w.unsqueeze(2))
    torch.mul(gate.unsqueeze(1), cot.unsqueeze(2), out=dpre)
    uu = pu = None  # Σ over parameter blocks of ‖Σ_b ū_b‖² and ⟨Σ_b p̃_b, Σ_b ū_b⟩, ū = s̃ − p̃: [C]

    def add(block: torch.Tensor) -> None:  # block [·, 2, ·]: both cotangents' sums
        nonlocal uu, pu
        diff = block[:, 1] - block[:, 0]
        parts = (diff * diff).sum(-1), (block[:, 0] * diff).sum(-1)
        if block.shape[0] < c:  # the input block: the chunk's first k neurons only
            parts = tuple(torch.cat([x, x.new_zeros(c - x.shape[0])]) for x in parts)
        uu, pu = (parts[0], parts[1]) if uu is None else (uu + parts[0], pu + parts[1])

    flat = rows.view(c, -1, r)  # [C, 2 W, R]: keys and slot maps, Σ_b rows_b ⊗ x_b
    add(torch.bmm(flat, u).view(c, 2, -1))
    if e is not None and k:
        add(torch.matmul(flat[:k], e).view(k, 2, -1))
    add(dpre.sum(-1).flatten(2))  # biases
    return uu, pu, pp, ps, ss
