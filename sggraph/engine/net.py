"""What every compiled net shares: the λ API, adaptive λ, the generator step and the read API.

:class:`CompiledBase` is the one implementation behind :class:`~sggraph.CompiledGraph` and
:class:`~sggraph.CompiledCell` (the :class:`~sggraph.engine.protocol.CompiledNet` protocol). It
composes three objects a subclass creates:

* ``self.lambdas`` — the :class:`~sggraph.engine.lam.table.LambdaTable` that owns every λ;
* ``self.trace`` — the :class:`~sggraph.engine.trace.Trace` of the current step (replaced by
  every grad-enabled forward);
* the adaptation rule of the net's grouping (:func:`~sggraph.engine.lam.rules.rule_for`).

>>> import torch, sggraph
>>> g = sggraph.Graph(); g.add_node("z", 3); g.add_node("y", 2, ["z"], fn="linear")
>>> net = sggraph.compile(g, grouping="child"); net.set_lambda(0.5)
>>> net({"z": torch.randn(8, 3)})["y"].sum().backward()
>>> sorted(net.adapt_lambda(momentum=0.9)), net.paths()
(['y'], {'y': 'child'})
>>> net.adapt_lambda()
Traceback (most recent call last):
...
sggraph.exceptions.LambdaError: adapt_lambda already ran on this backward's feedback. Fix: run a new forward and backward first (each backward's feedback adapts λ once).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import nn

from ..exceptions import LambdaError
from .blocks import ArrayBlock, NodeBlock, block_parameters, observes, step_on
from .lam.estimate import normalization_mode
from .lam.rules import adapt, check_momentum, no_feedback_error, rule_for
from .lam.table import LambdaTable
from .mixing import Record
from .trace import Trace

__all__ = ["CompiledBase"]


class CompiledBase(nn.Module):
    """The shared part of a compiled net (see the module docstring).

    A subclass sets ``grouping``, ``synthetic``, ``check_finite``, ``lambdas`` and ``trace`` and
    offers ``blocks`` (name -> block, sources excluded).
    """

    grouping: str
    synthetic: bool
    check_finite: bool
    lambdas: LambdaTable
    trace: Trace
    recurrent = False

    # ------------------------------------------------------------ parameters
    def model_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the node functions (what the model optimizer updates). ``net.parameters()`` holds
        the generators' too (:meth:`generator_parameters`, trained by their own optimizer): give the model's
        optimizer these."""
        return block_parameters(self.blocks, "function")

    def generator_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the generators (their own optimizer)."""
        return block_parameters(self.blocks, "generator")

    def block(self, name: str) -> nn.Module:
        """The compiled block of a node, array or state (a :class:`~sggraph.LambdaError` for sources and
        unknown names)."""
        return self.lambdas.block(name)

    def _mode(self, name: str) -> str:
        """The path ``name`` runs in a grad-enabled forward now."""
        if not self.synthetic or not torch.is_grad_enabled():
            return "plain"
        return self.lambdas.mode(name)

    # ---------------------------------------------------------------- lambda
    def set_lambda(self, value: float | torch.Tensor, edge: tuple[str, str] | None = None, *,
                   node: str | None = None) -> None:
        """Set mixing weights; a bad value is a :class:`~sggraph.LambdaError` naming the node, and changes
        no table (the whole write is checked first).

        Parameters
        ----------
        value : float or Tensor
            In ``[0, 1]``. For all edges between two arrays a tensor of the table's
            shape ``[count, fan_in (+1 residual)]`` sets each edge; for an array or a state ``[N]``
            sets one value per neuron.
        edge : (parent, child), optional
            One edge (nodes, neurons ``a[i]``, or two array names for all their edges).
            None: every edge.
        node : str, optional
            Set by node, per the grouping: ``child`` — ``θ_v`` (all in-edges and ``λ^self``);
            ``parent`` — ``λ_u`` on all out-edges of ``u``; ``edge`` — all in-edges of the node.

        Notes
        -----
        Under the ``child`` grouping an edge ``(u, v)`` sets ``θ_v``; under ``parent`` it
        sets ``λ_u`` — the tied weights move together. A recurrent cell ties a node's in-edges:
        ``edge=(u, v)`` sets all of ``v``'s.
        """
        self.lambdas.set(value, edge, node=node)

    def get_lambda(self, edge: tuple[str, str]) -> float | torch.Tensor:
        """The weight of one edge (float), or of several (tensor: all edges between two arrays
        ``[N, F(+1)]``; a cell's ``(h, h)`` is the state table ``[N, F + 1]``)."""
        return self.lambdas.get(edge)

    def set_self_lambda(self, value: float | torch.Tensor, node: str | None = None) -> None:
        """Set ``λ^self_v`` (the weight of the true feedback in v's own parameter gradient, eq. 6).

        Under the ``child`` grouping this is ``θ_v`` and also sets v's in-edges.
        """
        self.lambdas.set_self(value, node)

    def get_self_lambda(self, node: str) -> float | torch.Tensor:
        """``λ^self`` of a node (float) or of an array or state (``[N]`` tensor; ``name[i]``: one neuron)."""
        return self.lambdas.get_self(node)

    def edge_lambdas(self) -> dict[str, torch.Tensor]:
        """Every node's in-edge weights (copies): nodes ``[P]`` (one per parent ref), arrays ``[N, F (+1)]``
        (the parent table's columns, then the residual edge), a cell's state ``[N, F + 1]`` (column ``F``:
        the input edge)."""
        return self.lambdas.edges()

    def self_lambdas(self) -> dict[str, torch.Tensor]:
        """Every node's ``λ^self`` (copies): nodes ``[]``, arrays ``[N]`` (a state's is its base ``θ``)."""
        return self.lambdas.selves()

    def adapt_lambda(self, momentum: float = 0.9, normalize: bool | str = True, nodes: Iterable[str] | None = None,
                     fast: bool = True, max_samples: int | None = 128,
                     valid: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Adaptive λ from the last backward: the batch estimate of eq. 18, then ``λ ← μλ + (1 − μ)λ_batch``.

        The rule follows the grouping (:mod:`sggraph.engine.lam.rules`): ``child`` — each node's
        ``θ_v`` from its received feedback against its own prediction; ``parent`` and ``edge`` — each
        parent's ``λ_v`` over its out-edges (§4.2); a recurrent cell (``child``) — the state neurons'
        base θ, every (step, sequence) a sample.

        Each backward's feedback adapts λ once: a second call before a new backward is a
        :class:`~sggraph.LambdaError` (it would apply the momentum step twice with one estimate).
        A batch of fewer than two samples has no variance estimate and leaves λ as it is.

        Parameters
        ----------
        momentum : float
            ``μ`` in [0, 1].
        normalize : {"feedback", "gradient", "none"} or bool
            Which gradients get unit ℓ2 norm first (App. H.2; ``True`` is ``"gradient"``; the
            paper's experiments use ``"feedback"``).
        nodes : iterable of str, optional
            Graphs: the nodes/arrays (``child``) or parents (``parent``, ``edge``) to adapt (default all).
        fast : bool
            Graphs: the slot arrays' closed form (tested equal to the generic ``torch.func`` path).
        max_samples : int or None
            Cells: the estimate uses the samples of ``⌈max_samples / B⌉`` random steps (None: all ``T·B``).
        valid : Tensor ``[T, B]`` (bool), optional
            Cells: keep only those samples (e.g. steps inside episodes).

        Returns
        -------
        dict
            ``λ_batch`` per adapted owner (``[]`` for nodes, ``[N]`` for arrays and states; NaN: kept).
        """
        rule = rule_for(self.grouping, self.recurrent)
        check_momentum(momentum)
        normalization_mode(normalize)
        if valid is not None and not self.recurrent:
            raise LambdaError("valid= masks the steps of a recurrent cell; a layered graph has none",
                              fix="drop valid=, or pass only the batch's valid samples to the forward")
        trace = self.trace
        if not trace.has_feedback():
            raise no_feedback_error("adapt_lambda")
        if trace.adapted_already():
            raise LambdaError("adapt_lambda already ran on this backward's feedback",
                              fix="run a new forward and backward first (each backward's feedback adapts λ once)")
        result = adapt(rule, self.lambdas, trace, momentum, normalize=normalize, nodes=nodes, fast=fast,
                       max_samples=max_samples, valid=valid)
        trace.mark_adapted()
        return result

    # ------------------------------------------------------------ generators
    def generator_loss(self, valid: torch.Tensor | None = None) -> torch.Tensor:
        """MSE of each generator's prediction against its target, summed over nodes (a state's: the mean
        over its steps). Call after a backward.

        The target is the feedback the node received (itself mixed from below: the bootstrapped
        target); for a cell's state with ``generator_target="mixed"`` it is the mixture the state
        passed on, ``θ_t g̃ + (1 − θ_t) ĥ`` (ĥ detached). ``valid [T, B]`` (bool, cells) restricts the
        state's regression to those samples, normalised by the valid elements. Generators that learn
        by observation (``observe``, e.g. tabular) are skipped (see :meth:`update_generators`), and so
        are empty batches.
        """
        total = None
        for entry in self.trace.nodes.values():
            pred, received = entry.prediction, entry.received
            if pred is None or received is None or pred.numel() == 0:
                continue
            if observes(self.blocks[entry.record.node].generator):
                continue
            loss = torch.mean((pred - received) ** 2)
            total = loss if total is None else total + loss
        state = self._state_generator_loss(valid)
        if state is not None:
            total = state if total is None else total + state
        if total is None:
            return torch.zeros((), device=next(iter(self.blocks.values())).lam.device)
        return total

    def _state_generator_loss(self, valid: torch.Tensor | None) -> torch.Tensor | None:
        if valid is not None:
            raise LambdaError("valid= masks the steps of a recurrent cell; a layered graph has none",
                              fix="drop valid=")
        return None

    def has_feedback(self) -> bool:
        """Whether a backward since the last grad-enabled forward recorded feedback at some node or step."""
        return self.trace.has_feedback()

    def update_generators(self, optimizer: torch.optim.Optimizer | None = None, valid: torch.Tensor | None = None,
                          max_norm: float | None = None) -> float:
        """One generator update on the targets recorded in the last backward; returns the loss value.

        Generators with an ``observe(z, target)`` method (tabular) observe ``(z_v, g̃_v)``; the others
        take one ``optimizer`` step on :meth:`generator_loss` (``valid``: see there), with the gradient
        norm clipped to ``max_norm`` first when given (the authors' POPGym code: 0.5).

        Raises :class:`~sggraph.LambdaError` when no feedback was recorded (no backward since the last
        grad-enabled forward), and when the generators already stepped on this forward's predictions
        (a second step would backpropagate through their freed graph): run a new forward and backward,
        or :meth:`refresh_predictions`, first.
        """
        trace = self.trace
        if not trace.has_feedback():
            raise no_feedback_error("update_generators")
        if trace.generators_stepped:
            raise LambdaError("update_generators already stepped on this forward's predictions",
                              fix="run a new forward and backward first (or refresh_predictions() for a new "
                                  "prediction of the same forward)")
        for name, entry in trace.nodes.items():
            block = self.blocks[name]
            if observes(block.generator) and entry.received is not None and entry.generator_input is not None:
                block.generator.observe(entry.generator_input, entry.received)
        loss = self.generator_loss(valid)
        trace.mark_generators_stepped()
        if not max_norm:
            return step_on(loss, optimizer)
        if optimizer is not None and loss.requires_grad:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, max_norm)
            optimizer.step()
        return float(loss.detach())

    def record_feedback(self, loss: torch.Tensor) -> None:
        """Run only the feedback recursion of ``loss``'s backward: every node records ``g̃_v``.

        No parameter gradient is formed (autograd stops at the nodes' outputs) and the graph is
        kept, so ``loss.backward()`` can follow. With :meth:`update_generators` and
        :meth:`refresh_predictions` this gives the "generators first" order of the paper's
        experiment code: the generators learn from this batch's feedback before the policy's
        backward mixes with their (updated) predictions.
        """
        outputs = [e.output for e in self.trace.nodes.values() if e.output is not None and e.output.requires_grad]
        if outputs and loss.requires_grad:
            torch.autograd.grad(loss, outputs, retain_graph=True, allow_unused=True)

    @torch.no_grad()
    def refresh_predictions(self) -> None:
        """Recompute every generator's prediction ``ĥ_v`` of the last forward with its current parameters.

        The next backward of that forward mixes with the new predictions (child path only: the
        general path folded ``J_zᵀ ĥ_v`` into the forward); the generators may step again on them.
        """
        trace = self.trace
        for name, entry in trace.nodes.items():
            if entry.prediction is None or entry.generator_input is None:
                continue
            if entry.mode != "child":
                raise LambdaError("refreshing predictions needs every mixed node on the child path (one λ per "
                                  "node)", node=name, fix="compile with grouping='child', or update the "
                                  "generators after the backward (update_generators)")
            h = self.blocks[name].predict(entry.generator_input, entry.aux)
            entry.prediction = h
            entry.record.synthetic_output = h  # type: ignore[union-attr]
        trace.mark_generators_stepped(False)

    # ------------------------------------------------------------- read API
    def received(self, name: str) -> torch.Tensor | None:
        """The feedback node ``name`` received in the last backward (``[B, dim]``; arrays ``[B, N, q]``)."""
        block = self.block(name)
        entry = self.trace.nodes.get(name)
        if entry is None or entry.received is None:
            return None
        return entry.received.transpose(0, 1) if isinstance(block, ArrayBlock) else entry.received

    def records(self) -> dict[str, Record]:
        """The feedback records of the last grad-enabled forward: nodes by name, a cell's state per step as
        ``name@t`` (``t`` from 1); ``record.received`` is what the last backward delivered (arrays
        neuron-major ``[N, B, q]``)."""
        return self.trace.records()

    def paths(self) -> dict[str, str]:
        """The path each node ran in the last grad-enabled forward: ``plain``, ``child`` or ``general``."""
        return {name: self.trace.mode(name) for name in self.blocks}

    def _node_entry(self, block: NodeBlock, plain: bool = False):
        """A fresh trace entry for a node about to run in a grad-enabled forward (None under no_grad)."""
        if not torch.is_grad_enabled():
            return None
        mode = "plain" if plain else self._mode(block.name)
        return self.trace.node(block.name, mode, self.check_finite)
