"""The paper's structural analysis as small free functions over a :class:`~sggraph.Graph`.

* :func:`siblings` — eq. 11, ``sib(v) = {v' in V_l : pa(v') ∩ pa(v) ≠ ∅}`` (self included);
* :func:`extended_ancestors` — Definition 4, eq. 12, the sibling-extended ancestor set;
* :func:`check_conditions` — conditions A.1–A.3 with witnesses, the structural
  sufficient condition for (B), and the regime (Theorem 1, 2 or 3);
* :func:`theorem3_constants` and :func:`theorem3_condition` — eq. 20 and eq. 19.

Sibling and ancestor sets are computed with Python-integer bitsets, memoised layer by
layer, so the whole of an unrolled graph of ~10⁴ nodes takes well under a second.
:func:`check_conditions` needs no sets at all: A.3 compares in-degrees with layer sizes,
and (B)'s dominance test runs on the dominator tree (immediate dominators of a DAG by
lowest common ancestors, then one pass over the edges), in time near-linear in the
graph's size — a 40,000-layer chain or a 50,000-node wide graph takes a second or two.

Examples
--------
>>> from sggraph import Graph
>>> g = Graph("chain")
>>> g.add_node("z", 1); g.add_node("a", 1, ["z"]); g.add_node("b", 1, ["z"]); g.add_node("y", 1, ["a"])
>>> sorted(siblings(g, "a")), sorted(extended_ancestors(g, "y"))
(['a', 'b'], ['a', 'b', 'y'])
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping

import attrs

from ..exceptions import GraphError
from .graph import Graph
from .structure import Structure

__all__ = [
    "ConditionReport",
    "check_conditions",
    "dominates_descendants",
    "extended_ancestors",
    "siblings",
    "theorem3_condition",
    "theorem3_constants",
]


class _Index:
    """Integer view of a linted graph: node ``i`` is the ``i``-th in layer order (parents come first)."""

    def __init__(self, g: Graph) -> None:
        d = g.nx
        self.names = [v for layer in g.layers for v in layer]
        self.index = {v: i for i, v in enumerate(self.names)}
        self.parent_lists: list[list[int]] = [[self.index[p] for p in d.predecessors(v)] for v in self.names]
        self.child_lists: list[list[int]] = [[] for _ in self.names]
        for i, ps in enumerate(self.parent_lists):
            for j in ps:
                self.child_lists[j].append(i)
        self.layer_of = [g.layer_of(v) for v in self.names]
        self._dominating: list[bool] | None = None

    def dominating(self) -> list[bool]:
        """For every node, whether it dominates its descendants (see :func:`dominates_descendants`).

        Node ``v`` does iff every descendant of ``v`` is dominated by ``v`` (every path from a source
        passes through ``v``), iff no edge leaves ``v``'s subtree of the dominator tree. An edge
        ``x → y`` leaves exactly the subtrees of the tree path from ``x`` up to (not including)
        ``idom(y)``; marking ``+1`` at ``x`` and ``−1`` at ``idom(y)`` and summing over subtrees counts,
        for every node, the edges that leave its subtree.
        """
        if self._dominating is None:
            idom = _immediate_dominators(self.parent_lists)
            n = len(self.names)
            cover = [0] * (n + 1)  # slot n: the virtual root above all sources
            for y, ps in enumerate(self.parent_lists):
                for x in ps:
                    cover[x] += 1
                    cover[idom[y]] -= 1
            for v in range(n - 1, -1, -1):  # a node's immediate dominator comes before it
                cover[idom[v]] += cover[v]
            self._dominating = [c == 0 for c in cover[:n]]
        return self._dominating


def _immediate_dominators(parent_lists: list[list[int]]) -> list[int]:
    """Immediate dominators of a DAG whose nodes are numbered parents-first, under a virtual root
    (index ``n``) above every source: ``idom(v)`` is the lowest common ancestor of ``v``'s parents in the
    dominator tree. Lowest common ancestors by binary lifting: ``O((V + E) log V)``."""
    n = len(parent_lists)
    root = n
    levels = max(1, (n + 1).bit_length())
    depth = [0] * (n + 1)
    up = [[root] * (n + 1) for _ in range(levels)]  # up[k][v]: the 2^k-th dominator above v
    idom = [root] * n

    def lca(a: int, b: int) -> int:
        if depth[a] < depth[b]:
            a, b = b, a
        diff = depth[a] - depth[b]
        k = 0
        while diff:
            if diff & 1:
                a = up[k][a]
            diff >>= 1
            k += 1
        if a == b:
            return a
        for k in range(levels - 1, -1, -1):
            if up[k][a] != up[k][b]:
                a, b = up[k][a], up[k][b]
        return up[0][a]

    for v, ps in enumerate(parent_lists):
        if ps:
            dom = ps[0]
            for p in ps[1:]:
                if dom == root:
                    break
                dom = lca(dom, p)
        else:
            dom = root
        idom[v] = dom
        depth[v] = depth[dom] + 1
        up[0][v] = dom
        for k in range(1, levels):
            up[k][v] = up[k - 1][up[k - 1][v]]
    return idom


class _Bits:
    """Bitset view of a linted graph: node ``i`` is bit ``i`` in layer order."""

    def __init__(self, g: Graph) -> None:
        d = g.nx
        self.names = [v for layer in g.layers for v in layer]
        self.index = {v: i for i, v in enumerate(self.names)}
        self.parents = [0] * len(self.names)
        self.children = [0] * len(self.names)
        self.parent_lists: list[list[int]] = [[] for _ in self.names]
        for v, i in self.index.items():
            for p in d.predecessors(v):
                j = self.index[p]
                self.parents[i] |= 1 << j
                self.children[j] |= 1 << i
                self.parent_lists[i].append(j)
        self.layer_of = [g.layer_of(v) for v in self.names]
        self._sib: list[int | None] = [None] * len(self.names)
        self._an: list[int | None] = [None] * len(self.names)
        self._up_cache: list[int | None] = [None] * len(self.names)

    def names_of(self, bits: int) -> frozenset[str]:
        out = []
        while bits:
            low = bits & -bits
            out.append(self.names[low.bit_length() - 1])
            bits ^= low
        return frozenset(out)

    @staticmethod
    def members(bits: int) -> list[int]:
        out = []
        while bits:
            low = bits & -bits
            out.append(low.bit_length() - 1)
            bits ^= low
        return out

    def sib(self, i: int) -> int:
        cached = self._sib[i]
        if cached is None:
            bits = 1 << i
            for p in self.parent_lists[i]:
                bits |= self.children[p]
            cached = self._sib[i] = bits
        return cached

    def an_sib(self, i: int) -> int:
        """Eq. 12, iteratively: nodes are in layer order, so parents come first."""
        if self._an[i] is not None:
            return self._an[i]  # type: ignore[return-value]
        if not self.parent_lists[i]:
            return 0
        # fill every node of earlier layers that this one can reach, in index order
        for j in range(i + 1):
            if self._an[j] is None:
                self._an[j] = self._compute_an(j)
        return self._an[i]  # type: ignore[return-value]

    def _up(self, i: int) -> int:
        """Union of ``an_sib`` over the parents of node ``i`` (memoised)."""
        cached = self._up_cache[i]
        if cached is None:
            bits = 0
            for p in self.parent_lists[i]:
                an = self._an[p]
                bits |= an if an is not None else self._compute_an(p)
            cached = self._up_cache[i] = bits
        return cached

    def _compute_an(self, i: int) -> int:
        if not self.parent_lists[i]:
            return 0
        sib = self.sib(i)
        bits = sib
        for s in self.members(sib):
            bits |= self._up(s)
        return bits


#: The bitset and integer views of each derived structure (dropped with it when the graph changes).
_BITS: weakref.WeakKeyDictionary[Structure, _Bits] = weakref.WeakKeyDictionary()
_INDEX: weakref.WeakKeyDictionary[Structure, _Index] = weakref.WeakKeyDictionary()


def _bits(g: Graph) -> _Bits:
    structure = g.structure
    if structure not in _BITS:
        _BITS[structure] = _Bits(g)
    return _BITS[structure]


def _index(g: Graph) -> _Index:
    structure = g.structure
    if structure not in _INDEX:
        _INDEX[structure] = _Index(g)
    return _INDEX[structure]


def _known(g: Graph, name: str) -> None:
    if name not in g.nx:
        raise GraphError(f"no node named '{name}'", node=name, fix="check the spelling; neurons of arrays are name[i]")


def siblings(graph: Graph, name: str) -> frozenset[str]:
    """Sibling set of a node (eq. 11): nodes of its layer sharing a parent with it, itself included.

    Parameters
    ----------
    graph : Graph
    name : str
        A node or neuron (``array[i]``). A source's sibling set is ``{name}``.

    Returns
    -------
    frozenset of str

    Examples
    --------
    >>> from sggraph import Graph
    >>> g = Graph(); g.add_node("z1", 1); g.add_node("z2", 1)
    >>> g.add_node("a", 1, ["z1"]); g.add_node("b", 1, ["z1", "z2"]); g.add_node("c", 1, ["z2"])
    >>> sorted(siblings(g, "a")), sorted(siblings(g, "b"))
    (['a', 'b'], ['a', 'b', 'c'])
    """
    b = _bits(graph)
    _known(graph, name)
    return b.names_of(b.sib(b.index[name]))


def extended_ancestors(graph: Graph, name: str) -> frozenset[str]:
    """Sibling-extended ancestor set ``an_sib(v)`` (Definition 4, eq. 12).

    ``an_sib(v) = (∪_{v⁻ ∈ pa(sib(v))} an_sib(v⁻)) ∪ sib(v)``, and empty for sources.
    Sources therefore never belong to it.

    Parameters
    ----------
    graph : Graph
    name : str
        A node or neuron.

    Returns
    -------
    frozenset of str

    Examples
    --------
    >>> from sggraph import Graph
    >>> g = Graph(); g.add_node("z1", 1); g.add_node("z2", 1)
    >>> g.add_node("a", 1, ["z1"]); g.add_node("b", 1, ["z2"]); g.add_node("y", 1, ["a"])
    >>> sorted(extended_ancestors(g, "y")), sorted(extended_ancestors(g, "z1"))
    (['a', 'y'], [])
    """
    b = _bits(graph)
    _known(graph, name)
    return b.names_of(b.an_sib(b.index[name]))


def dominates_descendants(graph: Graph, name: str) -> bool:
    """Whether every parent of every descendant of ``name`` is ``name`` or one of its descendants.

    >>> from sggraph import Graph
    >>> g = Graph(); g.add_node("z", 1); g.add_node("x", 2, ["z"]); g.add_node("e", 1, ["x"])
    >>> dominates_descendants(g, "x")
    True
    """
    ix = _index(graph)
    _known(graph, name)
    return ix.dominating()[ix.index[name]]


@attrs.frozen
class ConditionReport:
    """Which of the paper's conditions hold for a graph (Definition 5).

    Attributes
    ----------
    graph_name : str
    a1 : tuple of str
        Terminals with stochastic or contextual feedback (A.1 witnesses).
    a2 : tuple of str
        Stochastic nodes (A.2 witnesses).
    a3 : tuple of str
        Non-source nodes whose parents are not all of the previous layer (A.3 witnesses).
    b : str
        ``"holds"`` when proved structurally, else ``"not_guaranteed"``.
    b_reason : str
        Why (B) was or was not proved.
    regime : str
        The regime in words, naming Theorem 1, 2 or 3.
    """

    graph_name: str
    a1: tuple[str, ...]
    a2: tuple[str, ...]
    a3: tuple[str, ...]
    b: str
    b_reason: str
    regime: str

    @property
    def a(self) -> bool:
        """Whether condition (A) holds (any of A.1–A.3)."""
        return bool(self.a1 or self.a2 or self.a3)

    def to_dict(self) -> dict:
        """JSON-ready mapping with keys ``A1, A2, A3, A, B, B_reason, regime``."""
        return {"graph": self.graph_name, "A1": list(self.a1), "A2": list(self.a2), "A3": list(self.a3),
                "A": self.a, "B": self.b, "B_reason": self.b_reason, "regime": self.regime}

    def __str__(self) -> str:
        def show(ws: tuple[str, ...]) -> str:
            if not ws:
                return "no"
            head = ", ".join(ws[:8]) + (f", ... ({len(ws)} in all)" if len(ws) > 8 else "")
            return f"yes — {head}"

        lines = [f"Conditions of graph '{self.graph_name}'",
                 f"  A.1 stochastic terminal feedback : {show(self.a1)}",
                 f"  A.2 stochastic computation       : {show(self.a2)}",
                 f"  A.3 sparse connectivity          : {show(self.a3)}",
                 f"  (A) holds                        : {'yes' if self.a else 'no'}",
                 f"  (B) local sufficiency            : {self.b.replace('_', ' ')} ({self.b_reason})",
                 f"  Regime: {self.regime}"]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"ConditionReport({self.graph_name!r}, A1={len(self.a1)}, A2={len(self.a2)}, A3={len(self.a3)}, "
                f"A={self.a}, B={self.b!r})")


_T1 = ("Theorem 1 — backpropagation is MSE-optimal among conditionally unbiased gradient estimators "
       "(no synthetic mixture can help)")
_T2 = ("Theorem 2 — oracle synthetic gradients (λ = 0) have MSE no larger than backpropagation at every "
       "node and strictly smaller at some node")
_T3 = ("Theorem 3 (B′) governs: a bias–variance trade-off, with λ* < 1 at a node when eq. 19 holds — "
       "test (B) empirically with the diagnostics")


def _regime(a: bool, b_holds: bool) -> str:
    if b_holds:
        return f"¬(A) ∧ (B): {_T1}." if not a else f"(A) ∧ (B): {_T2}."
    if not a:
        return f"¬(A), (B) not guaranteed: if (B) holds, {_T1}; in general {_T3}."
    return f"(A), (B) not guaranteed: if (B) holds, {_T2}; in general {_T3}."


def check_conditions(graph: Graph) -> ConditionReport:
    """Check conditions A.1, A.2, A.3 and the structural sufficient condition for (B).

    (B) is proved when every non-source node dominates its descendants (every parent of
    a descendant of v is v or a descendant of v) and no terminal has contextual feedback:
    then ``g_v`` is a function of ``x_v`` and of noise independent of everything upstream.

    Parameters
    ----------
    graph : Graph

    Returns
    -------
    ConditionReport

    Examples
    --------
    >>> from sggraph import Graph
    >>> g = Graph("experts"); g.add_node("z", 4); g.add_node("x", 4, ["z"])
    >>> g.add_node("e1", 1, ["x"]); g.add_node("e2", 1, ["x"]); g.set_feedback("e1", "stochastic")
    >>> r = check_conditions(g)
    >>> r.to_dict()["A1"], r.a, r.b
    (['e1'], True, 'holds')
    >>> r.regime.startswith("(A) ∧ (B): Theorem 2")
    True
    """
    ix = _index(graph)
    d = graph.nx
    terminals = set(graph.terminals)
    a1 = tuple(v for v in ix.names if v in terminals and graph.feedback(v) in ("stochastic", "contextual"))
    a2 = tuple(v for v in ix.names if d.nodes[v]["stochastic"])
    layer_size: dict[int, int] = {}
    for lay in ix.layer_of:
        layer_size[lay] = layer_size.get(lay, 0) + 1
    # every parent sits in the previous layer (the layer rule), so "all of it" is "as many as it holds"
    a3 = tuple(v for i, v in enumerate(ix.names)
               if ix.parent_lists[i] and len(ix.parent_lists[i]) != layer_size.get(ix.layer_of[i] - 1, 0))
    contextual = [v for v in ix.names if v in terminals and graph.feedback(v) == "contextual"]
    dominating = ix.dominating()
    offender = next((v for i, v in enumerate(ix.names) if ix.parent_lists[i] and not dominating[i]), None)
    if contextual:
        b_holds, reason = False, f"terminal '{contextual[0]}' has contextual feedback"
    elif offender is not None:
        b_holds, reason = False, f"node '{offender}' does not dominate its descendants"
    else:
        b_holds, reason = True, "every node dominates its descendants and no feedback is contextual"
    return ConditionReport(graph.name, a1, a2, a3, "holds" if b_holds else "not_guaranteed", reason,
                           _regime(bool(a1 or a2 or a3), b_holds))


def theorem3_constants(graph: Graph, jacobian_bound: float, lambdas: Mapping[str, float] | float = 1.0
                       ) -> dict[str, float]:
    """The constants ``c_u`` of eq. 20: ``c_u = J Σ_{u⁺ ∈ ch(u)} (1 − λ_u + c_{u⁺})``, ``c = 0`` at terminals.

    Parameters
    ----------
    graph : Graph
    jacobian_bound : float
        ``J``, a bound on the spectral norms of all local Jacobians.
    lambdas : float or mapping
        ``λ_u`` per node (the paper's per-parent grouping); a float applies to all.

    Examples
    --------
    >>> from sggraph import Graph
    >>> g = Graph(); g.add_node("z", 1); g.add_node("a", 1, ["z"]); g.add_node("y", 1, ["a"])
    >>> theorem3_constants(g, 2.0, {"a": 0.5, "z": 1.0})
    {'z': 2.0, 'a': 1.0, 'y': 0.0}
    """
    ix = _index(graph)
    c = [0.0] * len(ix.names)
    for i in range(len(ix.names) - 1, -1, -1):
        lam = lambdas if isinstance(lambdas, (int, float)) else lambdas.get(ix.names[i], 1.0)
        c[i] = jacobian_bound * sum(1.0 - lam + c[k] for k in sorted(ix.child_lists[i]))
    return {v: c[i] for i, v in enumerate(ix.names)}


def theorem3_condition(tr_cov_p: float, tr_cov_s: float, n: int, jacobian_bound: float, epsilon: float,
                       child_constants: list[float]) -> bool:
    """Eq. 19, the sufficient condition for ``λ*_v < 1``.

    ``(tr Cov(p̃) − tr Cov(s̃)) / n > (J² (ε + ε′) Σ_{v⁺ ∈ ch(v)} (1 + c_{v⁺}))²``

    Parameters
    ----------
    tr_cov_p, tr_cov_s : float
        Total variances of the backpropagated and synthetic parameter-gradient components.
    n : int
        Samples per estimate.
    jacobian_bound : float
        ``J``.
    epsilon : float
        ``ε + ε′`` (sufficiency gap plus generator error).
    child_constants : list of float
        ``c_{v⁺}`` for the node's children (from :func:`theorem3_constants`).

    >>> theorem3_condition(10.0, 1.0, 1, 1.0, 0.1, [0.0])
    True
    """
    lhs = (tr_cov_p - tr_cov_s) / n
    rhs = (jacobian_bound ** 2 * epsilon * sum(1.0 + c for c in child_constants)) ** 2
    return lhs > rhs
