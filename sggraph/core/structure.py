"""The derived structure of a :class:`~sggraph.Graph`: its expanded DAG, node order and layers.

Built once per graph state by :func:`derive_structure` (which raises :class:`~sggraph.GraphError`
on a cycle, a layer violation or misplaced feedback), typed and immutable: the networkx graph is
frozen and the mappings are read-only. Mutating the graph drops it; the next pass rebuilds it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Protocol

import attrs
import networkx as nx
import numpy as np

from .nodes import neuron_name


class GraphLike(Protocol):
    """What the derivation reads of a :class:`~sggraph.Graph` (which imports this module: typed by
    this protocol, not by the class, so that no import runs back up)."""

    nodes: Mapping[str, Any]
    arrays: Mapping[str, Any]
    feedback_kinds: Mapping[str, Any]

    def array_table(self, name: str) -> np.ndarray: ...

    def declared_layer(self, v: str) -> int | None: ...

    def feedback(self, name: str) -> str: ...

    def error(self, message: str, node: str, fix: str, at: str | None = None) -> Exception: ...

__all__ = ["Structure", "derive_structure"]


@attrs.frozen(eq=False)
class Structure:
    """The expanded graph (arrays as neurons ``name[i]``), frozen.

    Attributes
    ----------
    nx : networkx.DiGraph
        Frozen; node attributes ``dim``, ``layer``, ``stochastic``, ``array``, ``index``,
        ``parents``, ``feedback``.
    position : mapping
        Node → its position in declaration order.
    layer_of : mapping
        Node → its layer.
    layers : tuple of tuples
        Node names per layer, layer 0 first.
    """

    nx: nx.DiGraph
    position: Mapping[str, int]
    layer_of: Mapping[str, int]
    layers: tuple[tuple[str, ...], ...]


def _expanded(g: GraphLike, tables: Mapping[str, np.ndarray]) -> nx.DiGraph:
    d = nx.DiGraph()
    for n in g.nodes.values():
        d.add_node(n.name, dim=n.dim, stochastic=n.stochastic, array=None, index=None, parents=n.parents)
    for a in g.arrays.values():
        for i in range(a.count):
            d.add_node(neuron_name(a.name, i), dim=a.dim, stochastic=a.stochastic, array=a.name, index=i,
                       parents=())
    for a in g.arrays.values():
        if a.parent is None:
            continue
        if a.parent not in g.arrays:
            continue  # reported by lint
        table = tables[a.name]
        for i in range(a.count):
            ps = [neuron_name(a.parent, int(j)) for j in table[i]]
            if a.residual:
                r = neuron_name(a.parent, i)
                if r not in ps:
                    ps.append(r)
            d.nodes[neuron_name(a.name, i)]["parents"] = tuple(ps)
    for n in g.nodes.values():
        if any(p in g.arrays for p in n.parents):
            expanded: list[str] = []
            for p in n.parents:
                if p in g.arrays:
                    expanded.extend(neuron_name(p, i) for i in range(g.arrays[p].count))
                else:
                    expanded.append(p)
            d.nodes[n.name]["parents"] = tuple(expanded)
    for v, data in d.nodes(data=True):
        for p in data["parents"]:
            if p in d:
                d.add_edge(p, v)
    return d


def derive_structure(g: GraphLike) -> Structure:
    """The structure of ``g`` (declarations already checked); raises :class:`~sggraph.GraphError`
    on a cycle, parents in different layers, feedback on a non-terminal, or a gap in the layers."""
    tables = {name: g.array_table(name) for name, a in g.arrays.items() if a.parent in g.arrays}
    d = _expanded(g, tables)
    if not nx.is_directed_acyclic_graph(d):
        cycle = nx.find_cycle(d)
        path = " -> ".join([u for u, _ in cycle] + [cycle[0][0]])
        node = cycle[0][1]
        raise g.error(f"the graph has a cycle: {path}", node,
                          "remove one of these parent links; recurrent cells are declared as a cell graph "
                          "and unrolled with sggraph.unroll")
    order = list(d.nodes)
    position = {v: i for i, v in enumerate(order)}
    layer_of: dict[str, int] = {}
    for v in nx.topological_sort(d):
        ps = d.nodes[v]["parents"]
        if not ps:
            declared = g.declared_layer(v)
            layer_of[v] = 0 if declared is None else declared
            continue
        player = {p: layer_of[p] for p in ps}
        lo, hi = min(player.values()), max(player.values())
        if lo != hi:
            a = min(player, key=player.__getitem__)
            b = max(player, key=player.__getitem__)
            raise g.error(
                f"parents in different layers: '{a}' is in layer {lo} and '{b}' in layer {hi}", v,
                f"every parent of a node in layer l must be in layer l-1; insert identity relay nodes "
                f"between '{a}' and '{v}' (Graph.insert_relays() does it), or give the source a `layer`")
        layer_of[v] = hi + 1
    for name in g.feedback_kinds:
        members = [name] if name in g.nodes else [neuron_name(name, i) for i in range(g.arrays[name].count)]
        for m in members:
            if d.out_degree(m) > 0:
                raise g.error(f"feedback declared on a non-terminal node (it has child "
                                  f"'{next(iter(d.successors(m)))}')", name,
                                  "declare feedback only for terminal nodes (nodes without children)",
                                  at=f"feedback:{name}")
            if d.in_degree(m) == 0:
                raise g.error("feedback declared on a source node", name,
                                  "declare feedback only for terminal nodes (non-source nodes without children)",
                                  at=f"feedback:{name}")
    for v in d:
        d.nodes[v]["layer"] = layer_of[v]
        d.nodes[v]["feedback"] = g.feedback(v) if d.out_degree(v) == 0 and d.in_degree(v) > 0 else None
    n_layers = max(layer_of.values()) + 1
    layers: list[list[str]] = [[] for _ in range(n_layers)]
    for v in order:
        layers[layer_of[v]].append(v)
    for i, layer in enumerate(layers):
        if not layer:  # only a source's declared layer can leave a gap: name the first one above it
            above = next(v for later in layers[i + 1:] for v in later).split("[", 1)[0]
            raise g.error(f"layer {i} is empty (source '{above}' is declared in layer "
                              f"{g.declared_layer(above)})", above,
                              f"declare sources in consecutive layers: give '{above}' a layer <= {i}")
    nx.freeze(d)
    return Structure(nx=d, position=MappingProxyType(position), layer_of=MappingProxyType(layer_of),
                     layers=tuple(tuple(layer) for layer in layers))
