"""``sggraph.trace``: an unmodified ``nn.Module`` as a layered graph and a compiled net that runs it.

The steps: read the module with ``torch.fx`` (:mod:`~sggraph.tracing.fx_reader`), cut it into
nodes (:mod:`~sggraph.tracing.partition`), declare the :class:`~sggraph.Graph` (sources = the
forward's tensor arguments, nodes = the pieces, DNI cuts ``cut:u`` after the listed nodes, identity
relays ``u@k`` so that every parent sits one layer up), and compile it with the pieces as node
functions and generators built for the traced shapes.

Layers and relays
-----------------
A skip connection (``x → block → out`` and ``x → out``) breaks the paper's layer rule. Each such
parent is bridged by a chain of identity relays (:meth:`Graph.insert_relays`): ``fc1 → fc1@1 → fc2``.
Relays are exact (the identity, forward and backward at λ = 1); λ on the module's skip edge
``(fc1, fc2)`` is λ on the relay edge ``(fc1@1, fc2)`` — :class:`~sggraph.tracing.net.TracedNet`
translates the name — so ``fc1`` receives ``λ J_fc1ᵀ g̃_fc2 + (1 − λ) J_fc1ᵀ ĥ_fc2`` along it,
as eq. 5 says of that edge; the relays' own in-edges keep λ = 1 unless set. A source read by one
layer only sits in the layer below it (no relays).

DNI cuts
--------
``cuts=["fc1"]`` inserts an identity node ``cut:fc1`` between ``fc1`` and all its consumers, with
λ = 0 on the edge ``fc1 → cut:fc1``. By eq. 5 ``fc1`` then receives ``ĥ_cut(h_fc1)`` (the cut is the
identity, so its Jacobian is 1 and its generator reads exactly ``fc1``'s output), and the cut's
generator regresses onto the feedback the cut received — the true gradient arriving at ``h_fc1``
from below: Jaderberg et al.'s decoupled neural interface, with ``context`` their cDNI.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn
from torch.fx.immutable_collections import immutable_dict, immutable_list
from torch.utils import _pytree as pytree

from ..core.graph import Graph
from ..engine import compile as compile_graph
from ..engine import lambda_state
from ..exceptions import CompileError
from .fx_reader import read_module
from .generators import ContextSlot, build_generator
from .net import TracedNet
from .node_functions import NodeFunction, SharedViews, piece_module
from .partition import Partition, example_dtype, node_name, partition

__all__ = ["CUT_PREFIX", "trace"]

#: Cut nodes are named ``cut:<node>``.
CUT_PREFIX = "cut:"


def _plain(structure: object) -> object:
    """fx's immutable containers of the returned structure as plain lists and dicts."""
    if isinstance(structure, immutable_list):
        return [_plain(x) for x in structure]
    if isinstance(structure, immutable_dict):
        return {k: _plain(v) for k, v in structure.items()}
    if isinstance(structure, tuple):
        return type(structure)(*(_plain(x) for x in structure)) if hasattr(structure, "_fields") else \
            tuple(_plain(x) for x in structure)
    if isinstance(structure, list):
        return [_plain(x) for x in structure]
    if isinstance(structure, dict):
        return {k: _plain(v) for k, v in structure.items()}
    return structure


def _outputs(parts: Partition, redirect: Mapping[str, str]) -> tuple:
    """The returned structure as leaves ``(kind, ref)`` and a pytree spec."""
    import torch.fx as fx

    leaves, spec = pytree.tree_flatten(_plain(parts.output.args[0]))
    described = []
    for leaf in leaves:
        if isinstance(leaf, fx.Node):
            if leaf.op == "placeholder":
                described.append(("source", str(leaf.target)))
            elif leaf in parts.name_of:
                name = parts.name_of[leaf]
                described.append(("node", redirect.get(name, name)))
            else:
                raise CompileError(f"the module returns '{leaf.name}' ({leaf.op}), which is not a node's output",
                                   node=leaf.name, fix="return tensors computed from the inputs")
        else:
            described.append(("const", leaf))
    return described, spec


def _source_layers(g: Graph, sources: Sequence[str]) -> dict[str, int]:
    """Each source one layer below its shallowest consumer (sources at 0 first)."""
    depth: dict[str, int] = {s: 0 for s in sources}
    nodes = g.nodes
    pending = [n for n in nodes if n not in depth]
    while pending:
        rest = []
        for n in pending:
            ps = nodes[n].parents
            if all(p in depth for p in ps):
                depth[n] = 1 + max(depth[p] for p in ps)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise CompileError("the traced graph has a cycle", node=rest[0], fix="report this model")
        pending = rest
    layers = {}
    for s in sources:
        consumers = [depth[n] for n in nodes if s in nodes[n].parents]
        layers[s] = max(min(consumers) - 1, 0) if consumers else 0
    return layers


def _declare(parts: Partition, cuts: Sequence[str], stochastic: Sequence[str],
             feedback: Mapping[str, str] | None, name: str) -> tuple[Graph, dict[str, str]]:
    """The traced graph before relays, and ``node -> cut node`` for the cut nodes."""
    names = [p.name for p in parts.pieces]
    for c in cuts:
        if c not in names:
            raise CompileError(f"cuts lists {c!r}, which is not a node of the traced graph", node=str(c),
                               fix=f"cut after one of the nodes: {', '.join(names[:12])}")
    cut_of = {c: f"{CUT_PREFIX}{c}" for c in cuts}
    known = set(names) | set(cut_of.values())
    for m in stochastic:
        if m not in known:
            raise CompileError(f"stochastic lists {m!r}, which is not a node of the traced graph", node=str(m),
                               fix=f"name nodes: {', '.join(sorted(known)[:12])}")
    dims = {s: math.prod(parts.sources[s]) for s in parts.used_sources}
    dims.update({p.name: math.prod(p.shape) for p in parts.pieces})

    def build(layers: Mapping[str, int]) -> Graph:
        g = Graph(name)
        for s in parts.used_sources:
            g.add_node(s, dims[s], layer=layers.get(s, 0))
        for p in parts.pieces:
            g.add_node(p.name, dims[p.name], [cut_of.get(q, q) for q in p.parents], stochastic=p.name in stochastic)
        for c, cut in cut_of.items():
            g.add_node(cut, dims[c], [c], fn="identity", stochastic=cut in stochastic)
        return g

    g = build(_source_layers(build({}), parts.used_sources))
    for node, kind in (feedback or {}).items():
        if node not in known:
            raise CompileError(f"feedback names {node!r}, which is not a node of the traced graph", node=str(node),
                               fix=f"name a terminal node: {', '.join(sorted(known)[:12])}")
        g.set_feedback(cut_of.get(node, node), kind)
    return g, cut_of


def _skips(before: Graph, after: Graph) -> dict[tuple[str, str], tuple[str, str]]:
    out = {}
    for name, node in before.nodes.items():
        for old, new in zip(node.parents, after.nodes[name].parents):
            if old != new:
                out[(old, name)] = (new, name)
    return out


def _place_lambdas(compiled: nn.Module, dtype: torch.dtype, device: torch.device) -> None:
    """λ tables in the module's dtype and on its device (the module's own parameters stay as they are)."""
    for key in lambda_state(compiled.state_dict(keep_vars=True)):
        buf = compiled.get_buffer(key)
        buf.data = buf.data.to(device=device, dtype=dtype)


def _generator_spec(generators: object, node: str) -> object:
    if isinstance(generators, Mapping):
        return generators.get(node, "none")
    return generators


def trace(module: nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor], *,
          nodes: Sequence[str] | None = None, leaves: Sequence[str] = (), cuts: Sequence[str] = (),
          generators: str | Callable | Mapping[str, object] = "linear", context: int | None = None,
          grouping: str = "edge", stochastic: Sequence[str] = (), feedback: Mapping[str, str] | None = None,
          name: str | None = None) -> TracedNet:
    """Trace ``module`` into a layered graph and compile it (eq. 5–6 on the module's own submodules).

    Parameters
    ----------
    module : nn.Module
        Unmodified; the net shares its parameter objects (its optimizer, ``state_dict``,
        ``train()``/``eval()`` keep working).
    example_inputs : Tensor or tuple of Tensor
        The forward's positional inputs, batch first (run once, without side effects, for the shapes).
    nodes : sequence of str, optional
        Qualified names of the submodules whose calls are nodes (``["conv1", "layer1.0", "fc"]``);
        default: the direct children, in call order. Operations between nodes belong to the node that
        consumes them (see :mod:`~sggraph.tracing.partition`).
    leaves : sequence of str
        Submodules not to trace into (their forward runs as is) that are not nodes.
    cuts : sequence of str
        Nodes followed by a DNI cut ``cut:<node>`` (λ = 0 on its in-edge; see the module docstring).
    generators : {'linear', 'mlp', 'none'}, callable, or mapping
        For every node (relays and cuts included): a kind, a callable ``(node_name, output_shape) ->
        nn.Module``, or a dict per node name (nodes it does not name get ``'none'``). See
        :mod:`~sggraph.tracing.generators`.
    context : int, optional
        Size ``k`` of a context ``[B, k]`` every generator also reads (cDNI; passed as
        ``net(x, context=c)``).
    grouping : {'edge', 'parent', 'child'}
        How λ is tied (:data:`sggraph.GROUPINGS`).
    stochastic : sequence of str
        Nodes whose computation is stochastic (A.2; e.g. dropout), for :func:`sggraph.check_conditions`.
    feedback : mapping, optional
        ``terminal node -> 'deterministic' | 'stochastic' | 'contextual'`` (A.1; a loss against a label is
        contextual).
    name : str, optional
        The graph's name (default: the module's class name).

    Returns
    -------
    TracedNet

    Examples
    --------
    >>> import torch, sggraph
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> net = sggraph.trace(model, torch.randn(16, 4))
    >>> [n for n in net.graph.nodes]
    ['input', '0', '1', '2']
    >>> torch.equal(net(torch.ones(3, 4)), model(torch.ones(3, 4)))
    True
    >>> net.set_lambda(0.5, ("0", "1")); net.get_lambda(("0", "1"))
    0.5
    """
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    example_inputs = tuple(example_inputs)
    cuts = [node_name(c) for c in ([cuts] if isinstance(cuts, str) else cuts)]
    stochastic = [node_name(s) for s in ([stochastic] if isinstance(stochastic, str) else stochastic)]
    if feedback is not None:
        feedback = {node_name(k): v for k, v in feedback.items()}
    if isinstance(generators, Mapping):
        generators = {node_name(k): v for k, v in generators.items()}
    if context is not None and (isinstance(context, bool) or not isinstance(context, int) or context < 1):
        raise CompileError(f"context must be the context's size per sample (a positive int), got {context!r}",
                           fix="pass context=k for a context tensor [B, k] (e.g. the number of classes)")
    reading = read_module(module, example_inputs, nodes, leaves)
    parts = partition(reading)
    graph_name = name or type(module).__name__
    before, cut_of = _declare(parts, cuts, stochastic, feedback, graph_name)
    g = before.insert_relays()
    if isinstance(generators, Mapping):
        unknown = [k for k in generators if k not in g.nodes]
        if unknown:
            raise CompileError(f"generators names {unknown[0]!r}, which is not a node of the traced graph",
                               node=str(unknown[0]), fix=f"name nodes: {', '.join(list(g.nodes)[:12])}")
    shapes: dict[str, tuple] = {s: parts.sources[s] for s in parts.used_sources}
    shapes.update({p.name: p.shape for p in parts.pieces})
    shapes.update({cut: shapes[c] for c, cut in cut_of.items()})
    for n in g.nodes:  # relays: the shape of the value they carry
        origin = n
        while origin not in shapes:
            origin = g.nodes[origin].parents[0]
        shapes[n] = shapes[origin]
    views = SharedViews()
    functions = {}
    for p in parts.pieces:
        in_shapes = [shapes[q] for q in p.parents]
        functions[p.name] = NodeFunction(p.name, piece_module(module, p), in_shapes, p.shape, views)
    for n, node in g.nodes.items():  # relays and cuts: the identity, reading the shared view
        if node.parents and n not in functions:
            functions[n] = NodeFunction(n, None, [shapes[n]], shapes[n], views)
    slot = ContextSlot(context)
    dtype = example_dtype(reading)
    gens = {}
    for n, node in g.nodes.items():
        if not node.parents:
            continue
        spec = _generator_spec(generators, n)
        gens[n] = build_generator(spec, n, [shapes[q] for q in node.parents], shapes[n], slot, dtype).to(
            example_inputs[0].device)
    compiled = compile_graph(g, functions=functions, generators=gens, grouping=grouping)
    _place_lambdas(compiled, dtype, example_inputs[0].device)
    compiled.integer_sources = frozenset(name for name, x in zip(parts.sources, example_inputs)
                                         if isinstance(x, torch.Tensor) and not x.is_floating_point())
    for c, cut in cut_of.items():
        compiled.set_lambda(0.0, (c, cut))
    outputs = _outputs(parts, cut_of)
    return TracedNet(compiled, module, parts.sources, parts.used_sources, outputs, shapes,
                     _skips(before, g), cuts, slot, views, functions)
