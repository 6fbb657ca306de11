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

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..core.graph import Graph
from ..core.unroll import Cell
from ..exceptions import CompileError, DimensionError
from .blocks import ArrayBlock, NodeBlock, SourceBlock, check_generators, check_inputs, first_parameter, split_ref
from .functions import make_function
from .generators import GENERATOR_INITS, LinearGenerator, SlotGenerator, generator_init_std
from .lam.table import GROUPINGS, LambdaTable
from .net import CompiledBase
from .neuron import SlotNeuronArray
from .recurrent import CompiledCell, compile_cell
from .trace import Trace

__all__ = ["GROUPINGS", "CompiledGraph", "compile", "lambda_state"]

class CompiledGraph(CompiledBase):
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
    lambdas : LambdaTable
        Every mixing weight (:mod:`sggraph.engine.lam.table`); ``set_lambda`` and friends call it.
    trace : Trace
        What the last grad-enabled forward left for the backward and the generator step
        (:mod:`sggraph.engine.trace`).
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
        #: Sources that may take integer tensors (token ids for an ``nn.Embedding``; ``sggraph.trace`` sets it).
        self.integer_sources: frozenset[str] = frozenset()
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
        self.lambdas = LambdaTable(self, sources=self.sources, what="graph")
        self.trace = Trace()

    def _has_children(self, name: str) -> bool:
        for other in self.blocks.values():
            if isinstance(other, NodeBlock) and any(split_ref(p)[0] == name for p in other.parents):
                return True
            if isinstance(other, ArrayBlock) and other.parent == name:
                return True
        return False

    # --------------------------------------------------------------- forward
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
        check_inputs(inputs, self.sources, f"graph '{self.graph.name}'", self.check_finite, first_parameter(self),
                     self.integer_sources)
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
        if torch.is_grad_enabled():  # a new step: this forward's trace replaces the last one
            self.trace = Trace()
        for name in self.order:
            if name in self.blocks:
                block = self.blocks[name]
                values[name] = block.run(values, self._node_entry(block))
        return values

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
            generators: Mapping[str, nn.Module] | None = None, *, grouping: str | None = None,
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
    grouping : {'edge', 'parent', 'child'}, optional
        How λ is tied (see :data:`GROUPINGS`). Default: ``edge`` for a graph, ``child`` for a
        recurrent cell (the grouping its ``adapt_lambda`` adapts; see :func:`compile_cell`).
    generator_init : {'zero', 'normal'}
        Init of the default generators: ``zero``, or weights and biases ``N(0, 1/in_dim)``
        (the authors' MNIST-bandit generators). Graphs only; a cell's generators start at zero.

    Returns
    -------
    CompiledGraph
        (or a :class:`~sggraph.engine.recurrent.CompiledCell` when ``graph`` is a recurrent
        :class:`~sggraph.core.unroll.Cell`).

    Notes
    -----
    Not ``torch.compile``: this builds the synthetic-gradient module from a graph. The result is an
    ordinary ``nn.Module``, which ``torch.compile`` may then compile like any other.

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
        return compile_cell(graph, functions, generators, grouping=grouping or "child")  # type: ignore[return-value]
    try:
        return CompiledGraph(graph, functions, generators, grouping or "edge", generator_init)
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
