"""Adaptation rules: how a net's λ follows eq. 18 from the feedback its last backward recorded.

A rule reads the λ table and the step's :class:`~sggraph.engine.trace.Trace` (never the net)
and returns the batch estimate ``λ_batch`` per owner; :func:`adapt` then moves every owner by
the one momentum update (App. H.2 eq. 145)::

    λ ← clip(μ λ + (1 − μ) λ_batch, 0, 1)        (a NaN λ_batch keeps λ)

* :class:`ChildRule` — ``child`` grouping: each node's ``θ_v`` from its received feedback against
  its own prediction (eq. 18 on ``p̃_b, s̃_b``); writes ``λ^self`` and every in-edge;
* :class:`ParentRule` — ``parent`` and ``edge``: each parent's ``λ_v`` over its out-edges from the
  backpropagated and synthetic parts of its feedback (§4.2, :mod:`.parent`);
* :class:`StateRule` — a recurrent cell's state neurons under ``child``: every (step, sequence)
  is a sample of the base θ's estimate (the per-step θ follow the temporal schedule, App. H.4).

>>> import torch
>>> momentum_step(torch.tensor([0.5, 0.5], dtype=torch.float64), torch.tensor([1.0, float("nan")], dtype=torch.float64), 0.7).tolist()
[0.65, 0.5]
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ...exceptions import LambdaError
from ..blocks import ArrayBlock, StateBlock
from ..neuron import SlotNeuronArray
from ..trace import NodeTrace, Trace
from .estimate import batch_lambda_from_vectors, normalization_mode, per_sample_param_grads, unit_feedback
from .parent import feedback_parts
from .slot import has_forward_tensors, recurrent_state_lambda, slot_array_lambda, state_lambda_from_forward
from .table import LambdaTable

__all__ = ["ChildRule", "ParentRule", "StateRule", "adapt", "check_momentum", "feedback_lambda", "momentum_step",
           "no_feedback_error", "node_lambda", "rule_for"]


def check_momentum(momentum: float) -> None:
    """Raise :class:`~sggraph.LambdaError` unless ``0 <= momentum <= 1``."""
    if not 0 <= momentum <= 1:
        raise LambdaError(f"momentum = {momentum} is outside [0, 1]", fix="use a momentum in [0, 1], e.g. 0.9")


@torch.no_grad()
def momentum_step(current: torch.Tensor, lam_batch: torch.Tensor, momentum: float) -> torch.Tensor:
    """The one momentum update of every rule: ``clip(μ λ + (1 − μ) λ_batch, 0, 1)``, ``λ`` where ``λ_batch``
    is NaN (no estimate: a batch of one, no variance). Shapes as ``current`` (``[]`` or ``[N]``)."""
    new = momentum * current + (1 - momentum) * lam_batch
    return torch.where(torch.isnan(lam_batch), current, new).clamp(0, 1)


def no_feedback_error(what: str) -> LambdaError:
    """The error of ``adapt_lambda`` / ``update_generators`` called without recorded feedback."""
    return LambdaError(f"{what} needs the feedback recorded by a backward, and no node has any since the last "
                       "forward run with gradients enabled",
                       fix="call it after loss.backward() (or record_feedback(loss)) of a forward with gradients "
                           "on and net.synthetic = True; forwards under torch.no_grad() keep the last records")


def _units(block: nn.Module) -> tuple[int, ...]:
    return (block.count,) if isinstance(block, ArrayBlock) else ()


def feedback_lambda(block: nn.Module, entry: NodeTrace, feedback: torch.Tensor, synthetic: torch.Tensor,
                    normalize: bool | str, fast: bool = True) -> torch.Tensor:
    """λ_batch of a block from two cotangents at its output: ``p̃_b`` is its per-sample parameter
    gradient under ``feedback``, ``s̃_b`` under ``synthetic`` (``[B, dim]``; arrays ``[N, B, q]``).

    ``entry`` is the block's part of the forward (its inputs, and an array's ``aux``). ``fast``: the
    slot array's closed form (:func:`~.slot.slot_array_lambda`), else the generic ``torch.func``
    path. Returns ``[]`` for a node, ``[N]`` for an array; NaN (λ kept) for a batch under two samples.
    """
    array = isinstance(block, ArrayBlock)
    batch = feedback.shape[1] if array else feedback.shape[0]
    if batch < 2 or not any(True for _ in block.function.parameters()):
        # no variance estimate (nothing to vmap over an empty batch), or no parameters (a relay: eq. 18 compares
        # per-sample parameter gradients, and there are none): λ is kept
        return torch.full(_units(block), float("nan"), dtype=feedback.dtype, device=feedback.device)
    if array and fast and isinstance(block.function, SlotNeuronArray):
        u, r = entry.inputs
        return slot_array_lambda(block.function, u, r, feedback, synthetic, normalize=normalize, aux=entry.aux)
    if normalization_mode(normalize) == "feedback":
        aux = entry.aux
        if aux is None and array:  # a general-path forward kept no aux: recompute it
            with torch.no_grad():
                aux = block.function(*entry.inputs)[1]
        aux = aux or {}
        gain = 1 - aux["squashed"] ** 2 if "squashed" in aux else None
        feedback, synthetic = unit_feedback(feedback, gain), unit_feedback(synthetic, gain)
    count = block.count if array else None
    p = per_sample_param_grads(block.function, entry.inputs, feedback, count)
    s = per_sample_param_grads(block.function, entry.inputs, synthetic, count)
    return batch_lambda_from_vectors(p, s, normalize)


def node_lambda(block: nn.Module, entry: NodeTrace | None, normalize: bool | str, fast: bool) -> torch.Tensor | None:
    """The ``child`` grouping's λ_batch of a block: its received feedback against its own prediction.

    Parameters
    ----------
    block : Block
        A compiled graph's block.
    entry : NodeTrace or None
        Its part of the forward, after a backward.
    normalize : bool or str
        The normalisation before eq. 18 (:data:`~.estimate.NORMALIZATIONS`; ``True`` is ``"gradient"``).
    fast : bool
        The slot array's closed form where it applies, else the generic ``torch.func`` path.

    Returns
    -------
    torch.Tensor or None
        As :func:`feedback_lambda`; None when the block recorded no feedback or made no prediction.
    """
    if entry is None or entry.received is None or entry.prediction is None or entry.inputs is None:
        return None
    return feedback_lambda(block, entry, entry.received, entry.prediction.detach(), normalize, fast)


class ChildRule:
    """eq. 18 per child (``child`` grouping): ``θ_v`` from the feedback ``v`` received against ``ĥ_v``."""

    groupings = ("child",)

    def check(self, grouping: str) -> None:
        if grouping not in self.groupings:
            raise LambdaError(f"this rule adapts the 'child' grouping, and this net uses '{grouping}'",
                              fix="call net.adapt_lambda(), which picks the rule of the net's grouping")

    def estimate(self, table: LambdaTable, trace: Trace, *, normalize: bool | str = True,
                 nodes: Iterable[str] | None = None, fast: bool = True, **_: object) -> dict[str, torch.Tensor]:
        """λ_batch per node (``[]``) or array (``[N]``) that ran a generator and received feedback."""
        result = {}
        for name in list(table.blocks) if nodes is None else list(nodes):
            block = table.block(name)
            lam_batch = node_lambda(block, trace.nodes.get(name), normalize, fast)
            if lam_batch is not None:
                result[name] = lam_batch.reshape(block.lam_self.shape).to(block.lam_self)
        return result

    def current(self, table: LambdaTable, name: str) -> torch.Tensor:
        return table.blocks[name].lam_self

    def write(self, table: LambdaTable, name: str, value: torch.Tensor, moved: torch.Tensor) -> None:
        table.write_theta(name, value)  # the in-edges follow θ, moved or not


class ParentRule:
    """eq. 18 per parent (§4.2; ``parent`` and ``edge``): ``λ_v`` over the out-edges of ``v`` from the
    backpropagated part ``P_v`` and the synthetic part ``S_v`` of the feedback it received."""

    groupings = ("parent", "edge")

    def check(self, grouping: str) -> None:
        if grouping not in self.groupings:
            raise LambdaError(f"per-parent λ is for the 'parent' and 'edge' groupings, this net uses '{grouping}'",
                              fix="call net.adapt_lambda(), which picks the rule of the net's grouping")

    def estimate(self, table: LambdaTable, trace: Trace, *, normalize: bool | str = True,
                 nodes: Iterable[str] | None = None, fast: bool = True, **_: object) -> dict[str, torch.Tensor]:
        """λ_batch per parent node (``[]``) or array (``[N]``) whose children fed back."""
        blocks = table.blocks
        parts = feedback_parts(blocks, trace)
        names = list(parts) if nodes is None else [table.block(n).name for n in nodes]
        result = {}
        for name in names:
            block = table.block(name)
            entry = trace.nodes.get(name)
            if name not in parts or entry is None or entry.inputs is None:
                continue  # no child fed it back, or it ran plain backprop
            feedback, synthetic = parts[name]
            lam_batch = feedback_lambda(block, entry, feedback, synthetic, normalize, fast)
            result[name] = lam_batch.reshape(-1 if isinstance(block, ArrayBlock) else ()).to(block.lam)
        return result

    def current(self, table: LambdaTable, name: str) -> torch.Tensor:
        return table.out_edge_mean(name)

    def write(self, table: LambdaTable, name: str, value: torch.Tensor, moved: torch.Tensor) -> None:
        table.write_out_edges(name, value, only=moved)  # a parent without an estimate keeps its out-edges


class StateRule:
    """eq. 18 for a recurrent cell's state neurons (``child`` grouping): every (step, sequence) pair is a
    sample of the per-step parameter gradients; the base θ moves, the per-step θ follow the schedule."""

    groupings = ("child",)

    def check(self, grouping: str) -> None:
        if grouping not in self.groupings:
            raise LambdaError(f"a recurrent cell adapts λ under the 'child' grouping (one θ per state neuron), and "
                              f"this one uses '{grouping}'; the per-parent rule of 'parent' and 'edge' is for "
                              "layered graphs", fix="compile the cell with grouping='child' (compile_cell's default)")

    def estimate(self, table: LambdaTable, trace: Trace, *, normalize: bool | str = True,
                 max_samples: int | None = 128, valid: torch.Tensor | None = None,
                 **_: object) -> dict[str, torch.Tensor]:
        """``{state: λ_batch [N]}`` from ``max_samples`` samples (None: all ``T·B``) of the steps where
        ``valid [T, B]`` holds (empty when none does)."""
        st = trace.state
        name = trace.state_name
        if st is None or name is None:
            return {}
        block = table.blocks[name]
        assert isinstance(block, StateBlock)
        usable = [i for i, r in enumerate(st.records) if r.received is not None]
        if valid is not None:
            usable = [i for i in usable if bool(valid[i].any())]
        if not usable:
            return {}
        received = st.records[usable[0]].received
        if received.shape[1] == 0:  # an empty batch: no estimate, θ kept
            return {name: torch.full((block.count,), float("nan"), dtype=received.dtype, device=received.device)}
        if has_forward_tensors(block.function, st):
            lam_batch = state_lambda_from_forward(block.function, st, usable, normalize, max_samples, valid)
        else:
            lam_batch = recurrent_state_lambda(block.function, st, usable, normalize, max_samples, valid)
        return {name: lam_batch}

    def current(self, table: LambdaTable, name: str) -> torch.Tensor:
        return table.blocks[name].lam_self

    def write(self, table: LambdaTable, name: str, value: torch.Tensor, moved: torch.Tensor) -> None:
        table.write_theta(name, value)  # the in-edges follow θ, moved or not


def rule_for(grouping: str, recurrent: bool) -> ChildRule | ParentRule | StateRule:
    """The rule that adapts a net of this grouping (a cell: :class:`StateRule`, checked)."""
    if recurrent:
        rule: ChildRule | ParentRule | StateRule = StateRule()
    elif grouping == "child":
        rule = ChildRule()
    else:
        rule = ParentRule()
    rule.check(grouping)
    return rule


def adapt(rule: ChildRule | ParentRule | StateRule, table: LambdaTable, trace: Trace, momentum: float,
          **options: object) -> dict[str, torch.Tensor]:
    """One adaptation: ``rule``'s batch estimates, then :func:`momentum_step` on every owner it names.

    Returns the estimates (NaN: λ kept).
    """
    estimates = rule.estimate(table, trace, **options)
    for name, lam_batch in estimates.items():
        current = rule.current(table, name)
        lam_batch = lam_batch.reshape(current.shape).to(current)
        new = momentum_step(current, lam_batch, momentum)
        rule.write(table, name, new, ~torch.isnan(lam_batch) & ~torch.isnan(new))
    return estimates
