"""Adaptive λ per parent node (paper §4.2, eq. 16–18): the ``parent`` and ``edge`` groupings.

In §4.2 a node ``v`` mixes what it receives from all its children with one weight
``λ_v`` over its out-edges::

    g̃_v = λ_v Σ_{c ∈ ch(v)} J_vᶜᵀ g̃_c + (1 − λ_v) Σ_{c ∈ ch(v)} J_vᶜᵀ ĥ_c

so its parameter gradient is ``λ_v p̃_v + (1 − λ_v) s̃_v`` (eq. 16) with ``p̃_v = J_θᵀ P_v`` and
``s̃_v = J_θᵀ S_v``: ``P_v`` is the backpropagated part of its feedback (children's received
feedback ``g̃_c`` through the edge Jacobians), ``S_v`` the synthetic part (children's
predictions ``ĥ_c`` through the same Jacobians). After a backward, the per-parent rule
(:class:`~sggraph.engine.lam.rules.ParentRule`)

1. rebuilds ``P_v`` and ``S_v`` for every parent from its children's last inputs, received
   feedback and predictions (one input VJP per child and cotangent; exact whatever path the
   child ran: ``g̃_v = λ_v P_v + (1 − λ_v) S_v`` is the feedback ``v`` received);
2. estimates λ_batch of eq. 18 from the per-sample ``p̃_b, s̃_b`` exactly as the ``child``
   grouping does (:func:`~sggraph.engine.lam.rules.feedback_lambda`: the slot arrays' closed
   form, or per-sample gradients with ``torch.func``; the same normalisations);
3. moves ``λ_v ← clip(μ λ_v + (1 − μ) λ_batch, 0, 1)`` and writes it on every out-edge of ``v``
   (:meth:`~sggraph.engine.lam.table.LambdaTable.write_out_edges`).

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

from collections.abc import Mapping

import torch
from torch import nn

from ..blocks import ArrayBlock, NodeBlock, split_ref
from ..trace import Trace

__all__ = ["feedback_parts"]


def _input_vjps(block, inputs: tuple, cotangents: tuple[torch.Tensor, ...]) -> list[tuple[torch.Tensor, ...]]:
    """``J_zᵀ c`` of a block's function at the forward's ``inputs``, for each cotangent ``c`` at its output.

    Nodes: ``[(dz,), …]`` with ``dz [B, Σ parent dims]``; arrays: ``[(du, dr), …]`` with
    ``du [N, B, F·q_parent]`` and ``dr [N, B, q]`` (None without a residual).
    """
    with torch.enable_grad():
        if isinstance(block, ArrayBlock):
            u, r = inputs
            leaves = [u.detach().requires_grad_(True)]
            if r is not None:
                leaves.append(r.detach().requires_grad_(True))
            out = block.function(leaves[0], leaves[1] if r is not None else None)[0]
        else:
            leaves = [inputs[0].detach().requires_grad_(True)]
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


def feedback_parts(blocks: Mapping[str, nn.Module], trace: Trace) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``(P_v, S_v)`` of every parent block with recorded children: the backpropagated and the
    synthetic part of the feedback it received in the backward of ``trace``'s forward (nodes
    ``[B, dim]``, arrays neuron-major ``[N, B, q]``; see the module docstring)."""
    parts: dict[str, list[torch.Tensor]] = {}

    def add(name: str, k: int, value: torch.Tensor, index: int | None = None) -> None:
        entry = trace.nodes.get(name)
        if name not in parts:
            shape = entry.received.shape if entry is not None and entry.received is not None else None
            if shape is None:
                return  # the parent ran plain backprop: nothing to adapt
            parts[name] = [torch.zeros(shape, dtype=value.dtype, device=value.device) for _ in range(2)]
        if index is None:
            parts[name][k] += value
        else:
            parts[name][k][index] += value

    for name, child in blocks.items():
        entry = trace.nodes.get(name)
        if entry is None or entry.received is None or entry.prediction is None or entry.inputs is None:
            continue
        vjps = _input_vjps(child, entry.inputs, (entry.received, entry.prediction.detach()))
        if isinstance(child, NodeBlock):
            _node_parts(blocks, child, vjps, add)
        else:
            _array_parts(blocks, child, vjps, add)
    return {name: (p, s) for name, (p, s) in parts.items()}


def _node_parts(blocks: Mapping[str, nn.Module], child: NodeBlock, vjps, add) -> None:
    offset = 0
    for ref, width in zip(child.parents, child.parent_dims):
        base, idx = split_ref(ref)
        cols = slice(offset, offset + width)
        offset += width
        if base not in blocks:
            continue  # a source: no parameters, no λ to adapt
        parent = blocks[base]
        for k, (dz,) in enumerate(vjps):
            part = dz[:, cols]
            if isinstance(parent, ArrayBlock) and idx is None:  # the whole array, flattened: [B, N q] → [N, B, q]
                add(base, k, part.reshape(part.shape[0], parent.count, parent.dim).transpose(0, 1))
            else:
                add(base, k, part, idx)


def _array_parts(blocks: Mapping[str, nn.Module], child: ArrayBlock, vjps, add) -> None:
    if child.parent not in blocks:
        return  # an input array
    n, f, q = child.count, child.fan_in, child.parent_dim
    count = blocks[child.parent].count
    for k, (du, dr) in enumerate(vjps):
        b = du.shape[1]
        rows = du.reshape(n, b, f, q).permute(0, 2, 1, 3).reshape(n * f, b, q)
        acc = torch.zeros(count, b, q, dtype=du.dtype, device=du.device).index_add_(0, child.flat_table, rows)
        if dr is not None:
            acc = acc + dr
        add(child.parent, k, acc)
