"""Draw graphs, compiled graphs and recurrent cells with graphviz.

:func:`draw` turns a :class:`~sggraph.Graph`, a :class:`~sggraph.CompiledGraph`, a
recurrent :class:`~sggraph.Cell` (folded, or unrolled with ``unroll=T``) or a
:class:`~sggraph.CompiledCell` into a :class:`graphviz.Digraph`; :func:`render` writes it
as DOT, SVG, PNG or PDF with graphviz's ``dot``; :func:`add_parser` adds the
``sggraph draw`` command.

What a drawing shows
--------------------
* Layers are ranks from left to right (``rankdir=LR``, one ``rank=same`` subgraph
  ``layer_<l>`` per layer).
* Sources (``cds``, pale green), hidden nodes (``ellipse``, white) and terminals
  (``octagon``, pale blue). A node array is ONE ``box3d`` box labelled with its name,
  count, dim and fan-in; edges between array boxes carry the fan-in.
  ``expand_arrays=N`` draws the first ``N`` neurons of every array individually, plus a
  ``… (k more)`` placeholder standing for the others.
* Marks of the paper's conditions: terminals with stochastic or contextual feedback
  (A.1) get a thick purple outline, stochastic nodes (A.2) a double outline, sparse
  nodes (A.3 witnesses) cut corners (``diagonals``); each mark is also written in the
  label. A legend cluster explains every mark.
* ``node=NAME`` fills that node, its siblings (eq. 11) and its sibling-extended
  ancestors (Definition 4) in three colours (:data:`HIGHLIGHT_COLORS`).
* λ: every edge is coloured on the scale of :func:`lambda_color`, from backprop
  (λ = 1, blue) to synthetic (λ = 0, orange), with the value in its label and tooltip
  (edges between array boxes: the mean λ over the parent table).
* ``propagation=True`` (a compiled graph after a backward): edge width grows with the
  mean ``|g̃|`` the child received (relative to the largest edge), colour shows the
  synthetic share ``1 − λ`` of the mixing that produced the gradient along the edge
  (1 − λ of the edge; 0 where the child ran plain backprop); nodes that received no
  feedback are dashed.

Every DOT node of the drawing is named by the graph's own name for it (``h``, ``h[3]``,
``h@2:0``); array boxes by the array name, placeholders ``h[…]`` (an unrolled state's steps:
boxes ``h@2``, placeholders ``h@2:…``); legend nodes start
with ``__legend__``.

Examples
--------
>>> from sggraph import Graph
>>> g = Graph("tiny")
>>> g.add_node("z", 3); g.add_node("h", 4, ["z"], fn="tanh"); g.add_node("y", 1, ["h"], fn="linear")
>>> g.set_feedback("y", "stochastic")
>>> dg = draw(g, node="h")
>>> "rankdir=LR" in dg.source, "subgraph layer_2" in dg.source
(True, True)
>>> lambda_color(1.0), lambda_color(0.0)
('#2166ac', '#e66101')
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import graphviz
import numpy as np
from graphviz.quoting import attr_list, quote

from .analysis import check_conditions, extended_ancestors, siblings
from .atomic import atomic_path, write_atomic
from .exceptions import ConfigError, GraphError, LambdaError
from .graph import Graph, neuron_name
from .unroll import Cell
from .unroll import unroll as unroll_cell

__all__ = [
    "HIGHLIGHT_COLORS",
    "LAMBDA_COLORS",
    "RENDER_FORMATS",
    "add_parser",
    "draw",
    "lambda_color",
    "render",
    "run_draw",
]

#: Ends of the λ scale: ``(λ = 0 synthetic, λ = 1 backprop)``.
LAMBDA_COLORS = ("#e66101", "#2166ac")
#: Fill colours of ``draw(..., node=NAME)``: the node itself, its other siblings (eq. 11)
#: and the rest of its sibling-extended ancestors (Definition 4).
HIGHLIGHT_COLORS = {"node": "#e41a1c", "siblings": "#fdd835", "ancestors": "#80cbc4"}
#: Output suffixes :func:`render` understands and the ``dot -T`` format of each (None: DOT source).
RENDER_FORMATS = {".dot": None, ".svg": "svg", ".png": "png", ".pdf": "pdf"}

_ROLE_SHAPE = {"source": "cds", "hidden": "ellipse", "terminal": "octagon"}
_ROLE_FILL = {"source": "#e8f5e9", "hidden": "#ffffff", "terminal": "#e3f2fd"}
_A1_COLOR = "#6a1b9a"
_NO_LAMBDA_COLOR = "#424242"
_NO_FEEDBACK_COLOR = "#9e9e9e"
_HIGHLIGHT_ORDER = ("node", "siblings", "ancestors")
_LEGEND = "__legend__"
_UNROLLED = re.compile(r"^(?P<base>[^@]+)@(?P<t>\d+)(?::(?P<i>\d+))?$")


def lambda_color(lam: float | None) -> str:
    """The colour of mixing weight ``lam`` on the scale synthetic (0, orange) → backprop (1, blue).

    Linear in RGB between :data:`LAMBDA_COLORS`; values are clipped to ``[0, 1]``;
    None or NaN gives grey.

    Parameters
    ----------
    lam : float or None

    Returns
    -------
    str
        ``#rrggbb``.

    Examples
    --------
    >>> lambda_color(1.0), lambda_color(0.0), lambda_color(0.5)
    ('#2166ac', '#e66101', '#846456')
    >>> lambda_color(None)
    '#9e9e9e'
    """
    if lam is None or not np.isfinite(lam):
        return _NO_FEEDBACK_COLOR
    t = min(max(float(lam), 0.0), 1.0)
    lo, hi = (_rgb(c) for c in LAMBDA_COLORS)
    return "#" + "".join(f"{round(a + (b - a) * t):02x}" for a, b in zip(lo, hi))


def _rgb(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def _split(name: str) -> tuple[str, int | None]:
    base, _, rest = name.partition("[")
    return (base, int(rest[:-1])) if rest and rest[:-1].isdigit() else (name, None)


def _esc(text: str) -> str:
    """Text for a DOT label: backslashes doubled, newlines as DOT's ``\\n``."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _short(names: Sequence[str], k: int = 3) -> str:
    head = ", ".join(names[:k])
    return head + (f", … ({len(names)} in all)" if len(names) > k else "")


# --------------------------------------------------------------------------- model
@dataclass
class _Item:
    """One DOT node: a node, a neuron, an array box or a placeholder."""

    id: str
    layer: int
    kind: str  # node | group | more
    role: str  # source | hidden | terminal
    title: str
    details: list[str] = field(default_factory=list)
    marks: dict[str, str] = field(default_factory=dict)  # A1 / A2 / A3 -> label text
    highlight: str | None = None
    highlight_note: str | None = None
    dashed: bool = False
    tooltip: str = ""


@dataclass
class _Edge:
    tail: str
    head: str
    text: str = ""
    lam: float | None = None
    lam_mean: bool = False  # lam is a mean over several edges
    magnitude: float | None = None  # propagation: mean |g̃| the child received
    placeholder: bool = False
    count: int = 1


@dataclass
class _Group:
    """Neurons drawn as one box unless expanded: an array, or one step of an unrolled state."""

    name: str
    count: int
    members: list[str]
    title: str
    details: list[str]
    show: int | None = None  # None: one box; N: the first N neurons and a placeholder


# ------------------------------------------------------------------ λ providers
class _Lambdas:
    """λ of an edge between two drawn names (expanded names); None where unknown."""

    def edge(self, parent: str, child: str) -> float | None:
        return None

    def table_mean(self, parent_group: str, child_group: str) -> float | None:
        return None

    def effective(self, parent: str, child: str) -> float | None:
        """λ that actually mixed the last backward (1 where the child ran plain backprop)."""
        return self.edge(parent, child)



class _MappingLambdas(_Lambdas):
    """An explicit ``{(parent, child): λ}`` mapping; names are tried from the most specific alias."""

    def __init__(self, mapping: Mapping, aliases: Callable[[str], list[str]]) -> None:
        if not isinstance(mapping, Mapping):
            raise LambdaError(f"lambdas must be a mapping {{(parent, child): λ}}, got {type(mapping).__name__}",
                              fix="pass lambdas={('u', 'v'): 0.5, ...}")
        self.values: dict[tuple[str, str], float] = {}
        for key, value in mapping.items():
            if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, str) for k in key)):
                raise LambdaError(f"lambdas key {key!r} is not a (parent, child) pair of names",
                                  fix="key every λ by an edge: ('u', 'v')")
            try:
                v = float(value)
            except (TypeError, ValueError):
                raise LambdaError(f"λ of edge {key[0]} -> {key[1]} is not a number: {value!r}",
                                  fix="use values in [0, 1]") from None
            if not 0.0 <= v <= 1.0:
                raise LambdaError(f"λ of edge {key[0]} -> {key[1]} = {value} is outside [0, 1]",
                                  fix="mixing weights must lie in [0, 1]: 1 is backpropagation, 0 fully synthetic")
            self.values[key] = v
        self.aliases = aliases


    def edge(self, parent: str, child: str) -> float | None:
        for p in self.aliases(parent):
            for c in self.aliases(child):
                v = self.values.get((p, c))
                if v is not None:
                    return v
        return None

    def check(self, edges: Iterable[tuple[str, str]]) -> None:
        """Raise :class:`LambdaError` for keys that name no edge of the drawing."""
        if not self.values:
            return
        valid = set()
        for p, c in edges:
            for pa in self.aliases(p):
                for ca in self.aliases(c):
                    valid.add((pa, ca))
        unknown = [k for k in self.values if k not in valid]
        if unknown:
            shown = ", ".join(f"{p} -> {c}" for p, c in unknown[:4])
            raise LambdaError(f"lambdas names edges that are not in the graph: {shown}",
                              fix="key λ by existing (parent, child) edges: node names, neurons name[i], "
                                  "or two array names for all their edges")


class _NetLambdas(_Lambdas):
    """λ stored in a :class:`~sggraph.CompiledGraph`."""

    def __init__(self, net: Any) -> None:
        from .compile import _ArrayBlock

        self.net = net
        self._array_cls = _ArrayBlock
        self._lam: dict[str, np.ndarray] = {}
        self._table: dict[str, np.ndarray] = {}
        self._slots: dict[str, dict[str, list[int]]] = {}


    def _block(self, name: str) -> Any:
        return self.net.blocks[name] if name in self.net.blocks else None

    def _lam_of(self, name: str) -> np.ndarray:
        if name not in self._lam:
            self._lam[name] = self.net.blocks[name].lam.detach().double().cpu().numpy()
        return self._lam[name]

    def edge(self, parent: str, child: str) -> float | None:
        cb, ci = _split(child)
        pb, pi = _split(parent)
        block = self._block(cb)
        if block is None:
            return None
        lam = self._lam_of(cb)
        if isinstance(block, self._array_cls):
            if ci is None or pi is None or pb != block.parent:
                return None
            if cb not in self._table:
                self._table[cb] = block.table.cpu().numpy()
            cols = list(np.flatnonzero(self._table[cb][ci] == pi))
            if block.residual and pi == ci:
                cols.append(block.fan_in)
            return float(lam[ci, cols].mean()) if cols else None
        if cb not in self._slots:
            slots: dict[str, list[int]] = {}
            for k, ref in enumerate(block.parents):
                slots.setdefault(ref, []).append(k)
            self._slots[cb] = slots
        slots = self._slots[cb]
        ks = slots.get(parent, []) + (slots.get(pb, []) if pi is not None else [])
        return float(lam[ks].mean()) if ks else None

    def table_mean(self, parent_group: str, child_group: str) -> float | None:
        block = self._block(child_group)
        if isinstance(block, self._array_cls) and block.parent == parent_group:
            return float(self._lam_of(child_group).mean())
        return None

    def effective(self, parent: str, child: str) -> float | None:
        block = self._block(_split(child)[0])
        if block is not None and (not self.net.synthetic or block.mode == "plain"):
            return 1.0
        return self.edge(parent, child)


class _CellLambdas(_Lambdas):
    """λ stored in a :class:`~sggraph.CompiledCell`, for its unrolled graph or its folded cell."""

    def __init__(self, cnet: Any, steps: int | None) -> None:
        self.cnet = cnet
        st = cnet.state
        self.state = cnet.cell.state
        self.lam = st.lam.detach().double().cpu().numpy()
        self.table = st.table.cpu().numpy()
        self.fan_in = st.fan_in
        self.child_mode = st.modes() == "child"
        self.theta = cnet.schedule(steps).detach().double().cpu().numpy() if steps and self.child_mode else None


    def _node_lam(self, node: str, ref: str, folded: bool = False) -> float | None:
        """λ of the edges from ``ref`` (``x``, ``h[i]``; folded: a base name) into pre/post node ``node``."""
        block = self.cnet.blocks.get(node)
        if block is None or node == self.state.name:
            return None
        base = ref.partition("[")[0]
        if folded:
            ks = [k for k, p in enumerate(block.parents) if p.partition("[")[0] == base]
        else:
            ks = [k for k, p in enumerate(block.parents) if p == ref or (ref != base and p == base)]
        lam = block.lam.detach().double().cpu().numpy()
        return float(lam[ks].mean()) if ks else None

    def edge(self, parent: str, child: str) -> float | None:
        cm, pm = _UNROLLED.match(child), _UNROLLED.match(parent)
        if cm is None or pm is None:
            return None
        cb, ct, ci = cm["base"], int(cm["t"]), cm["i"]
        pb, pi = pm["base"], pm["i"]
        if cb == self.state.name and ci is not None:
            i = int(ci)
            if self.theta is not None and ct <= len(self.theta):
                return float(self.theta[ct - 1, i])
            if pb == self.state.name and pi is not None:
                cols = np.flatnonzero(self.table[i] == int(pi))
                return float(self.lam[i, cols].mean()) if len(cols) else None
            return float(self.lam[i, self.fan_in])
        ref = pb if pi is None else f"{pb}[{pi}]"
        return self._node_lam(cb, ref)

    def table_mean(self, parent_group: str, child_group: str) -> float | None:
        cm, pm = _UNROLLED.match(child_group), _UNROLLED.match(parent_group)
        st = self.state
        if cm is None or pm is None or cm["base"] != st.name:
            return None
        t = int(cm["t"])
        if pm["base"] == st.name:
            if self.theta is not None and t <= len(self.theta):
                return float(self.theta[t - 1].mean())
            return float(self.lam[:, : self.fan_in].mean())
        k = st.input_neurons
        if self.theta is not None and t <= len(self.theta):
            return float(self.theta[t - 1, :k].mean())
        return float(self.lam[:k, self.fan_in].mean())

    def folded(self, parent: str, child: str) -> float | None:
        st = self.state
        if child == st.name:
            if parent == st.name:
                return float(self.lam[:, : self.fan_in].mean())
            return float(self.lam[: st.input_neurons, self.fan_in].mean())
        return self._node_lam(child, parent, folded=True)

    def _plain(self, child_base: str) -> bool:
        block = self.cnet.blocks.get(child_base)
        return not self.cnet.synthetic or (block is not None and block.mode == "plain")

    def effective(self, parent: str, child: str) -> float | None:
        m = _UNROLLED.match(child)
        if m is not None and self._plain(m["base"]):
            return 1.0
        return self.edge(parent, child)

    def effective_folded(self, parent: str, child: str) -> float | None:
        return 1.0 if self._plain(child) else self.folded(parent, child)


# ------------------------------------------------------------ feedback magnitudes
class _NetMagnitudes:
    """Mean ``|g̃|`` each node (or neuron) of a compiled graph received in the last backward."""

    def __init__(self, net: Any) -> None:
        self.net = net
        self._per: dict[str, np.ndarray | float | None] = {}

    def _of_block(self, name: str) -> np.ndarray | float | None:
        if name not in self._per:
            block = self.net.blocks[name] if name in self.net.blocks else None
            rec = None if block is None else block.record
            value: np.ndarray | float | None = None
            if rec is not None and rec.received is not None:
                r = rec.received.detach().abs().double()
                value = r.mean(dim=tuple(range(1, r.dim()))).cpu().numpy() if getattr(block, "count", None) \
                    and r.dim() == 3 else float(r.mean())
            self._per[name] = value
        return self._per[name]

    def any(self) -> bool:
        return any(self._of_block(n) is not None for n in self.net.blocks)

    def of(self, name: str) -> float | None:
        base, idx = _split(name)
        value = self._of_block(base)
        if value is None:
            return None
        if isinstance(value, np.ndarray):
            return float(value[idx]) if idx is not None else float(value.mean())
        return value


class _CellMagnitudes:
    """Mean ``|g̃|`` received per unrolled node of a compiled cell (or per cell node, folded)."""

    def __init__(self, cnet: Any) -> None:
        self.cnet = cnet
        st = cnet.state
        self.state = cnet.cell.state.name
        self.steps = len(st.records)
        self.per_step = [None if r.received is None else
                         r.received.detach().abs().double().mean(dim=(1, 2)).cpu().numpy() for r in st.records]
        self.batch = next((r.received.shape[1] for r in st.records if r.received is not None), None)

    def any(self) -> bool:
        return any(self.folded(n) is not None for n in self.cnet.blocks)

    def _node(self, base: str, t: int | None) -> float | None:
        block = self.cnet.blocks.get(base)
        rec = None if block is None else block.record
        if rec is None or rec.received is None:
            return None
        r = rec.received.detach().abs().double()
        if t is None:
            return float(r.mean())
        if self.batch is None or t > self.steps or r.shape[0] != self.steps * self.batch:
            return None
        return float(r.view(self.steps, self.batch, -1)[t - 1].mean())

    def of(self, name: str) -> float | None:
        m = _UNROLLED.match(name)
        if m is None:
            return None
        base, t = m["base"], int(m["t"])
        if base == self.state:
            if t < 1 or t > self.steps or self.per_step[t - 1] is None:
                return None
            per = self.per_step[t - 1]
            return float(per[int(m["i"])]) if m["i"] is not None else float(per.mean())
        return self._node(base, t)

    def folded(self, name: str) -> float | None:
        if name == self.state:
            have = [p for p in self.per_step if p is not None]
            return float(np.mean([p.mean() for p in have])) if have else None
        return self._node(name, None)


# ----------------------------------------------------------------------- draw
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
        drawn). ``None`` or 0: one box per array. For an unrolled cell ``None`` draws every
        state neuron, ``N`` the first ``N`` per step and 0 one box per step.
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
    try:
        from .compile import CompiledGraph
        from .recurrent import CompiledCell
    except ImportError:  # pragma: no cover - torch missing
        CompiledGraph = CompiledCell = ()  # type: ignore[assignment,misc]
    obj = graph_or_net
    if CompiledGraph and isinstance(obj, CompiledGraph):
        net, graph = obj, obj.graph
    elif CompiledCell and isinstance(obj, CompiledCell):
        cnet, cell = obj, obj.cell
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
        mags: Any = _NetMagnitudes(net) if net is not None else _CellMagnitudes(cnet)
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
        return _draw_folded_cell(cell, cnet, lambdas, mags)
    if cell is not None:
        assert unroll is not None
        graph = unroll_cell(cell, unroll)
        return _draw_graph(graph, node=node, expand=expand_arrays, lambdas=lambdas, mags=mags,
                           provider=_CellLambdas(cnet, unroll) if cnet is not None else None, cell=cell)
    assert graph is not None
    return _draw_graph(graph, node=node, expand=expand_arrays, lambdas=lambdas, mags=mags,
                       provider=_NetLambdas(net) if net is not None else None, cell=None)


class _Override(_Lambdas):
    """An explicit mapping first, then the compiled graph's λ."""

    def __init__(self, first: _MappingLambdas, second: _Lambdas | None) -> None:
        self.first, self.second = first, second


    def edge(self, parent: str, child: str) -> float | None:
        v = self.first.edge(parent, child)
        return v if v is not None or self.second is None else self.second.edge(parent, child)

    def table_mean(self, parent_group: str, child_group: str) -> float | None:
        return None  # mean over the mapped edges

    def effective(self, parent: str, child: str) -> float | None:
        v = self.first.edge(parent, child)
        return v if v is not None or self.second is None else self.second.effective(parent, child)


def _graph_aliases(name: str) -> list[str]:
    base, idx = _split(name)
    return [name, base] if idx is not None else [name]


def _unrolled_aliases(state: str) -> Callable[[str], list[str]]:
    def aliases(name: str) -> list[str]:
        m = _UNROLLED.match(name)
        if m is None:
            return [name]
        if m["base"] == state and m["i"] is not None:
            return [name, f"{state}@{m['t']}", f"{state}[{m['i']}]", state]
        return [name, m["base"]]

    return aliases


def _draw_graph(g: Graph, *, node: str | None, expand: int | None, lambdas: Mapping | None, mags: Any,
                provider: _Lambdas | None, cell: Cell | None) -> graphviz.Digraph:
    d = g.nx
    order = [v for layer in g.layers for v in layer]
    # groups: arrays, or the steps of an unrolled state
    groups: dict[str, _Group] = {}
    group_of: dict[str, tuple[str, int]] = {}
    declared: dict[tuple[str, str], str] = {}
    if cell is None:
        for a in g.arrays.values():
            members = [neuron_name(a.name, i) for i in range(a.count)]
            if a.parent is None:
                details = ["input array", f"count {a.count} × dim {a.dim}"]
            else:
                fan = f"fan_in {a.fan_in or 0}" + (" + residual" if a.residual else "")
                details = [f"count {a.count} × dim {a.dim}", fan, f"slots {a.slots}"]
                declared[(a.parent, a.name)] = fan
            groups[a.name] = _Group(a.name, a.count, members, a.name, details, expand if expand else None)
            for i, m in enumerate(members):
                group_of[m] = (a.name, i)
        aliases = _graph_aliases
    else:
        st = cell.state
        assert st is not None
        n_states = sum(1 for v in order if v.startswith(f"{st.name}@") and v.endswith(":0"))  # steps 0 … T
        if expand is not None:
            for t in range(n_states):
                name = f"{st.name}@{t}"
                members = [f"{name}:{i}" for i in range(st.count)]
                details = [f"count {st.count} × dim {st.dim}"]
                if t == 0:
                    details.append("initial state (zeros)")
                else:
                    details.append(f"fan_in {st.fan_in} from {st.name}@{t - 1}")
                    declared[(f"{st.name}@{t - 1}", name)] = f"t−1 → t, fan_in {st.fan_in}"
                    if st.input is not None:
                        declared[(f"{st.input}@{t}", name)] = f"→ first {st.input_neurons} neurons"
                groups[name] = _Group(name, st.count, members, name, details, expand or None)
                for i, m in enumerate(members):
                    group_of[m] = (name, i)
        aliases = _unrolled_aliases(st.name)

    focus_sets: dict[str, str] = {}
    if node is not None:
        if node not in d:
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

    def item_of(v: str) -> str:
        grp = group_of.get(v)
        if grp is None:
            return v
        gname, idx = grp
        show = groups[gname].show
        if show is None:
            return gname
        if idx < show or v == node:
            return v
        return f"{gname}[…]" if cell is None else f"{gname}:…"

    report = check_conditions(g)
    a1, a2, a3 = set(report.a1), set(report.a2), set(report.a3)
    terminals = set(g.terminals)

    def role(v: str) -> str:
        if d.in_degree(v) == 0:
            return "source"
        return "terminal" if v in terminals else "hidden"

    # items, in layer order
    members_of: dict[str, list[str]] = {}
    for v in order:
        members_of.setdefault(item_of(v), []).append(v)
    items: list[_Item] = []
    for iid, members in members_of.items():
        first = members[0]
        layer = g.layer_of(first)
        roles = {role(v) for v in members}
        r = roles.pop() if len(roles) == 1 else "hidden"
        if iid in groups:
            grp = groups[iid]
            it = _Item(iid, layer, "group", r, grp.title, list(grp.details))
            it.tooltip = f"{iid}: {grp.count} neurons; " + "; ".join(grp.details)
        elif iid in d:
            dim = d.nodes[iid]["dim"]
            fn = g.nodes[iid].fn if iid in g.nodes else None
            it = _Item(iid, layer, "node", r, iid, [f"dim {dim}" + (f" · {fn}" if fn else "")])
            it.tooltip = f"{iid}: {r}, dim {dim}, layer {layer}"
        else:
            gname = group_of[first][0]
            it = _Item(iid, layer, "more", r, f"… ({len(members)} more)", [f"of {gname}"])
            it.tooltip = f"{len(members)} more neurons of {gname} not drawn: {_short(members)}"
        _mark(it, members, g, a1, a2, a3)
        if focus_sets:
            _highlight(it, members, focus_sets, node)
        if mags is not None and r != "source" and all(mags.of(v) is None for v in members):
            it.dashed = True
        items.append(it)

    # edges, aggregated from the expanded graph onto the drawn items
    agg: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for v in order:
        hv = item_of(v)
        seen: set[str] = set()
        for p in d.nodes[v]["parents"]:
            if p in seen or p not in d:
                continue
            seen.add(p)
            agg.setdefault((item_of(p), hv), []).append((p, v))
    map_l: _MappingLambdas | None = None
    if lambdas is not None:
        map_l = _MappingLambdas(lambdas, aliases)
        map_l.check(d.edges)
    lam_src: _Lambdas | None = _Override(map_l, provider) if map_l is not None else provider
    kinds = {it.id: it.kind for it in items}
    edges: list[_Edge] = []
    for (ti, hi), pairs in agg.items():
        e = _Edge(ti, hi, count=len(pairs))
        e.placeholder = kinds.get(ti) == "more" or kinds.get(hi) == "more"
        if (ti, hi) in declared:
            e.text = declared[(ti, hi)]
        elif len(pairs) > 1:
            if kinds.get(ti) == "group" and kinds.get(hi) == "node":
                ps = [p for p, _ in pairs]
                e.text = f"all {len(ps)} neurons" if len(ps) == groups[ti].count else _short(ps)
            else:
                e.text = f"{len(pairs)} edges"
        if lam_src is not None:
            getter = lam_src.effective if mags is not None else lam_src.edge
            e.lam = lam_src.table_mean(ti, hi) if (ti, hi) in declared and mags is None else None
            if e.lam is None:
                vals = [x for x in (getter(p, v) for p, v in pairs) if x is not None]
                e.lam = float(np.mean(vals)) if vals else None
            e.lam_mean = len(pairs) > 1
        if mags is not None:
            children = list(dict.fromkeys(v for _, v in pairs))
            if kinds.get(hi) == "group":
                vals = [mags.of(hi)]
            else:
                vals = [mags.of(c) for c in children]
            vals = [x for x in vals if x is not None]
            e.magnitude = float(np.mean(vals)) if vals else None
        edges.append(e)
    title = g.name
    if provider is not None and isinstance(provider, _NetLambdas):
        title += " (λ of the compiled graph)"
    return _emit(g.name, title, items, edges, lambdas=lam_src is not None, propagation=mags is not None,
                 highlight=node)


def _mark(it: _Item, members: list[str], g: Graph, a1: set, a2: set, a3: set) -> None:
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


def _highlight(it: _Item, members: list[str], focus_sets: Mapping[str, str], node: str | None) -> None:
    counts = {k: 0 for k in _HIGHLIGHT_ORDER}
    for v in members:
        k = focus_sets.get(v)
        if k is not None:
            counts[k] += 1
    present = [k for k in _HIGHLIGHT_ORDER if counts[k]]
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


def _draw_folded_cell(cell: Cell, cnet: Any, lambdas: Mapping | None, mags: Any) -> graphviz.Digraph:
    stage = cell.stages()
    level = cell.levels()
    st = cell.state
    assert st is not None
    low = min(level.values())
    consumers: dict[str, list[str]] = {}
    for name, n in cell.nodes.items():
        for p in n.parents:
            consumers.setdefault(p.partition("[")[0], []).append(name)
    if st.input is not None:
        consumers.setdefault(st.input, []).append(st.name)
    once = unroll_cell(cell, 1)
    report = check_conditions(once)
    a3 = {v.split("@", 1)[0] for v in report.a3}
    a1 = {v.split("@", 1)[0] for v in report.a1}
    items: list[_Item] = []
    for name, dim in cell.inputs.items():
        it = _Item(name, level[name] - low, "node", "source", name, [f"input · dim {dim}"])
        it.tooltip = f"{name}: exogenous input at every step, dim {dim}"
        items.append(it)
    for name, n in cell.nodes.items():
        if stage[name] != "pre":
            continue
        it = _Item(name, level[name] - low, "node", "hidden", name,
                   [f"dim {n.dim}" + (f" · {n.fn}" if n.fn else ""), "pre node"])
        it.tooltip = f"{name}: pre node (per step, before the state), dim {n.dim}"
        items.append(it)
    details = [f"count {st.count} × dim {st.dim}", f"fan_in {st.fan_in} (from t−1)", f"slots {st.slots}"]
    if st.input is not None:
        details.append(f"{st.input} → first {st.input_neurons} neurons")
    st_role = "hidden" if consumers.get(st.name) else "terminal"
    it = _Item(st.name, -low, "group", st_role, st.name, ["recurrent state"] + details)
    it.tooltip = f"{st.name}: recurrent state array; " + "; ".join(details)
    items.append(it)
    for name, n in cell.nodes.items():
        if stage[name] != "post":
            continue
        r = "hidden" if consumers.get(name) else "terminal"
        it = _Item(name, level[name] - low, "node", r, name,
                   [f"dim {n.dim}" + (f" · {n.fn}" if n.fn else ""), "post node"])
        it.tooltip = f"{name}: post node (reads the state at step t), dim {n.dim}"
        items.append(it)
    for it in items:
        if it.id in a1:
            it.marks["A1"] = f"feedback: {cell.feedback.get(it.id, 'stochastic')} (A.1)"
        if it.id in a3:
            it.marks["A3"] = "sparse (A.3)"
        if mags is not None and it.role != "source" and mags.folded(it.id) is None:
            it.dashed = True
    edges: list[_Edge] = []
    for name, n in cell.nodes.items():
        by_base: dict[str, list[str]] = {}
        for p in n.parents:
            by_base.setdefault(p.partition("[")[0], []).append(p)
        for base, refs in by_base.items():
            edges.append(_Edge(base, name, "" if refs == [base] else _short(refs), count=len(refs)))
    if st.input is not None:
        edges.append(_Edge(st.input, st.name, f"t, first {st.input_neurons} neurons"))
    edges.append(_Edge(st.name, st.name, f"t−1 → t, fan_in {st.fan_in}"))
    provider = _CellLambdas(cnet, None) if cnet is not None else None
    map_l = None
    if lambdas is not None:
        map_l = _MappingLambdas(lambdas, lambda name: [name])
        map_l.check((e.tail, e.head) for e in edges)
    for e in edges:
        lam = map_l.edge(e.tail, e.head) if map_l is not None else None
        if lam is None and provider is not None:
            lam = provider.effective_folded(e.tail, e.head) if mags is not None else provider.folded(e.tail, e.head)
        e.lam = lam
        e.lam_mean = e.head == st.name or e.count > 1
        if mags is not None:
            e.magnitude = mags.folded(e.head)
    return _emit(cell.name, f"{cell.name} (recurrent cell, one step)", items, edges,
                 lambdas=provider is not None or map_l is not None, propagation=mags is not None, highlight=None)


# ------------------------------------------------------------------------ emit
def _node_attrs(it: _Item) -> dict[str, str]:
    classes = [f"sg-{it.kind}", f"sg-{it.role}"]
    if it.kind == "more":
        lines = [it.title] + it.details + ([it.highlight_note] if it.highlight_note else [])
        attrs = {"label": _esc("\n".join(lines)), "shape": "note", "style": "dashed", "color": "#757575",
                 "fontcolor": "#616161", "tooltip": _esc(it.tooltip), "class": " ".join(classes)}
        if it.highlight is not None:  # it holds highlighted neurons: say how many
            attrs.update(style="dashed,filled", fillcolor=HIGHLIGHT_COLORS[it.highlight], fontcolor="#212121")
            attrs["class"] += f" sg-highlight-{it.highlight}"
        return attrs
    shape = "box3d" if it.kind == "group" else _ROLE_SHAPE[it.role]
    fill = _ROLE_FILL[it.role]
    attrs: dict[str, str] = {"shape": shape}
    style = ["filled"]
    if "A3" in it.marks:
        style.append("diagonals")
        classes.append("sg-a3")
    if it.dashed:
        style.append("dashed")
        classes.append("sg-no-feedback")
    if "A2" in it.marks:
        attrs["peripheries"] = "2"
        classes.append("sg-a2")
    if "A1" in it.marks:
        attrs["color"] = _A1_COLOR
        attrs["penwidth"] = "2.5"
        classes.append("sg-a1")
    if it.highlight is not None:
        fill = HIGHLIGHT_COLORS[it.highlight]
        classes.append(f"sg-highlight-{it.highlight}")
        if it.highlight == "node":
            attrs["fontcolor"] = "white"
    lines = [it.title] + it.details + [it.marks[k] for k in ("A1", "A2", "A3") if k in it.marks]
    if it.highlight_note:
        lines.append(it.highlight_note)
    tooltip = it.tooltip + "".join(f"; {it.marks[k]}" for k in ("A1", "A2", "A3") if k in it.marks)
    if it.highlight is not None:
        tooltip += {"node": "; the highlighted node", "siblings": "; sibling (eq. 11)",
                    "ancestors": "; sibling-extended ancestor (Def. 4)"}[it.highlight]
        if it.highlight_note:
            tooltip += f" ({it.highlight_note})"
    attrs.update({"label": _esc("\n".join(lines)), "style": ",".join(style), "fillcolor": fill,
                  "tooltip": _esc(tooltip), "class": " ".join(classes)})
    return attrs


def _edge_attrs(e: _Edge, max_magnitude: float | None, propagation: bool) -> dict[str, str]:
    label = [e.text] if e.text else []
    tip = [f"{e.tail} → {e.head}" + (f" ({e.count} edges)" if e.count > 1 else "")]
    if e.text:
        tip.append(e.text)
    attrs: dict[str, str] = {}
    classes = ["sg-edge"]
    style = []
    if e.placeholder:
        style.append("dashed")
    if propagation:
        if e.magnitude is None:
            style.append("dashed")
            attrs["color"] = _NO_FEEDBACK_COLOR
            attrs["penwidth"] = "0.6"
            tip.append("the child received no feedback")
            classes.append("sg-no-feedback")
        else:
            rel = e.magnitude / max_magnitude if max_magnitude else 0.0
            attrs["penwidth"] = f"{0.6 + 5.4 * rel:.2f}"
            tip.append(f"mean |g̃| of the child = {e.magnitude:.3g} ({rel:.2f} of the largest)")
            if e.lam is not None:
                share = 1.0 - e.lam
                attrs["color"] = lambda_color(e.lam)
                label.append(f"synthetic {share:.0%}")
                tip.append(f"synthetic share 1 − λ = {share:.3f}")
            else:
                attrs["color"] = _NO_LAMBDA_COLOR
    elif e.lam is not None:
        sym = "mean λ" if e.lam_mean else "λ"
        attrs["color"] = lambda_color(e.lam)
        attrs["penwidth"] = "1.6"
        label.append(f"{sym}={e.lam:.2f}")
        tip.append(f"{sym} = {e.lam:.4f}")
        classes.append("sg-lambda")
    else:
        attrs["color"] = _NO_LAMBDA_COLOR
    if e.lam is not None:
        attrs["fontcolor"] = attrs.get("color", _NO_LAMBDA_COLOR)
    if label:
        attrs["label"] = _esc("\n".join(label))
    if style:
        attrs["style"] = ",".join(style)
    attrs["tooltip"] = _esc("; ".join(tip))
    attrs["class"] = " ".join(classes)
    return attrs


def _add_edge(dg: graphviz.Digraph, tail: str, head: str, attrs: Mapping[str, str]) -> None:
    # graphviz's own edge() reads "a:b" as node a, port b; names like h@1:0 must stay whole
    dg.body.append(f"\t{quote(tail)} -> {quote(head)}{attr_list(kwargs=dict(attrs))}\n")


def _emit(name: str, title: str, items: list[_Item], edges: list[_Edge], *, lambdas: bool, propagation: bool,
          highlight: str | None) -> graphviz.Digraph:
    dg = graphviz.Digraph(name=name, graph_attr={"rankdir": "LR", "label": _esc(title), "labelloc": "t",
                                                 "fontname": "Helvetica", "nodesep": "0.25", "ranksep": "0.6"},
                          node_attr={"fontname": "Helvetica", "fontsize": "11"},
                          edge_attr={"fontname": "Helvetica", "fontsize": "9"})
    by_layer: dict[int, list[_Item]] = {}
    for it in items:
        by_layer.setdefault(it.layer, []).append(it)
    for layer in sorted(by_layer):
        with dg.subgraph(name=f"layer_{layer}") as sub:
            sub.attr(rank="same")
            for it in by_layer[layer]:
                sub.node(it.id, **_node_attrs(it))
    mags = [e.magnitude for e in edges if e.magnitude is not None]
    top = max(mags) if mags else None
    for e in edges:
        _add_edge(dg, e.tail, e.head, _edge_attrs(e, top, propagation))
    _legend(dg, items, edges, lambdas=lambdas, propagation=propagation, highlight=highlight, top=top)
    return dg


def _legend(dg: graphviz.Digraph, items: list[_Item], edges: list[_Edge], *, lambdas: bool, propagation: bool,
            highlight: str | None, top: float | None) -> None:
    last = max((it.layer for it in items), default=None)
    anchor = next((it.id for it in items if it.layer == last), None)
    entries: list[tuple[str, dict[str, str]]] = [
        ("source (input)", {"shape": _ROLE_SHAPE["source"], "style": "filled", "fillcolor": _ROLE_FILL["source"]}),
        ("hidden node", {"shape": _ROLE_SHAPE["hidden"], "style": "filled", "fillcolor": _ROLE_FILL["hidden"]}),
        ("terminal node\n(external feedback)", {"shape": _ROLE_SHAPE["terminal"], "style": "filled",
                                                 "fillcolor": _ROLE_FILL["terminal"]}),
        ("node array: one box\n(edge label: fan_in)", {"shape": "box3d", "style": "filled", "fillcolor": "#ffffff"}),
        ("A.1: stochastic / contextual\nterminal feedback", {"shape": "box", "color": _A1_COLOR, "penwidth": "2.5"}),
        ("A.2: stochastic node", {"shape": "box", "peripheries": "2"}),
        ("A.3: sparse node (parents ≠\nthe whole previous layer)", {"shape": "box", "style": "diagonals"}),
    ]
    if any(it.kind == "more" for it in items):
        entries.append(("… neurons not drawn\n(dashed edges)",
                        {"shape": "note", "style": "dashed", "color": "#757575"}))
    if highlight is not None:
        entries += [
            (f"the node {highlight}", {"shape": "box", "style": "filled", "fillcolor": HIGHLIGHT_COLORS["node"],
                              "fontcolor": "white"}),
            (f"siblings of {highlight} (eq. 11)", {"shape": "box", "style": "filled",
                                                   "fillcolor": HIGHLIGHT_COLORS["siblings"]}),
            (f"sibling-extended ancestors\nof {highlight} (Def. 4)",
             {"shape": "box", "style": "filled", "fillcolor": HIGHLIGHT_COLORS["ancestors"]}),
        ]
    if lambdas and any(e.lam is None for e in edges):
        entries.append(("dark grey edge: λ not known", {"shape": "plaintext", "fontcolor": _NO_LAMBDA_COLOR}))
    if propagation:
        entries.append((f"edge width ∝ mean |g̃| the child\nreceived (widest = {top:.3g})" if top is not None
                        else "edge width ∝ mean |g̃| received", {"shape": "plaintext"}))
        entries.append(("dashed: no feedback received", {"shape": "box", "style": "dashed"}))
    with dg.subgraph(name="cluster_legend") as lg:
        lg.attr(label="Legend", fontname="Helvetica", fontsize="11", style="rounded", color="#9e9e9e")
        lg.attr("node", fontsize="9", height="0.3")
        with lg.subgraph(name="legend_column") as col:
            col.attr(rank="same")  # one column: rankdir=LR stacks a rank top to bottom
            names = []
            for k, (text, attrs) in enumerate(entries):
                nid = f"{_LEGEND}{k}"
                names.append(nid)
                col.node(nid, label=_esc(text), **attrs)
            if lambdas or propagation:
                nid = f"{_LEGEND}scale"
                names.append(nid)
                what = "edge colour: λ (synthetic share 1 − λ)" if propagation else "edge colour: λ"
                cells = "".join(f'<td bgcolor="{lambda_color(x)}" width="18"> </td>' for x in np.linspace(0, 1, 6))
                col.node(nid, shape="plaintext", label=f'<<table border="0" cellspacing="0" cellborder="0">'
                         f'<tr><td colspan="6">{what}</td></tr><tr>{cells}</tr>'
                         f'<tr><td colspan="3" align="left">0 synthetic</td>'
                         f'<td colspan="3" align="right">1 backprop</td></tr></table>>')
            for a, b in zip(names, names[1:]):  # rankdir=LR lays a rank out bottom to top
                _add_edge(col, b, a, {"style": "invis", "minlen": "0"})
    if anchor is not None:  # the legend as a column right of the last layer
        _add_edge(dg, anchor, names[0], {"style": "invis"})


# ----------------------------------------------------------------------- render
def render(digraph: graphviz.Digraph, path: str | os.PathLike) -> Path:
    """Write a drawing to ``path``; the suffix picks the format.

    ``.dot`` writes the DOT source; ``.svg``, ``.png`` and ``.pdf`` run graphviz's ``dot``.
    Files are written atomically (a temporary file renamed over the target).

    Parameters
    ----------
    digraph : graphviz.Digraph
        What :func:`draw` returned (anything with a ``source`` attribute).
    path : str or Path
        The output file; missing parent directories are created.

    Returns
    -------
    Path
        The file written. When ``dot`` is not on ``PATH`` this is the ``.dot`` file written
        next to ``path`` instead, and stderr says how to render it
        (``dot -Tsvg file.dot -o file.svg``).

    Raises
    ------
    ConfigError
        An unknown suffix, or ``dot`` failed.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from sggraph import Graph
    >>> g = Graph("tiny"); g.add_node("z", 1); g.add_node("y", 1, ["z"])
    >>> out = render(draw(g), pathlib.Path(tempfile.mkdtemp()) / "tiny.dot")
    >>> out.name, out.read_text().startswith("digraph tiny {")
    ('tiny.dot', True)
    >>> render(draw(g), "tiny.jpeg")
    Traceback (most recent call last):
    ...
    sggraph.exceptions.ConfigError: cannot write 'tiny.jpeg': unknown suffix '.jpeg'. Fix: name the output file .svg, .png, .pdf or .dot.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in RENDER_FORMATS:
        raise ConfigError(f"cannot write '{path}': unknown suffix '{path.suffix or '(none)'}'",
                          fix="name the output file .svg, .png, .pdf or .dot")
    source = getattr(digraph, "source", None)
    if not isinstance(source, str):
        raise ConfigError(f"render needs a graphviz drawing, got {type(digraph).__name__}",
                          fix="pass what sggraph.viz.draw returned")
    fmt = RENDER_FORMATS[suffix]
    try:
        return _render(source, path, fmt)
    except OSError as exc:
        raise ConfigError(f"cannot write the drawing: {exc.strerror or exc}", file=str(path),
                          fix="choose an output path in a writable directory") from None


def _render(source: str, path: Path, fmt: str | None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt is None:
        write_atomic(path, source.encode("utf-8"))
        return path
    exe = shutil.which("dot")
    if exe is None:
        dot_path = path.with_suffix(".dot")
        write_atomic(dot_path, source.encode("utf-8"))
        print(f"sggraph: graphviz's `dot` is not on PATH, so {path.name} was not rendered; wrote the DOT source "
              f"to {dot_path}. Render it with: dot -T{fmt} {dot_path} -o {path}  (install graphviz: "
              f"apt-get install graphviz, brew install graphviz or conda install graphviz)", file=sys.stderr)
        return dot_path
    with atomic_path(path) as tmp:
        proc = subprocess.run([exe, f"-T{fmt}", "-o", str(tmp)], input=source.encode("utf-8"), capture_output=True)
        if proc.returncode != 0 or not tmp.exists():
            message = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            raise ConfigError(f"graphviz dot failed (exit {proc.returncode}): {message[0] if message else 'no output'}",
                              file=str(path), fix=f"write the drawing to a .dot file and run `dot -T{fmt}` on it "
                                                  "to see the problem")
    return path


# -------------------------------------------------------------------------- CLI
def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``draw`` subcommand to an ``argparse`` subparsers object.

    ``sggraph draw MODEL.yaml -o OUT.{svg,png,pdf,dot} [--node NAME]
    [--lambda-from RUN_DIR_OR_CHECKPOINT] [--expand-arrays N]``

    The handler is set with ``set_defaults(run=run_draw)`` and returns the exit code.

    Examples
    --------
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="sggraph"); sub = parser.add_subparsers()
    >>> _ = add_parser(sub)
    >>> args = parser.parse_args(["draw", "examples/expert-net.yaml", "-o", "expert.svg", "--node", "e1"])
    >>> args.file, args.out, args.node, args.run is run_draw
    ('examples/expert-net.yaml', 'expert.svg', 'e1', True)
    """
    p = subparsers.add_parser(
        "draw", help="draw a YAML graph with graphviz (layers, arrays, conditions, λ)",
        description="Draw a YAML graph: layers as ranks, arrays as one box each, the paper's conditions marked; "
                    "optionally a node's siblings and extended ancestors, and λ from a trained run.")
    p.add_argument("file", metavar="MODEL.yaml", help="graph YAML file")
    p.add_argument("-o", "--out", required=True, metavar="OUT.{svg,png,pdf,dot}",
                   help="output file; the suffix picks the format")
    p.add_argument("--node", metavar="NAME", help="highlight this node, its siblings and extended ancestors")
    p.add_argument("--lambda-from", dest="lambda_from", metavar="RUN_DIR_OR_CHECKPOINT",
                   help="colour edges by λ from a checkpoint.pt (or a run directory holding one)")
    p.add_argument("--expand-arrays", dest="expand_arrays", type=int, metavar="N",
                   help="draw the first N neurons of every array individually")
    p.set_defaults(run=run_draw)
    return p


def run_draw(args: argparse.Namespace) -> int:
    """Handler of ``sggraph draw``: load, draw, render, print the written path; returns 0.

    Raises sggraph exceptions on bad input (the CLI prints them and exits 2).
    """
    out = Path(args.out)
    if out.suffix.lower() not in RENDER_FORMATS:
        raise ConfigError(f"cannot write '{out}': unknown suffix '{out.suffix or '(none)'}'",
                          fix="name the output file .svg, .png, .pdf or .dot")
    expand = getattr(args, "expand_arrays", None)
    if expand is not None and expand < 0:
        raise ConfigError(f"--expand-arrays must be 0 or more (got {expand})", fix="pass --expand-arrays N, N >= 0")
    graph = Graph.from_yaml(args.file)
    target: Any = graph
    if getattr(args, "lambda_from", None):
        state, source = _load_lambdas(args.lambda_from)
        target = _net_with_lambdas(graph, state, source)
    written = render(draw(target, node=args.node, expand_arrays=expand or None), out)
    print(written)
    return 0


def _load_lambdas(where: str) -> tuple[dict, str]:
    """The ``*.lam`` / ``*.lam_self`` tensors of a checkpoint file or run directory."""
    import torch

    path = Path(where)
    if path.is_dir():
        path = path / "checkpoint.pt"
        if not path.exists():
            raise ConfigError("the run directory holds no checkpoint.pt", file=str(path.parent),
                              fix="point --lambda-from at a run directory written by `sggraph train`, "
                                  "or at a checkpoint file")
    elif not path.exists():
        raise ConfigError("no such file or directory", file=str(path),
                          fix="point --lambda-from at a run directory or a checkpoint.pt file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many kinds on a non-checkpoint
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"cannot read the checkpoint: {first}", file=str(path),
                          fix="pass a checkpoint.pt written by `sggraph train` (torch.save of {'model': state_dict})"
                          ) from None
    state = obj.get("model", obj) if isinstance(obj, Mapping) else None
    if not isinstance(state, Mapping):
        raise ConfigError("the checkpoint holds no model state dict", file=str(path),
                          fix="pass a checkpoint whose 'model' entry is a CompiledGraph state_dict")
    lam = {k: v for k, v in state.items() if isinstance(k, str) and (k.endswith(".lam") or k.endswith(".lam_self"))
           and torch.is_tensor(v)}
    if not lam:
        raise ConfigError("the checkpoint holds no λ buffers (keys ending in .lam or .lam_self)", file=str(path),
                          fix="use the checkpoint of a compiled sggraph model (e.g. an sgprop run); "
                              "backprop-only baselines such as the MLP have no λ")
    return lam, str(path)


def _net_with_lambdas(graph: Graph, state: Mapping, source: str) -> Any:
    """Compile ``graph`` (child grouping) and load the λ buffers of ``state`` into it."""
    from torch import nn

    from .compile import compile as compile_graph

    # only λ is needed: nodes without a built-in function get a stand-in module
    functions = {n: nn.Identity() for n, node in graph.nodes.items() if node.parents and node.fn is None}
    net = compile_graph(graph, functions, grouping="child")
    try:
        result = net.load_state_dict(dict(state), strict=False)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln] or [str(exc).splitlines()[0]]
        raise ConfigError(f"the checkpoint's λ does not fit graph '{graph.name}': {lines[0]}", file=source,
                          fix="draw the YAML of the graph the run was trained on") from None
    if result.unexpected_keys:
        names = sorted({k.split(".")[1] if k.startswith("blocks.") else k for k in result.unexpected_keys})
        raise ConfigError(f"the checkpoint has λ for nodes that graph '{graph.name}' lacks: {_short(names, 5)}",
                          file=source, fix="draw the YAML of the graph the run was trained on")
    return net
