"""Adaptive λ per parent node (paper §4.2, eq. 16–18): the ``parent`` and ``edge`` groupings.

In §4.2 a node ``v`` mixes what it receives from all its children with one weight
``λ_v`` over its out-edges::

    g̃_v = λ_v Σ_{c ∈ ch(v)} J_vᶜᵀ g̃_c + (1 − λ_v) Σ_{c ∈ ch(v)} J_vᶜᵀ ĥ_c

so its parameter gradient is ``λ_v p̃_v + (1 − λ_v) s̃_v`` (eq. 16) with ``p̃_v = J_θᵀ P_v`` and
``s̃_v = J_θᵀ S_v``: ``P_v`` is the backpropagated part of its feedback (children's received
feedback ``g̃_c`` through the edge Jacobians), ``S_v`` the synthetic part (children's
predictions ``ĥ_c`` through the same Jacobians). After a backward, :func:`adapt_parent_lambda`

1. rebuilds ``P_v`` and ``S_v`` for every parent from its children's last inputs, received
   feedback and predictions (one input VJP per child and cotangent; exact whatever path the
   child ran: ``g̃_v = λ_v P_v + (1 − λ_v) S_v`` is the feedback ``v`` received);
2. estimates λ_batch of eq. 18 from the per-sample ``p̃_b, s̃_b`` exactly as the ``child``
   grouping does (:func:`~sggraph.engine.lambdas.feedback_lambda`: the slot arrays' closed
   form, or per-sample gradients with ``torch.func``; the same normalisations);
3. moves ``λ_v ← clip(μ λ_v + (1 − μ) λ_batch, 0, 1)`` and writes it on every out-edge of ``v``.

A parent node is a plain node or one neuron of an array (λ_batch ``[N]`` per array). Under the
``edge`` grouping the out-edges of a parent may hold different weights: the momentum starts from
their mean, and the update ties them to one value, as in §4.2. Edges from a whole array into a
node (the node reads the array flattened) share one weight in the compiled graph; it takes the
mean of the array's neurons. ``λ^self`` is left as it is (1 unless set: the node's parameters
get the feedback it received, eq. 16).

>>> import torch, sggraph
>>> g = sggraph.Graph(); g.add_node("z", 3); g.add_node("h", 4, ["z"], fn="tanh")
>>> g.add_node("y", 2, ["h"], fn="linear")
>>> net = sggraph.compile(g, grouping="parent"); net.set_lambda(0.5, node="h")
>>> net({"z": torch.randn(16, 3)})["y"].sum().backward()
>>> sorted(net.adapt_lambda(momentum=0.5))          # h is the only parent with parameters
['h']
>>> 0.0 <= net.get_lambda(("h", "y")) <= 1.0
True
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch

from ..exceptions import LambdaError
from .blocks import ArrayBlock, NodeBlock, split_ref
from .lambdas import check_momentum, feedback_lambda, no_feedback_error, normalization_mode

if TYPE_CHECKING:
    from .compile import CompiledGraph

__all__ = ["adapt_parent_lambda", "feedback_parts", "out_edge_lambda", "write_out_edge_lambda"]


def _input_vjps(block, cotangents: tuple[torch.Tensor, ...]) -> list[tuple[torch.Tensor, ...]]:
    """``J_zᵀ c`` of a block's function at its last inputs, for each cotangent ``c`` at its output.

    Nodes: ``[(dz,), …]`` with ``dz [B, Σ parent dims]``; arrays: ``[(du, dr), …]`` with
    ``du [N, B, F·q_parent]`` and ``dr [N, B, q]`` (None without a residual).
    """
    with torch.enable_grad():
        if isinstance(block, ArrayBlock):
            u, r = block.last_inputs
            leaves = [u.detach().requires_grad_(True)]
            if r is not None:
                leaves.append(r.detach().requires_grad_(True))
            out = block.function(leaves[0], leaves[1] if r is not None else None)[0]
        else:
            leaves = [block.last_inputs[0].detach().requires_grad_(True)]
            out = block.function(leaves[0])
        results = []
        for k, cot in enumerate(cotangents):
            grads = torch.autograd.grad(out, leaves, cot.to(out), retain_graph=k < len(cotangents) - 1,
                                        allow_unused=True)
            grads = tuple(torch.zeros_like(x) if gr is None else gr for x, gr in zip(leaves, grads))
            if isinstance(block, ArrayBlock) and len(grads) == 1:
                grads = (grads[0], None)
            results.append(grads)
    return results


def feedback_parts(net: CompiledGraph) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``(P_v, S_v)`` of every parent block with recorded children: the backpropagated and the
    synthetic part of the feedback it received in the last backward (nodes ``[B, dim]``, arrays
    neuron-major ``[N, B, q]``; see the module docstring)."""
    parts: dict[str, list[torch.Tensor]] = {}

    def add(name: str, k: int, value: torch.Tensor, index: int | None = None) -> None:
        block = net.blocks[name]
        if name not in parts:
            shape = block.record.received.shape if block.record is not None and block.record.received is not None \
                else None
            if shape is None:
                return  # the parent ran plain backprop: nothing to adapt
            parts[name] = [torch.zeros(shape, dtype=value.dtype, device=value.device) for _ in range(2)]
        if index is None:
            parts[name][k] += value
        else:
            parts[name][k][index] += value

    for child in net.blocks.values():
        rec = child.record
        if rec is None or rec.received is None or child.prediction is None or child.last_inputs is None:
            continue
        vjps = _input_vjps(child, (rec.received, child.prediction.detach()))
        if isinstance(child, NodeBlock):
            _node_parts(net, child, vjps, add)
        else:
            _array_parts(net, child, vjps, add)
    return {name: (p, s) for name, (p, s) in parts.items()}


def _node_parts(net: CompiledGraph, child: NodeBlock, vjps, add) -> None:
    offset = 0
    for ref, width in zip(child.parents, child.parent_dims):
        base, idx = split_ref(ref)
        cols = slice(offset, offset + width)
        offset += width
        if base not in net.blocks:
            continue  # a source: no parameters, no λ to adapt
        parent = net.blocks[base]
        for k, (dz,) in enumerate(vjps):
            part = dz[:, cols]
            if isinstance(parent, ArrayBlock) and idx is None:  # the whole array, flattened: [B, N q] → [N, B, q]
                add(base, k, part.reshape(part.shape[0], parent.count, parent.dim).transpose(0, 1))
            else:
                add(base, k, part, idx)


def _array_parts(net: CompiledGraph, child: ArrayBlock, vjps, add) -> None:
    if child.parent not in net.blocks:
        return  # an input array
    n, f, q = child.count, child.fan_in, child.parent_dim
    count = net.blocks[child.parent].count
    for k, (du, dr) in enumerate(vjps):
        b = du.shape[1]
        rows = du.reshape(n, b, f, q).permute(0, 2, 1, 3).reshape(n * f, b, q)
        acc = torch.zeros(count, b, q, dtype=du.dtype, device=du.device).index_add_(0, child.flat_table, rows)
        if dr is not None:
            acc = acc + dr
        add(child.parent, k, acc)


def out_edge_lambda(net: CompiledGraph, name: str) -> torch.Tensor:
    """The current λ of a parent: the mean over its out-edges (``[]`` for a node, ``[N]`` per neuron of an
    array; NaN where a neuron has no out-edge)."""
    block = net.blocks[name]
    units = block.count if isinstance(block, ArrayBlock) else 1
    total = torch.zeros(units, dtype=block.lam.dtype, device=block.lam.device)
    count = torch.zeros_like(total)
    for child in net.blocks.values():
        if isinstance(child, ArrayBlock) and child.parent == name:
            ones = torch.ones_like(child.lam[:, : child.fan_in]).flatten()
            total.index_add_(0, child.flat_table, child.lam[:, : child.fan_in].flatten())
            count.index_add_(0, child.flat_table, ones)
            if child.residual:
                total += child.lam[:, child.fan_in]
                count += 1
        elif isinstance(child, NodeBlock):
            for k, ref in enumerate(child.parents):
                base, idx = split_ref(ref)
                if base == name:
                    sel = slice(None) if idx is None else idx
                    total[sel] += child.lam[k]
                    count[sel] += 1
    mean = total / count
    return mean if isinstance(block, ArrayBlock) else mean[0]


@torch.no_grad()
def write_out_edge_lambda(net: CompiledGraph, name: str, value: torch.Tensor,
                          only: torch.Tensor | None = None) -> None:
    """Set every out-edge of parent ``name`` to ``value`` (``[]``, or ``[N]`` per neuron of an array; a
    whole array read by a node takes the mean over its neurons). ``only`` (bool, like ``value``):
    write the out-edges of those units alone."""
    value = torch.as_tensor(value)
    keep = torch.ones_like(value, dtype=torch.bool) if only is None else only
    for child in net.blocks.values():
        if isinstance(child, ArrayBlock) and child.parent == name:
            v = value.to(child.lam)
            cols = child.lam[:, : child.fan_in]
            cols[keep[child.table]] = v[child.table][keep[child.table]]
            if child.residual:
                res = child.lam[:, child.fan_in]
                res[keep[: child.count]] = v[: child.count][keep[: child.count]]
        elif isinstance(child, NodeBlock):
            for k, ref in enumerate(child.parents):
                base, idx = split_ref(ref)
                if base != name:
                    continue
                if idx is None and bool(keep.any()):
                    child.lam[k] = value.nanmean()
                elif idx is not None and bool(keep.reshape(-1)[idx]):
                    child.lam[k] = value[idx]


def adapt_parent_lambda(net: CompiledGraph, momentum: float = 0.9, normalize: bool | str = True,
                        nodes: Iterable[str] | None = None, fast: bool = True) -> dict[str, torch.Tensor]:
    """Update every parent's ``λ_v ← clip(μ λ_v + (1 − μ) λ_batch, 0, 1)`` on its out-edges (see the
    module docstring); call after ``loss.backward()``.

    Parameters
    ----------
    net : CompiledGraph
        Compiled with ``grouping="parent"`` or ``"edge"``.
    momentum : float
        ``μ`` in [0, 1].
    normalize : {"feedback", "gradient", "none"} or bool
        As for the ``child`` grouping (:mod:`sggraph.engine.lambdas`).
    nodes : iterable of str, optional
        Parent nodes / arrays to adapt (default: every parent whose feedback was recorded).
    fast : bool
        The slot arrays' closed form (tested equal to the generic path).

    Returns
    -------
    dict
        ``λ_batch`` per adapted parent (``[]`` for nodes, ``[N]`` for arrays; NaN = kept).
    """
    if net.grouping not in ("parent", "edge"):
        raise LambdaError(f"per-parent λ is for the 'parent' and 'edge' groupings, this net uses '{net.grouping}'",
                          fix="call net.adapt_lambda(), which picks the rule of the net's grouping")
    check_momentum(momentum)
    normalization_mode(normalize)
    if not net.has_feedback():
        raise no_feedback_error("adapt_lambda")
    parts = feedback_parts(net)
    names = list(parts) if nodes is None else [net.block(n).name for n in nodes]
    result = {}
    for name in names:
        block = net.block(name)
        if name not in parts or block.last_inputs is None:
            continue  # no child fed it back, or it ran plain backprop
        feedback, synthetic = parts[name]
        lam_batch = feedback_lambda(block, feedback, synthetic, normalize, fast)
        lam_batch = lam_batch.reshape(-1 if isinstance(block, ArrayBlock) else ()).to(block.lam)
        current = out_edge_lambda(net, name)
        new = (momentum * current + (1 - momentum) * lam_batch).clamp(0, 1)
        update = ~torch.isnan(new)  # NaN λ_batch (a batch of one, no variance): λ kept, edges untouched
        write_out_edge_lambda(net, name, torch.where(update, new, current), only=update)
        result[name] = lam_batch
    return result
