"""What to draw: :func:`draw` lays out a graph, compiled graph, cell or compiled cell as items and
edges (layers, arrays, condition marks, highlights, λ, propagation)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import graphviz

from ..core.analysis import check_conditions, extended_ancestors, siblings
from ..core.graph import Graph, neuron_name
from ..core.unroll import Cell, StateArray
from ..core.unroll import unroll as unroll_cell
from ..exceptions import ConfigError, GraphError
from .edges import Override, aggregate_edges, drawn_edge, lambda_source
from .emit import emit
from .folded import draw_folded_cell
from .sources import (
    CellLambdas,
    CellMagnitudes,
    Lambdas,
    NetLambdas,
    NetMagnitudes,
)
from .style import (
    HIGHLIGHT_ORDER,
    UNROLLED,
    Group,
    Item,
    shorten,
    split_name,
)

__all__ = ["UNROLLED_NEURONS", "Override", "draw", "draw_folded_cell", "draw_graph", "graph_aliases", "highlight", "mark_conditions", "unrolled_aliases"]


# ----------------------------------------------------------------------- draw
#: The widest state an unrolled cell's drawing shows neuron by neuron by default; a wider one is one box per step
#: (``expand_arrays=N`` draws its first N neurons per step).
UNROLLED_NEURONS = 6


def draw(graph_or_net: Any, *, node: str | None = None, expand_arrays: int | None = None,
         unroll: int | None = None, lambdas: Mapping[tuple[str, str], float] | None = None,
         propagation: bool = False) -> graphviz.Digraph:
    """Draw a graph, a compiled graph or a recurrent cell as a :class:`graphviz.Digraph`.

    Parameters
    ----------
    graph_or_net : Graph, CompiledGraph, Cell or CompiledCell
        A compiled graph is drawn with its graph and coloured by its λ; a cell is drawn
        folded (inputs, pre nodes, the state as one box with a self-loop, post nodes)
        unless ``unroll`` is given.
    node : str, optional
        Highlight this node (neurons: ``name[i]``; unrolled cells: ``x@t``, ``h@t:i``), its
        siblings (eq. 11) and its sibling-extended ancestors (Definition 4) in the colours
        of :data:`HIGHLIGHT_COLORS`. Array boxes take the colour of the most specific set
        they meet and say in their label how many neurons of each set they hold.
    expand_arrays : int, optional
        Draw the first ``N`` neurons of every array individually, with their parent edges,
        plus a ``… (k more)`` placeholder for the rest (the highlighted ``node`` is always
        drawn). ``None`` or 0: one box per array. For an unrolled cell ``N`` draws the first ``N``
        state neurons per step and 0 one box per step (``None``: every neuron of a state of at most
        :data:`UNROLLED_NEURONS` neurons, else one box per step).
    unroll : int, optional
        Cells only: draw ``unroll(cell, T)``, the layered DAG of ``T`` steps.
    lambdas : mapping, optional
        ``{(parent, child): λ}`` to colour the edges of a graph or cell by (keys may also be
        two array names, or for cells the folded names ``('h', 'h')``); it overrides the
        compiled graph's own λ where given. Edges without a value are drawn uncoloured.
    propagation : bool
        Draw the last backward of a compiled graph or cell: edge width ∝ mean ``|g̃|`` the
        child received (normalised to the largest edge), colour by the synthetic share
        ``1 − λ``; nodes that received no feedback are dashed.

    Returns
    -------
    graphviz.Digraph
        Render it with :func:`render` (or graphviz's own methods).

    Raises
    ------
    ConfigError
        An unknown object, a bad ``expand_arrays``/``unroll``, ``propagation`` without a
        compiled graph after a backward.
    GraphError
        ``node`` names no node of the graph.
    LambdaError
        ``lambdas`` holds a value outside ``[0, 1]`` or names an edge the graph lacks.

    Examples
    --------
    >>> import torch, sggraph
    >>> from sggraph.draw import lambda_color
    >>> g = sggraph.Graph("tiny")
    >>> g.add_node("z", 3); g.add_node("h", 4, ["z"], fn="tanh"); g.add_node("y", 1, ["h"], fn="linear")
    >>> net = sggraph.compile(g, grouping="child"); net.set_lambda(0.25, node="y")
    >>> [line.split(" [")[0].strip() for line in draw(net).source.splitlines() if " -> " in line
    ...  and "__legend__" not in line]
    ['z -> h', 'h -> y']
    >>> lambda_color(0.25) in draw(net).source
    True
    >>> net({"z": torch.randn(4, 3)})["y"].sum().backward()
    >>> "penwidth" in draw(net, propagation=True).source
    True

    A recurrent cell, folded and unrolled:

    >>> cell = sggraph.Cell("rnn"); cell.add_input("obs", 3)
    >>> cell.set_state("h", count=4, dim=2, fan_in=2, input="obs", input_neurons=2)
    >>> cell.add_node("act", 2, ["h"], fn="linear")
    >>> "t−1 → t, fan_in 2" in draw(cell).source, '"h@3:0"' in draw(cell, unroll=3).source
    (True, True)
    """
    net = cnet = None
    cell: Cell | None = None
    graph: Graph | None = None
    from ..engine import CompiledNet  # the torch layer, only when drawing a compiled net

    obj = graph_or_net
    if isinstance(obj, CompiledNet) and isinstance(getattr(obj, "cell", None), Cell):
        cnet, cell = obj, obj.cell  # type: ignore[attr-defined]
    elif isinstance(obj, CompiledNet) and isinstance(getattr(obj, "graph", None), Graph):
        net, graph = obj, obj.graph  # type: ignore[attr-defined]
    elif isinstance(obj, Graph):
        graph = obj
    elif isinstance(obj, Cell):
        cell = obj
    else:
        raise ConfigError(f"cannot draw an object of type {type(obj).__name__}",
                          fix="pass a sggraph.Graph, a CompiledGraph, a Cell or a CompiledCell")
    if expand_arrays is not None and (isinstance(expand_arrays, bool) or not isinstance(expand_arrays, int)
                                      or expand_arrays < 0):
        raise ConfigError(f"expand_arrays must be a non-negative integer, got {expand_arrays!r}",
                          fix="pass expand_arrays=N to draw the first N neurons of every array, or None")
    if unroll is not None:
        if isinstance(unroll, bool) or not isinstance(unroll, int) or unroll < 1:
            raise ConfigError(f"unroll must be a positive number of steps, got {unroll!r}",
                              fix="pass unroll=T with T >= 1")
        if cell is None:
            raise ConfigError("unroll applies to recurrent cells, and this is a layered graph",
                              fix="drop unroll; pass a sggraph.Cell to draw(cell, unroll=T)")
    if propagation:
        if net is None and cnet is None:
            raise ConfigError("propagation=True needs a compiled graph (it draws the feedback of the last backward)",
                              fix="compile the graph, run a forward and loss.backward(), "
                                  "then draw(net, propagation=True)")
        mags: Any = NetMagnitudes(net) if net is not None else CellMagnitudes(cnet)
        if not mags.any():
            raise ConfigError("no node has received feedback yet", fix="run a forward and loss.backward() on the "
                              "compiled graph before draw(..., propagation=True)")
    else:
        mags = None
    if cell is not None and unroll is None:
        if node is not None:
            raise ConfigError("node= needs the layered DAG; a folded cell has no sibling sets",
                              fix="draw(cell, unroll=T, node='h@2:0') highlights a node of the unrolled cell")
        if expand_arrays is not None:
            raise ConfigError("expand_arrays applies to arrays and unrolled cells",
                              fix="pass unroll=T as well to draw the state's neurons step by step")
        return draw_folded_cell(cell, cnet, lambdas, mags)
    if cell is not None:
        assert unroll is not None
        graph = unroll_cell(cell, unroll)
        if expand_arrays is None:  # every neuron of a wide state at every step is a tangle, not a picture
            expand_arrays = None if cell.state is None or cell.state.count <= UNROLLED_NEURONS else 0
        return draw_graph(graph, node=node, expand=expand_arrays, lambdas=lambdas, mags=mags,
                           provider=CellLambdas(cnet, unroll) if cnet is not None else None, cell=cell)
    assert graph is not None
    return draw_graph(graph, node=node, expand=expand_arrays, lambdas=lambdas, mags=mags,
                       provider=NetLambdas(net) if net is not None else None, cell=None)


def graph_aliases(name: str) -> list[str]:
    base, idx = split_name(name)
    return [name, base] if idx is not None else [name]


def unrolled_aliases(state: str) -> Callable[[str], list[str]]:
    def aliases(name: str) -> list[str]:
        m = UNROLLED.match(name)
        if m is None:
            return [name]
        if m["base"] == state and m["i"] is not None:
            return [name, f"{state}@{m['t']}", f"{state}[{m['i']}]", state]
        return [name, m["base"]]

    return aliases


def draw_graph(g: Graph, *, node: str | None, expand: int | None, lambdas: Mapping | None, mags: Any,
               provider: Lambdas | None, cell: Cell | None) -> graphviz.Digraph:
    """Draw a layered graph, or the unrolled graph of ``cell``: items (nodes, neurons, boxes and
    placeholders) in layer order and the graph's edges aggregated onto them.

    Parameters
    ----------
    g : Graph
        The graph to draw (for a cell: its unrolled graph).
    node : str, optional
        The node to highlight with its siblings and sibling-extended ancestors.
    expand : int, optional
        As ``expand_arrays`` of :func:`draw`.
    lambdas : mapping, optional
        Explicit ``{(parent, child): λ}``, over ``provider``'s.
    mags : NetMagnitudes, CellMagnitudes or None
        The last backward's feedback sizes (``propagation=True``).
    provider : Lambdas, optional
        The compiled graph's λ.
    cell : Cell, optional
        The cell ``g`` unrolls (its state's steps are the boxes).
    """
    order = [v for layer in g.layers for v in layer]
    if cell is None:
        boxes, aliases = _array_boxes(g, expand), graph_aliases
    else:
        st = cell.state
        assert st is not None
        boxes, aliases = _step_boxes(st, order, expand), unrolled_aliases(st.name)
    focus_sets = _focus_sets(g, node, order)
    item_of = _item_namer(boxes, node, unrolled=cell is not None)
    items = _items(g, order, boxes, item_of, focus_sets, node, mags)
    agg = aggregate_edges(g, order, item_of)
    lam_src = lambda_source(g.nx.edges, lambdas, aliases, provider)
    kinds = {it.id: it.kind for it in items}
    edges = [drawn_edge(ti, hi, pairs, kinds, boxes, lam_src, mags) for (ti, hi), pairs in agg.items()]
    title = g.name
    if provider is not None and isinstance(provider, NetLambdas):
        title += " (λ of the compiled graph)"
    return emit(g.name, title, items, edges, lambdas=lam_src is not None, propagation=mags is not None,
                highlight=node)


@dataclass
class _Boxes:
    """The boxes a drawing may fold neurons into (arrays, or the steps of an unrolled state).

    Attributes
    ----------
    groups : dict
        Box name → :class:`Group`.
    group_of : dict
        Neuron → (its box, its index in the box).
    declared : dict
        (parent box, child box) → the label the graph declares for their edge.
    """

    groups: dict[str, Group] = field(default_factory=dict)
    group_of: dict[str, tuple[str, int]] = field(default_factory=dict)
    declared: dict[tuple[str, str], str] = field(default_factory=dict)

    def add(self, group: Group) -> None:
        """Add a box and index its members."""
        self.groups[group.name] = group
        for i, m in enumerate(group.members):
            self.group_of[m] = (group.name, i)


def _array_boxes(g: Graph, expand: int | None) -> _Boxes:
    """One box per array (its first ``expand`` neurons drawn individually), labelled by its wiring."""
    boxes = _Boxes()
    for a in g.arrays.values():
        if a.parent is None:
            details = ["input array", f"count {a.count} × dim {a.dim}"]
        else:
            fan = f"fan_in {a.fan_in or 0}" + (" + residual" if a.residual else "")
            details = [f"count {a.count} × dim {a.dim}", fan, f"slots {a.slots}"]
            boxes.declared[(a.parent, a.name)] = fan
        members = [neuron_name(a.name, i) for i in range(a.count)]
        boxes.add(Group(a.name, a.count, members, a.name, details, expand if expand else None))
    return boxes


def _step_boxes(st: StateArray, order: list[str], expand: int | None) -> _Boxes:
    """One box per step of the unrolled state ``st`` (none when ``expand`` is None: every neuron is drawn)."""
    boxes = _Boxes()
    if expand is None:
        return boxes
    n_states = sum(1 for v in order if v.startswith(f"{st.name}@") and v.endswith(":0"))  # steps 0 … T
    for t in range(n_states):
        name = f"{st.name}@{t}"
        details = [f"count {st.count} × dim {st.dim}"]
        if t == 0:
            details.append("initial state (zeros)")
        else:
            details.append(f"fan_in {st.fan_in} from {st.name}@{t - 1}")
            boxes.declared[(f"{st.name}@{t - 1}", name)] = f"t−1 → t, fan_in {st.fan_in}"
            if st.input is not None:
                boxes.declared[(f"{st.input}@{t}", name)] = f"→ first {st.input_neurons} neurons"
        members = [f"{name}:{i}" for i in range(st.count)]
        boxes.add(Group(name, st.count, members, name, details, expand or None))
    return boxes


def _focus_sets(g: Graph, node: str | None, order: list[str]) -> dict[str, str]:
    """The highlight set of every node ``node`` touches: ``node``, its siblings (eq. 11) and its
    sibling-extended ancestors (Definition 4); empty without a ``node``.

    Raises
    ------
    GraphError
        ``node`` is not a node of ``g`` (an array's name suggests one of its neurons).
    """
    focus_sets: dict[str, str] = {}
    if node is None:
        return focus_sets
    if node not in g.nx:
        hint = ""
        if node in g.arrays:
            hint = f"'{node}' is an array: name one neuron, e.g. {neuron_name(node, 0)}; "
        raise GraphError(f"no node named '{node}' to highlight", node=node,
                         fix=hint + f"use one of {', '.join(order[:8])}{', …' if len(order) > 8 else ''}")
    for v in extended_ancestors(g, node):
        focus_sets[v] = "ancestors"
    for v in siblings(g, node):
        focus_sets[v] = "siblings"
    focus_sets[node] = "node"
    return focus_sets


def _item_namer(boxes: _Boxes, node: str | None, *, unrolled: bool) -> Callable[[str], str]:
    """The drawn item of a node: itself, its box, or its box's placeholder for the neurons not drawn
    (the highlighted ``node`` is always drawn)."""

    def item_of(v: str) -> str:
        grp = boxes.group_of.get(v)
        if grp is None:
            return v
        gname, idx = grp
        show = boxes.groups[gname].show
        if show is None:
            return gname
        if idx < show or v == node:
            return v
        return f"{gname}:…" if unrolled else f"{gname}[…]"

    return item_of


def _items(g: Graph, order: list[str], boxes: _Boxes, item_of: Callable[[str], str],
           focus_sets: Mapping[str, str], node: str | None, mags: Any) -> list[Item]:
    """The drawn items in layer order, with their condition marks, highlights and (``mags``) dashes
    for those that received no feedback."""
    report = check_conditions(g)
    a1, a2, a3 = set(report.a1), set(report.a2), set(report.a3)
    terminals = set(g.terminals)
    members_of: dict[str, list[str]] = {}
    for v in order:
        members_of.setdefault(item_of(v), []).append(v)
    items: list[Item] = []
    for iid, members in members_of.items():
        it = _item(g, iid, members, boxes, terminals)
        mark_conditions(it, members, g, a1, a2, a3)
        if focus_sets:
            highlight(it, members, focus_sets, node)
        if mags is not None and it.role != "source" and all(mags.of(v) is None for v in members):
            it.dashed = True
        items.append(it)
    return items


def _role(g: Graph, v: str, terminals: set[str]) -> str:
    """``source`` (no parents), ``terminal`` or ``hidden``."""
    if g.nx.in_degree(v) == 0:
        return "source"
    return "terminal" if v in terminals else "hidden"


def _item(g: Graph, iid: str, members: list[str], boxes: _Boxes, terminals: set[str]) -> Item:
    """The item ``iid`` drawing ``members``: a box, a node (or neuron) or a placeholder."""
    d = g.nx
    first = members[0]
    layer = g.layer_of(first)
    roles = {_role(g, v, terminals) for v in members}
    r = roles.pop() if len(roles) == 1 else "hidden"
    if iid in boxes.groups:
        grp = boxes.groups[iid]
        it = Item(iid, layer, "group", r, grp.title, list(grp.details))
        it.tooltip = f"{iid}: {grp.count} neurons; " + "; ".join(grp.details)
    elif iid in d:
        dim = d.nodes[iid]["dim"]
        fn = g.nodes[iid].fn if iid in g.nodes else None
        it = Item(iid, layer, "node", r, iid, [f"dim {dim}" + (f" · {fn}" if fn else "")])
        it.tooltip = f"{iid}: {r}, dim {dim}, layer {layer}"
    else:
        gname = boxes.group_of[first][0]
        it = Item(iid, layer, "more", r, f"… ({len(members)} more)", [f"of {gname}"])
        it.tooltip = f"{len(members)} more neurons of {gname} not drawn: {shorten(members)}"
    return it


def mark_conditions(it: Item, members: list[str], g: Graph, a1: set, a2: set, a3: set) -> None:
    many = len(members) > 1 or it.kind != "node"
    for key, witnesses, text in (("A1", a1, None), ("A2", a2, "stochastic (A.2)"), ("A3", a3, "sparse (A.3)")):
        hit = [v for v in members if v in witnesses]
        if not hit:
            continue
        if key == "A1":
            kinds = sorted({g.feedback(v) for v in hit})
            text = f"feedback: {'/'.join(kinds)} (A.1)"
        assert text is not None
        if many and len(hit) < len(members):
            text += f": {len(hit)}/{len(members)}"
        it.marks[key] = text


def highlight(it: Item, members: list[str], focus_sets: Mapping[str, str], node: str | None) -> None:
    counts = {k: 0 for k in HIGHLIGHT_ORDER}
    for v in members:
        k = focus_sets.get(v)
        if k is not None:
            counts[k] += 1
    present = [k for k in HIGHLIGHT_ORDER if counts[k]]
    if not present:
        return
    it.highlight = present[0]
    if it.kind != "node":
        parts = []
        if counts["node"]:
            parts.append(f"holds {node}")
        if counts["siblings"]:
            parts.append(f"{counts['siblings']} siblings")
        if counts["ancestors"]:
            parts.append(f"{counts['ancestors']} ext. ancestors")
        it.highlight_note = "; ".join(parts)
