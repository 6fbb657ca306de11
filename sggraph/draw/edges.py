"""The drawn edges of a graph: graph edges aggregated box to box, with their label, λ (explicit mapping
over the compiled net's) and propagation magnitude."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..core.graph import Graph
from .sources import (
    Lambdas,
    MappingLambdas,
)
from .style import (
    Edge,
    shorten,
)

__all__ = ["Override", "aggregate_edges", "drawn_edge", "lambda_source"]


class Override(Lambdas):
    """An explicit mapping first, then the compiled graph's λ."""

    def __init__(self, first: MappingLambdas, second: Lambdas | None) -> None:
        self.first, self.second = first, second


    def edge(self, parent: str, child: str) -> float | None:
        v = self.first.edge(parent, child)
        return v if v is not None or self.second is None else self.second.edge(parent, child)

    def table_mean(self, parent_group: str, child_group: str) -> float | None:
        return None  # mean over the mapped edges

    def effective(self, parent: str, child: str) -> float | None:
        v = self.first.edge(parent, child)
        return v if v is not None or self.second is None else self.second.effective(parent, child)


def aggregate_edges(g: Graph, order: list[str], item_of: Callable[[str], str]) -> dict[tuple[str, str],
                                                                                      list[tuple[str, str]]]:
    """The graph's edges ``(parent, child)`` grouped by the items they join, each parent once per child."""
    d = g.nx
    agg: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for v in order:
        hv = item_of(v)
        seen: set[str] = set()
        for p in d.nodes[v]["parents"]:
            if p in seen or p not in d:
                continue
            seen.add(p)
            agg.setdefault((item_of(p), hv), []).append((p, v))
    return agg


def lambda_source(edges: Any, lambdas: Mapping | None, aliases: Callable[[str], list[str]],
                   provider: Lambdas | None) -> Lambdas | None:
    """``provider`` overridden by the explicit ``lambdas`` (checked against ``edges``), or either alone."""
    if lambdas is None:
        return provider
    map_l = MappingLambdas(lambdas, aliases)
    map_l.check(edges)
    return Override(map_l, provider)


def drawn_edge(ti: str, hi: str, pairs: list[tuple[str, str]], kinds: Mapping[str, str], boxes: Any,
          lam_src: Lambdas | None, mags: Any) -> Edge:
    """The drawn edge from item ``ti`` to item ``hi`` standing for the graph's edges ``pairs``."""
    e = Edge(ti, hi, count=len(pairs))
    e.placeholder = kinds.get(ti) == "more" or kinds.get(hi) == "more"
    e.text = _edge_text(ti, hi, pairs, kinds, boxes)
    if lam_src is not None:
        e.lam = _edge_lambda(ti, hi, pairs, boxes, lam_src, mags)
        e.lam_mean = len(pairs) > 1
    if mags is not None:
        e.magnitude = _edge_magnitude(hi, pairs, kinds, mags)
    return e


def _edge_text(ti: str, hi: str, pairs: list[tuple[str, str]], kinds: Mapping[str, str], boxes: Any) -> str:
    """The declared label of a box-to-box edge, else which neurons (or how many edges) it stands for."""
    if (ti, hi) in boxes.declared:
        return boxes.declared[(ti, hi)]
    if len(pairs) <= 1:
        return ""
    if kinds.get(ti) == "group" and kinds.get(hi) == "node":
        ps = [p for p, _ in pairs]
        return f"all {len(ps)} neurons" if len(ps) == boxes.groups[ti].count else shorten(ps)
    return f"{len(pairs)} edges"


def _edge_lambda(ti: str, hi: str, pairs: list[tuple[str, str]], boxes: Any, lam_src: Lambdas,
                 mags: Any) -> float | None:
    """λ of a drawn edge: the table mean of a declared box-to-box edge, else the mean over its edges
    (the effective λ, with the temporal schedule, when drawing propagation)."""
    lam = lam_src.table_mean(ti, hi) if (ti, hi) in boxes.declared and mags is None else None
    if lam is None:
        getter = lam_src.effective if mags is not None else lam_src.edge
        vals = [x for x in (getter(p, v) for p, v in pairs) if x is not None]
        lam = float(np.mean(vals)) if vals else None
    return lam


def _edge_magnitude(hi: str, pairs: list[tuple[str, str]], kinds: Mapping[str, str], mags: Any) -> float | None:
    """Mean ``|g̃|`` the child received: a box's own mean, else the mean over the edges' children."""
    if kinds.get(hi) == "group":
        vals = [mags.of(hi)]
    else:
        vals = [mags.of(c) for c in dict.fromkeys(v for _, v in pairs)]
    vals = [x for x in vals if x is not None]
    return float(np.mean(vals)) if vals else None
