"""Compile a :class:`~sggraph.Graph` into an ``nn.Module`` whose backward runs eq. 5–6.

For every edge ``u → v`` with weight ``λ_{u→v}``, and ``ĥ_v`` node ``v``'s generator::

    gradient u receives from v = λ_{u→v} J_uᵀ g̃_v + (1 − λ_{u→v}) J_uᵀ ĥ_v(z_v)
    v's parameter gradient     = J_θᵀ (λ^self_v g̃_v + (1 − λ^self_v) ĥ_v)

The mixing lives inside PyTorch's autograd (:mod:`sggraph.engine.mixing`): ``out = net(inputs)``,
any loss, ``loss.backward()``, any optimizer. Per node the compiler picks the cheapest
exact path each forward:

* ``plain``   — ``net.synthetic`` is off (backprop): no mixer, no generator;
* ``child``   — every in-edge weight equals ``λ^self_v`` (the paper's experiment-code
  grouping, and all λ = 1): one mixer on the output, one backward, no extra work;
* ``general`` — free per-edge weights: ``J_zᵀ ĥ_v`` (and ``J_θᵀ ĥ_v`` when ``λ^self < 1``)
  is computed in the forward, mixed into the native backward per input column.

Node arrays compile to one batched module (gather by the parent table, ``bmm``);
activations of arrays are kept neuron-major ``[count, B, dim]`` inside and returned
as ``[B, count, dim]``.

Examples
--------
>>> import torch, sggraph
>>> g = sggraph.Graph("tiny")
>>> g.add_node("z", 3); g.add_node("h", 4, ["z"], fn="tanh"); g.add_node("y", 1, ["h"], fn="linear")
>>> net = sggraph.compile(g)
>>> out = net({"z": torch.randn(8, 3)})
>>> out["y"].shape
torch.Size([8, 1])
>>> net.set_lambda(0.5)
>>> net.get_lambda(("h", "y"))
0.5
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..core.graph import Graph
from ..core.unroll import Cell

if TYPE_CHECKING:
    from .recurrent import CompiledCell
from ..exceptions import CompileError, DimensionError, LambdaError
from .blocks import (
    GROUPINGS,
    ArrayBlock,
    Block,
    NodeBlock,
    SourceBlock,
    block_parameters,
    check_generators,
    check_inputs,
    check_lambda_value,
    first_parameter,
    guard_lambda_write,
    observes,
    split_ref,
    step_on,
)
from .functions import make_function
from .generators import (
    GENERATOR_INITS,
    LinearGenerator,
    SlotGenerator,
    generator_init_std,
)
from .lambdas import adapt_lambda as _adapt_lambda
from .lambdas import no_feedback_error
from .mixing import Record
from .neuron import SlotNeuronArray
from .parent_lambdas import adapt_parent_lambda, write_out_edge_lambda
from .recurrent import compile_cell

__all__ = ["GROUPINGS", "CompiledGraph", "compile", "lambda_state"]

class CompiledGraph(nn.Module):
    """A graph compiled to PyTorch; backward runs eq. 5–6 with the current λ.

    Call it with a mapping of source tensors: plain sources ``[B, dim]``, input
    arrays ``[B, count, dim]`` (or ``[B, count]`` when ``dim == 1``). It returns a
    dict with every terminal node's output (``[B, dim]``; arrays ``[B, count, dim]``).

    Attributes
    ----------
    graph : Graph
        The compiled graph.
    grouping : str
        ``edge``, ``parent`` or ``child`` (see :data:`GROUPINGS`).
    synthetic : bool
        When False the net is plain backprop: no mixer or generator runs, λ is ignored.
    check_finite : bool
        Raise :class:`~sggraph.GradientError` naming the node when a NaN/inf gradient
        reaches a mixer.
    """

    def __init__(self, graph: Graph, functions: Mapping[str, nn.Module] | None = None,
                 generators: Mapping[str, nn.Module] | None = None, grouping: str = "edge",
                 generator_init: str = "zero") -> None:
        super().__init__()
        if grouping not in GROUPINGS:
            raise CompileError(f"unknown grouping '{grouping}'", fix=f"use one of {', '.join(GROUPINGS)}")
        if generator_init not in GENERATOR_INITS:
            raise CompileError(f"unknown generator_init '{generator_init}'",
                               fix=f"use one of {', '.join(GENERATOR_INITS)}")
        graph.lint()
        self.graph = graph
        self.grouping = grouping
        self.synthetic = True
        self.check_finite = True
        functions = dict(functions or {})
        generators = dict(generators or {})
        known = set(graph.nodes) | set(graph.arrays)
        for what, given in (("functions", functions), ("generators", generators)):
            for name in given:
                if name not in known:
                    raise CompileError(f"{what}[{name!r}] names no node of graph '{graph.name}'", node=name,
                                       fix=f"use one of {', '.join(sorted(known)[:12])}")
        check_generators(generators, graph.where)
        self.blocks = nn.ModuleDict()
        self.sources: dict[str, SourceBlock] = {}
        layers = graph.block_layers()
        self.order = sorted(layers, key=lambda b: layers[b])
        dims = {n: node.dim for n, node in graph.nodes.items()}
        for name in self.order:
            file, line = graph.where(name)
            if name in graph.nodes:
                node = graph.nodes[name]
                if not node.parents:
                    self.sources[name] = SourceBlock(name, node.dim, None)
                    continue
                pdims = [dims[p] if p in dims else graph.arrays[p].count * graph.arrays[p].dim
                         if p in graph.arrays else graph.arrays[split_ref(p)[0]].dim for p in node.parents]
                if name in functions:
                    fn = functions[name]
                elif node.fn is not None:
                    fn = make_function(node.fn, sum(pdims), node.dim, node=name, init_std=node.init_std)
                else:
                    raise CompileError("no function for this node", node=name, file=file, line=line,
                                       fix="add `fn: linear|tanh|identity|dot` in the YAML, or pass "
                                           f"compile(graph, functions={{'{name}': module}})")
                gen = generators.get(name) or LinearGenerator(sum(pdims), node.dim,
                                                              generator_init_std(generator_init, sum(pdims)))
                self.blocks[name] = NodeBlock(name, node.parents, pdims, node.dim, fn, gen)
            else:
                arr = graph.arrays[name]
                if arr.parent is None:
                    self.sources[name] = SourceBlock(name, arr.dim, arr.count)
                    continue
                parent = graph.arrays[arr.parent]
                table = graph.array_table(name)
                in_dim = table.shape[1] * parent.dim
                fn = functions.get(name) or SlotNeuronArray(arr.count, in_dim, arr.dim, arr.slots, arr.residual)
                gen = generators.get(name) or SlotGenerator(arr.count, in_dim, arr.dim, arr.slots,
                                                            generator_init_std(generator_init, in_dim))
                self.blocks[name] = ArrayBlock(name, arr.parent, table, arr.residual, arr.count, arr.dim,
                                                parent.dim, fn, gen)
        self.terminal_blocks = [b for b in self.order if b in self.blocks and not self._has_children(b)]

    def _has_children(self, name: str) -> bool:
        for other in self.blocks.values():
            if isinstance(other, NodeBlock) and any(split_ref(p)[0] == name for p in other.parents):
                return True
            if isinstance(other, ArrayBlock) and other.parent == name:
                return True
        return False

    # --------------------------------------------------------------- forward
    def mode_for(self, block: Block) -> str:
        if not self.synthetic or not torch.is_grad_enabled():
            return "plain"
        return block.modes()

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run the graph. See the class docstring for shapes."""
        return self._public(self._run(inputs), self.terminal_blocks)

    def activations(self, inputs: Mapping[str, torch.Tensor], nodes: Sequence[str] | None = None
                    ) -> dict[str, torch.Tensor]:
        """Run the graph and return the outputs of ``nodes`` (default: every node and array, sources
        included) in the public layout: ``[B, dim]``, arrays ``[B, count, dim]``."""
        values = self._run(inputs)
        names = list(values) if nodes is None else list(nodes)
        for name in names:
            if name not in values:
                raise DimensionError("not a node or array of the graph", node=name,
                                     fix=f"use one of {', '.join(list(values)[:12])}")
        return self._public(values, names)

    def _public(self, values: Mapping[str, torch.Tensor], names: Sequence[str]) -> dict[str, torch.Tensor]:
        arrays = {n for n, b in self.blocks.items() if isinstance(b, ArrayBlock)}
        arrays |= {n for n, s in self.sources.items() if s.count is not None}
        return {n: values[n].transpose(0, 1) if n in arrays else values[n] for n in names}

    def _run(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        values: dict[str, torch.Tensor] = {}
        batch = None
        check_inputs(inputs, self.sources, f"graph '{self.graph.name}'", self.check_finite, first_parameter(self))
        for name, src in self.sources.items():
            x = inputs[name]
            if src.count is None:
                ok = x.dim() == 2 and x.shape[1] == src.dim
                want = f"[B, {src.dim}]"
            else:
                if x.dim() == 2 and src.dim == 1:
                    x = x.unsqueeze(-1)
                ok = x.dim() == 3 and x.shape[1:] == (src.count, src.dim)
                want = f"[B, {src.count}, {src.dim}]"
                if ok:
                    x = x.transpose(0, 1)
            if not ok or (batch is not None and x.shape[1 if src.count else 0] != batch):
                raise DimensionError(f"input has shape {list(inputs[name].shape)}, expected {want}"
                                     + (f" with B={batch}" if batch is not None else ""), node=name,
                                     fix="pass a tensor of the declared shape")
            batch = x.shape[1] if src.count else x.shape[0]
            values[name] = x
        for name in self.order:
            if name in self.blocks:
                values[name] = self.blocks[name].run(values, self)
        return values

    # ------------------------------------------------------------ parameters
    def model_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the node functions (what the model optimizer updates). ``net.parameters()`` holds
        the generators' too (:meth:`generator_parameters`, trained by their own optimizer): give the model's
        optimizer these."""
        return block_parameters(self.blocks, "function")

    def generator_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the generators (their own optimizer)."""
        return block_parameters(self.blocks, "generator")

    # ---------------------------------------------------------------- lambda
    def block(self, name: str) -> Block:
        """The compiled block of a node or array (raises :class:`~sggraph.LambdaError` for sources and unknown names)."""
        if name not in self.blocks:
            what = "a source (it has no in-edges)" if name in self.sources else "not a node of the graph"
            raise LambdaError(f"'{name}' is {what}", node=name, fix="name a non-source node or array")
        return self.blocks[name]  # type: ignore[return-value]

    def _edge_mask(self, parent: str, child: str) -> tuple[Block, object]:
        """The block and index/mask of its ``lam`` entries for edge ``parent → child``."""
        cbase, cidx = split_ref(child)
        pbase, pidx = split_ref(parent)
        block = self.blocks[cbase] if cbase in self.blocks else None  # noqa: SIM401 - nn.ModuleDict has no get
        if isinstance(block, NodeBlock) and cidx is None:
            slots = block.edge_slots(parent)
            if slots:
                return block, slots
        if isinstance(block, ArrayBlock) and block.parent == pbase:
            mask = block.columns_for(pidx, cidx)
            if bool(mask.any()):
                return block, mask
        raise LambdaError(f"there is no edge {parent} -> {child}", node=child,
                          fix="name an existing (parent, child) pair; neurons of arrays are name[i], "
                              "or use array names for all edges between two arrays")

    def _out_edges(self, parent: str) -> list[tuple[Block, object]]:
        pbase, pidx = split_ref(parent)
        found = []
        for block in self.blocks.values():
            if isinstance(block, NodeBlock):
                slots = [i for i, p in enumerate(block.parents)
                         if p == parent or (pidx is None and split_ref(p)[0] == pbase)]
                if slots:
                    found.append((block, slots))
            elif block.parent == pbase:
                found.append((block, block.columns_for(pidx, None)))
        return found

    def _write(self, block: Block, where: object, value: object) -> None:
        lam = block.lam
        with torch.no_grad():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and isinstance(where, torch.Tensor):
                v = value.to(lam)
                if v.shape == lam.shape:
                    lam[where] = v[where]
                    return
                raise LambdaError(f"λ tensor of shape {list(v.shape)} does not match the edge table "
                                  f"{list(lam.shape)}", node=block.name,
                                  fix="pass a scalar or a tensor of the table's shape [count, fan_in(+1)]")
            lam[where] = float(value) if not isinstance(value, torch.Tensor) else value.to(lam)

    @guard_lambda_write
    def set_lambda(self, value: float | torch.Tensor, edge: tuple[str, str] | None = None, *,
                   node: str | None = None) -> None:
        """Set mixing weights.

        Parameters
        ----------
        value : float or Tensor
            In ``[0, 1]``. For all edges between two arrays a tensor of the table's
            shape ``[count, fan_in (+1 residual)]`` sets each edge.
        edge : (parent, child), optional
            One edge (nodes, neurons ``a[i]``, or two array names for all their edges).
            None: every edge.
        node : str, optional
            Set by node, per the grouping: ``child`` — ``θ_v`` (all in-edges and ``λ^self``);
            ``parent`` — ``λ_u`` on all out-edges of ``u``; ``edge`` — all in-edges of the node.

        Notes
        -----
        Under the ``child`` grouping an edge ``(u, v)`` sets ``θ_v``; under ``parent`` it
        sets ``λ_u`` — the tied weights move together.
        """
        check_lambda_value(value, "λ")
        if edge is not None and node is not None:
            raise LambdaError("give either edge or node, not both", fix="call set_lambda once per target")
        if edge is None and node is None:
            for block in self.blocks.values():
                with torch.no_grad():
                    block.lam.fill_(float(value)) if not isinstance(value, torch.Tensor) or value.dim() == 0 \
                        else block.lam.copy_(value)
                    if self.grouping == "child":
                        block.lam_self.fill_(float(value))
            return
        if edge is not None:
            if not (isinstance(edge, tuple) and len(edge) == 2):
                raise LambdaError(f"edge must be a (parent, child) pair, got {edge!r}",
                                  fix="pass edge=('u', 'v')")
            block, where = self._edge_mask(*edge)
            if self.grouping == "child":
                node = edge[1]
            elif self.grouping == "parent":
                node = edge[0]
            else:
                self._write(block, where, value)
                return
        assert node is not None
        if self.grouping == "parent":
            edges = self._out_edges(node)
            if not edges:
                raise LambdaError("this node has no out-edges", node=node, fix="name a node with children")
            parent = self.blocks[node] if node in self.blocks else None  # noqa: SIM401 - nn.ModuleDict has no get
            if isinstance(value, torch.Tensor) and value.dim() == 1 and isinstance(parent, ArrayBlock):
                if value.shape != (parent.count,):
                    raise LambdaError(f"λ tensor of shape {list(value.shape)} for array '{node}' of {parent.count} "
                                      "neurons", node=node, fix=f"pass one λ per neuron, a tensor of shape "
                                                                f"[{parent.count}], or a scalar")
                write_out_edge_lambda(self, node, value)  # one λ per neuron on all its out-edges
                return
            for block, where in edges:
                if isinstance(value, torch.Tensor) and value.dim() == 1 and isinstance(block, ArrayBlock):
                    # one λ per parent neuron: spread over the table
                    per_edge = value.to(block.lam)[block.table]
                    if block.residual:
                        per_edge = torch.cat([per_edge, value.to(block.lam)[: block.count, None]], dim=1)
                    self._write(block, where, per_edge)
                else:
                    self._write(block, where, value)
            return
        self._set_node_in(node, value, include_self=self.grouping == "child")

    def _set_node_in(self, node: str, value: float | torch.Tensor, include_self: bool) -> None:
        base, idx = split_ref(node)
        block = self.block(base)
        with torch.no_grad():
            if isinstance(block, ArrayBlock):
                sel = slice(None) if idx is None else idx
                v = value.to(block.lam) if isinstance(value, torch.Tensor) else float(value)
                if isinstance(v, torch.Tensor) and v.dim() == 1 and idx is None:
                    block.lam[:] = v.unsqueeze(1)
                else:
                    block.lam[sel] = v
                if include_self:
                    block.lam_self[sel] = v
            else:
                block.lam.fill_(float(value))
                if include_self:
                    block.lam_self.fill_(float(value))

    def get_lambda(self, edge: tuple[str, str]) -> float | torch.Tensor:
        """The weight of one edge (float), or of all edges between two arrays (``[N, F(+1)]`` tensor)."""
        block, where = self._edge_mask(*edge)
        vals = block.lam[where]
        if isinstance(where, torch.Tensor) and bool(where.all()):
            return block.lam.clone()
        return float(vals.flatten()[0]) if vals.numel() >= 1 and bool((vals == vals.flatten()[0]).all()) \
            else vals.clone()

    @guard_lambda_write
    def set_self_lambda(self, value: float | torch.Tensor, node: str | None = None) -> None:
        """Set ``λ^self_v`` (the weight of the true feedback in v's own parameter gradient, eq. 6).

        Under the ``child`` grouping this is ``θ_v`` and also sets v's in-edges.
        """
        check_lambda_value(value, "λ^self")
        targets = [node] if node is not None else list(self.blocks)
        for t in targets:
            base, idx = split_ref(t)
            block = self.block(base)
            if self.grouping == "child":
                self._set_node_in(t, value, include_self=True)
                continue
            with torch.no_grad():
                if isinstance(value, torch.Tensor) and value.dim() > 0:
                    block.lam_self.copy_(value)
                elif idx is None:
                    block.lam_self.fill_(float(value))
                else:
                    block.lam_self[idx] = float(value)

    def get_self_lambda(self, node: str) -> float | torch.Tensor:
        """``λ^self`` of a node (float) or of an array (``[N]`` tensor)."""
        base, idx = split_ref(node)
        block = self.block(base)
        if idx is not None:
            return float(block.lam_self[idx])
        return float(block.lam_self) if block.lam_self.dim() == 0 else block.lam_self.clone()

    def adapt_lambda(self, momentum: float = 0.9, normalize: bool | str = True, nodes: Iterable[str] | None = None,
                     fast: bool = True) -> dict[str, torch.Tensor]:
        """Adaptive λ from the last backward (eq. 18 batch estimate, momentum eq. 145).

        ``child`` grouping: each node's ``θ_v`` from its received feedback against its own
        prediction (:func:`sggraph.engine.lambdas.adapt_lambda`); ``parent`` and ``edge``: each
        parent's ``λ_v`` over its out-edges from the backpropagated and synthetic parts of its
        feedback (§4.2, :func:`sggraph.engine.parent_lambdas.adapt_parent_lambda`).
        """
        if self.grouping == "child":
            return _adapt_lambda(self, momentum=momentum, normalize=normalize, nodes=nodes, fast=fast)
        return adapt_parent_lambda(self, momentum=momentum, normalize=normalize, nodes=nodes, fast=fast)

    # ------------------------------------------------------------ generators
    def generator_loss(self) -> torch.Tensor:
        """MSE of each generator's last prediction against the feedback its node received.

        Call after a backward. The target is the received ``g̃_v`` (itself mixed from
        below: the bootstrapped target). Summed over nodes, mean over elements.
        Generators that learn by observation (``observe``, e.g. tabular) are skipped
        (see :meth:`update_generators`).
        """
        total = None
        for block in self.blocks.values():
            rec, pred = block.record, block.prediction
            if rec is None or pred is None or rec.received is None or observes(block.generator):
                continue
            loss = torch.mean((pred - rec.received) ** 2)
            total = loss if total is None else total + loss
        if total is None:
            return torch.zeros((), device=next(iter(self.blocks.values())).lam.device)
        return total

    def has_feedback(self) -> bool:
        """Whether a backward since the last grad-enabled forward recorded feedback at some node."""
        return any(b.record is not None and b.record.received is not None for b in self.blocks.values())

    def record_feedback(self, loss: torch.Tensor) -> None:
        """Run only the feedback recursion of ``loss``'s backward: every node records ``g̃_v``.

        No parameter gradient is formed (autograd stops at the nodes' outputs) and the graph is
        kept, so ``loss.backward()`` can follow. With :meth:`update_generators` and
        :meth:`refresh_predictions` this gives the "generators first" order of the paper's
        experiment code: the generators learn from this batch's feedback before the policy's
        backward mixes with their (updated) predictions.
        """
        outputs = [b.output for b in self.blocks.values() if b.output is not None and b.output.requires_grad]
        if outputs and loss.requires_grad:
            torch.autograd.grad(loss, outputs, retain_graph=True, allow_unused=True)

    @torch.no_grad()
    def refresh_predictions(self) -> None:
        """Recompute every generator's prediction ``ĥ_v`` of the last forward with its current parameters.

        The next backward of that forward mixes with the new predictions (child path only: the
        general path folded ``J_zᵀ ĥ_v`` into the forward).
        """
        for block in self.blocks.values():
            if block.prediction is None or block.generator_input is None:
                continue
            if block.mode != "child":
                raise LambdaError("refreshing predictions needs every mixed node on the child path (one λ per "
                                  "node)", node=block.name, fix="compile with grouping='child', or update the "
                                  "generators after the backward (update_generators)")
            h = block.predict(block.generator_input, block.aux)
            block.prediction = h
            block.record.synthetic_output = h  # type: ignore[union-attr]

    def update_generators(self, optimizer: torch.optim.Optimizer | None = None) -> float:
        """One generator update on the targets recorded in the last backward.

        Generators with an ``observe(z, target)`` method (tabular) observe ``(z_v, g̃_v)``;
        the others take one ``optimizer`` step
        on :meth:`generator_loss`. Returns the loss value. Raises :class:`~sggraph.LambdaError`
        when no feedback was recorded (no backward since the last grad-enabled forward).
        """
        if not self.has_feedback():
            raise no_feedback_error("update_generators")
        for block in self.blocks.values():
            if observes(block.generator) and block.record is not None \
                    and block.record.received is not None and block.generator_input is not None:
                block.generator.observe(block.generator_input, block.record.received)
        return step_on(self.generator_loss(), optimizer)

    def received(self, name: str) -> torch.Tensor | None:
        """The feedback node ``name`` received in the last backward (``[B, dim]``; arrays ``[B, N, q]``)."""
        rec = self.block(name).record
        if rec is None or rec.received is None:
            return None
        return rec.received.transpose(0, 1) if isinstance(self.blocks[name], ArrayBlock) else rec.received

    # ------------------------------------------------------------- read API
    def edge_lambdas(self) -> dict[str, torch.Tensor]:
        """Every node's in-edge weights (copies): nodes ``[P]`` (one per parent ref), arrays ``[N, F (+1)]``
        (the parent table's columns, then the residual edge)."""
        return {name: b.lam.detach().clone() for name, b in self.blocks.items()}

    def self_lambdas(self) -> dict[str, torch.Tensor]:
        """Every node's ``λ^self`` (copies): nodes ``[]``, arrays ``[N]``."""
        return {name: b.lam_self.detach().clone() for name, b in self.blocks.items()}

    def records(self) -> dict[str, Record]:
        """The feedback records of the last grad-enabled forward, by node; ``record.received`` is what
        the last backward delivered (arrays neuron-major ``[N, B, q]``)."""
        return {name: b.record for name, b in self.blocks.items() if b.record is not None}

    def paths(self) -> dict[str, str]:
        """The path each node ran in the last grad-enabled forward: ``plain``, ``child`` or ``general``."""
        return {name: b.mode for name, b in self.blocks.items()}

    def __repr__(self) -> str:
        n_model = sum(p.numel() for p in self.model_parameters())
        n_gen = sum(p.numel() for p in self.generator_parameters())
        return (f"CompiledGraph({self.graph.name!r}, blocks={len(self.blocks)}, sources={len(self.sources)}, "
                f"params={n_model}, generator_params={n_gen}, grouping={self.grouping!r}, "
                f"synthetic={self.synthetic})")


def lambda_state(state: Mapping[str, object]) -> dict[str, torch.Tensor]:
    """The λ entries of a compiled graph's ``state_dict`` (e.g. a checkpoint's ``model``): every node's
    in-edge weights and ``λ^self``, under the keys ``load_state_dict`` expects.

    >>> import sggraph
    >>> g = sggraph.Graph(); g.add_node("z", 2); g.add_node("y", 1, ["z"], fn="linear")
    >>> sorted(lambda_state(sggraph.compile(g).state_dict()))
    ['blocks.y.lam', 'blocks.y.lam_self']
    """
    return {k: v for k, v in state.items() if isinstance(k, str) and k.endswith((".lam", ".lam_self"))
            and isinstance(v, torch.Tensor)}


def compile(graph: Graph | Cell, functions: Mapping[str, nn.Module] | None = None,
            generators: Mapping[str, nn.Module] | None = None, *, grouping: str = "edge",
            generator_init: str = "zero") -> CompiledGraph | CompiledCell:
    """Compile a layered ``graph`` into a :class:`CompiledGraph`, or a recurrent :class:`~sggraph.Cell` into a
    :class:`~sggraph.engine.recurrent.CompiledCell` (both ``nn.Module``).

    Parameters
    ----------
    graph : Graph or Cell
        Linted first; errors name the node.
    functions : mapping, optional
        ``name -> nn.Module``. A node's module takes ``z [B, Σ parent dims]`` (parents
        concatenated in declared order) and returns ``[B, dim]``; an array's module
        takes ``u [N, B, F·q_parent]`` (and the residual ``[N, B, q]``) and returns
        ``(h [N, B, q], aux)``. Overrides ``fn:``; arrays default to the slot neuron.
    generators : mapping, optional
        ``name -> nn.Module`` called as ``generator(z)``, or ``generator(z, aux)`` when its
        ``forward`` takes two positional arguments; defaults: linear for
        nodes, slot-gated linear for arrays (initialised per ``generator_init``).
    grouping : {'edge', 'parent', 'child'}
        How λ is tied (see :data:`GROUPINGS`).
    generator_init : {'zero', 'normal'}
        Init of the default generators: ``zero``, or weights and biases ``N(0, 1/in_dim)``
        (the authors' MNIST-bandit generators). Graphs only; a cell's generators start at zero.

    Returns
    -------
    CompiledGraph
        (or a :class:`~sggraph.engine.recurrent.CompiledCell` when ``graph`` is a recurrent
        :class:`~sggraph.core.unroll.Cell`).

    Examples
    --------
    >>> import torch, sggraph
    >>> g = sggraph.Graph(); g.add_node("z", 2); g.add_node("y", 1, ["z"])
    >>> sggraph.compile(g)
    Traceback (most recent call last):
    ...
    sggraph.exceptions.CompileError: node 'y': no function for this node. Fix: add `fn: linear|tanh|identity|dot` in the YAML, or pass compile(graph, functions={'y': module}).
    """
    if isinstance(graph, Cell):
        if generator_init != "zero":
            raise CompileError(f"generator_init='{generator_init}' is not available for a recurrent cell",
                               fix="pass generators={name: module} to initialise a cell's generators")
        return compile_cell(graph, functions, generators, grouping=grouping)  # type: ignore[return-value]
    try:
        return CompiledGraph(graph, functions, generators, grouping, generator_init)
    except (RuntimeError, MemoryError) as exc:
        if not isinstance(exc, MemoryError) and "alloc" not in str(exc).lower():
            raise
        raise _out_of_memory(graph) from None


def _out_of_memory(graph: Graph) -> CompileError:
    """The error for a graph whose parameters do not fit in memory, naming its largest node."""
    sizes = {}
    for name, node in graph.nodes.items():
        in_dim = sum(graph.nodes[p].dim if p in graph.nodes else 1 for p in node.parents)
        sizes[name] = in_dim * node.dim
    for name, arr in graph.arrays.items():
        sizes[name] = arr.count * arr.dim * (arr.fan_in or 1) * arr.slots
    largest = max(sizes, key=sizes.__getitem__)
    file, line = graph.where(largest)
    return CompileError(f"not enough memory for the parameters of graph '{graph.name}' (its largest node needs "
                        f"about {sizes[largest]:,} weights)", node=largest, file=file, line=line,
                        fix="lower the dims and counts of the largest nodes and arrays")
