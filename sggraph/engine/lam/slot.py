"""The slot neurons' closed forms of eq. 18 (App. H.2): λ_batch of a slot-neuron array and of a
recurrent state array without forming per-sample gradients.

A neuron's per-sample gradient is ``(D_b ⊗ x_b, β_b)`` — rows ``D_b`` (keys and slot maps) times
its input ``x_b``, and the bias part ``β_b`` — so per-sample inner products are
``⟨D_b, D'_b⟩ ‖x_b‖² + ⟨β_b, β'_b⟩`` and batch means are one ``bmm`` per input block. Each
function is tested equal to the generic ``torch.func`` path of :mod:`.estimate`.
"""

from __future__ import annotations

import torch

from ..neuron import RecurrentSlotArray
from ..trace import StateTrace
from .estimate import (
    _lambda_from_rows,
    _routing_gate,
    _slot_rows,
    batch_lambda_from_moments,
    normalization_mode,
    unit_feedback,
)

__all__ = ["has_forward_tensors", "recurrent_state_lambda", "slot_array_lambda", "state_lambda_from_forward"]


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
def recurrent_state_lambda(function: RecurrentSlotArray, state: StateTrace, steps: list[int],
                           normalize: bool | str = True, max_samples: int | None = None,
                           valid: torch.Tensor | None = None) -> torch.Tensor:
    """Closed-form λ_batch ``[N]`` for a recurrent state array; every (step, sequence) is a sample.

    The input neurons' per-sample gradient also has the part ``D_b ⊗ e_b`` on ``proj_in``,
    so their ``‖x_b‖² = ‖u_b‖² + ‖e_b‖²``. With ``max_samples`` the estimate uses the samples
    of ``⌈max_samples / B⌉`` steps drawn uniformly without replacement (torch's global RNG).
    ``valid [T, B]`` (bool) drops the samples where it is false. ``state`` is the forward's
    :class:`~sggraph.engine.trace.StateTrace` of the ``function``'s array.
    """
    fn = function
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


def has_forward_tensors(function: torch.nn.Module, st: StateTrace) -> bool:
    """Whether the state's last forward kept what :func:`state_lambda_from_forward` reads (child path)."""
    return (st.mode == "child" and st.u_all is not None and st.fed_all is not None and st.alpha_all is not None
            and len(st.y_steps) == len(st.records) > 0 and isinstance(function, RecurrentSlotArray)
            and (function.input_neurons == 0 or st.e_all is not None))


@torch.no_grad()
def state_lambda_from_forward(function: RecurrentSlotArray, st: StateTrace, steps: list[int],
                              normalize: bool | str = True, max_samples: int | None = None,
                              valid: torch.Tensor | None = None) -> torch.Tensor:
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
    fn = function
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
