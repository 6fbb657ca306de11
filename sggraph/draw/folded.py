"""The folded drawing of a recurrent cell: inputs, pre nodes, the state as one box with a self-loop,
post nodes (``sggraph draw cell.yaml`` without ``--unroll``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import graphviz

from ..core.analysis import check_conditions
from ..core.unroll import Cell
from ..core.unroll import unroll as unroll_cell
from .emit import emit
from .sources import (
    CellLambdas,
    MappingLambdas,
)
from .style import (
    Edge,
    Item,
    shorten,
)

__all__ = ["draw_folded_cell"]


def draw_folded_cell(cell: Cell, cnet: Any, lambdas: Mapping | None, mags: Any) -> graphviz.Digraph:
    """The folded drawing of a cell: inputs, pre nodes, the state as one box with a self-loop, post nodes."""
    items = _folded_items(cell, mags)
    edges = _folded_edges(cell)
    provider = CellLambdas(cnet, None) if cnet is not None else None
    map_l = None
    if lambdas is not None:
        map_l = MappingLambdas(lambdas, lambda name: [name])
        map_l.check((e.tail, e.head) for e in edges)
    st = cell.state
    assert st is not None
    for e in edges:
        lam = map_l.edge(e.tail, e.head) if map_l is not None else None
        if lam is None and provider is not None:
            lam = provider.effective_folded(e.tail, e.head) if mags is not None else provider.folded(e.tail, e.head)
        e.lam = lam
        e.lam_mean = e.head == st.name or e.count > 1
        if mags is not None:
            e.magnitude = mags.folded(e.head)
    return emit(cell.name, f"{cell.name} (recurrent cell, one step)", items, edges,
                 lambdas=provider is not None or map_l is not None, propagation=mags is not None, highlight=None)


def _folded_items(cell: Cell, mags: Any) -> list[Item]:
    """One item per input, pre node, the state and post node, in step order, with the condition marks."""
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
    items: list[Item] = []
    for name, dim in cell.inputs.items():
        it = Item(name, level[name] - low, "node", "source", name, [f"input · dim {dim}"])
        it.tooltip = f"{name}: exogenous input at every step, dim {dim}"
        items.append(it)
    items += [_folded_node(cell, name, level[name] - low, "hidden", "pre")
              for name in cell.nodes if stage[name] == "pre"]
    details = [f"count {st.count} × dim {st.dim}", f"fan_in {st.fan_in} (from t−1)", f"slots {st.slots}"]
    if st.input is not None:
        details.append(f"{st.input} → first {st.input_neurons} neurons")
    st_role = "hidden" if consumers.get(st.name) else "terminal"
    it = Item(st.name, -low, "group", st_role, st.name, ["recurrent state"] + details)
    it.tooltip = f"{st.name}: recurrent state array; " + "; ".join(details)
    items.append(it)
    items += [_folded_node(cell, name, level[name] - low, "hidden" if consumers.get(name) else "terminal", "post")
              for name in cell.nodes if stage[name] == "post"]
    report = check_conditions(unroll_cell(cell, 1))
    marks = {key: {v.split("@", 1)[0] for v in found} for key, found in (("A1", report.a1), ("A2", report.a2),
                                                                            ("A3", report.a3))}
    for it in items:
        if it.id in marks["A1"]:
            it.marks["A1"] = f"feedback: {cell.feedback.get(it.id, 'stochastic')} (A.1)"
        if it.id in marks["A2"]:
            it.marks["A2"] = "stochastic (A.2)"
        if it.id in marks["A3"]:
            it.marks["A3"] = "sparse (A.3)"
        if mags is not None and it.role != "source" and mags.folded(it.id) is None:
            it.dashed = True
    return items


def _folded_node(cell: Cell, name: str, layer: int, role: str, stage: str) -> Item:
    n = cell.nodes[name]
    it = Item(name, layer, "node", role, name, [f"dim {n.dim}" + (f" · {n.fn}" if n.fn else ""), f"{stage} node"])
    when = "per step, before the state" if stage == "pre" else "reads the state at step t"
    it.tooltip = f"{name}: {stage} node ({when}), dim {n.dim}"
    return it


def _folded_edges(cell: Cell) -> list[Edge]:
    """The cell's edges: node parents by base name, the state's input and its t−1 → t self-loop."""
    st = cell.state
    assert st is not None
    edges: list[Edge] = []
    for name, n in cell.nodes.items():
        by_base: dict[str, list[str]] = {}
        for p in n.parents:
            by_base.setdefault(p.partition("[")[0], []).append(p)
        for base, refs in by_base.items():
            edges.append(Edge(base, name, "" if refs == [base] else shorten(refs), count=len(refs)))
    if st.input is not None:
        edges.append(Edge(st.input, st.name, f"t, first {st.input_neurons} neurons"))
    edges.append(Edge(st.name, st.name, f"t−1 → t, fan_in {st.fan_in}"))
    return edges
