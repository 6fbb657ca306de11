"""The torch-free layered DAG that every sggraph pass works on.

A :class:`Graph` holds *nodes* (a name, a dimension, an ordered tuple of
parents, a layer, a stochasticity flag, an optional built-in function name)
and *node arrays* (``count`` neurons of one template, wired to a parent array
by a sparse ``[count, fan_in]`` table). Analysis and drawing see arrays
expanded to neurons named ``name[i]``; the compiler keeps them vectorised.

The layer rule is the paper's: every parent of a node in layer ``l`` sits in
layer ``l - 1``. Sources (nodes without parents) sit in layer 0 unless a layer
is given; every other node's layer is inferred as one more than its parents'.

Examples
--------
>>> g = Graph("tiny")
>>> g.add_node("z", dim=3)
>>> g.add_node("h", dim=4, parents=["z"], fn="tanh")
>>> g.add_node("y", dim=1, parents=["h"])
>>> g.set_feedback("y", "stochastic")
>>> g.layers
[['z'], ['h'], ['y']]
>>> g.parents("y"), g.children("z")
(('h',), ('h',))
>>> g
Graph('tiny', nodes=3, arrays=0, layers=3)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import attrs
import networkx as nx
import numpy as np

from .exceptions import GraphError

__all__ = ["FEEDBACK_KINDS", "NODE_FUNCTIONS", "Graph", "Node", "NodeArray", "neuron_name"]

#: Feedback kinds of a terminal node (condition A.1).
FEEDBACK_KINDS = ("deterministic", "stochastic", "contextual")
#: Built-in node functions a YAML file may name with ``fn:``.
NODE_FUNCTIONS = ("linear", "tanh", "identity", "dot")


def neuron_name(array: str, index: int) -> str:
    """Name of neuron ``index`` of ``array``.

    >>> neuron_name("h1", 7)
    'h1[7]'
    """
    return f"{array}[{index}]"


@attrs.frozen
class Node:
    """One node of a graph.

    Attributes
    ----------
    name : str
        Unique name.
    dim : int
        Dimension ``d_v`` of the node's output ``x_v``.
    parents : tuple of str
        Parent names in declared order; ``z_v`` concatenates their outputs in this order.
    layer : int or None
        Declared layer (only needed for sources outside layer 0).
    stochastic : bool
        Whether the node's computation is stochastic (condition A.2).
    fn : str or None
        Built-in function (``linear``, ``tanh``, ``identity``, ``dot``) or None.
    init_std : float or None
        Standard deviation of the built-in function's normal weight init (None: its default).
    """

    name: str
    dim: int
    parents: tuple[str, ...] = ()
    layer: int | None = None
    stochastic: bool = False
    fn: str | None = None
    init_std: float | None = None


@attrs.frozen
class NodeArray:
    """An array of ``count`` neurons of one template, each of dimension ``dim``.

    Attributes
    ----------
    name : str
        Array name; neuron ``i`` is ``name[i]``.
    count, dim : int
        Number of neurons and each neuron's output dimension ``q``.
    parent : str or None
        The parent array (None: the array is an input of ``count`` sources).
    fan_in : int or None
        Parents per neuron (rows of the table).
    seed : int
        Seed of the random table when ``table`` is not given.
    residual : bool
        Whether neuron ``i`` also adds neuron ``i`` of the parent array (same index).
    table : tuple of tuple of int or None
        Explicit parent table of shape ``[count, fan_in]``.
    slots : int
        Number of slots ``M`` of the slot-routing template.
    layer : int or None
        Declared layer (sources only).
    stochastic : bool
        Whether the neurons compute stochastically (A.2).
    """

    name: str
    count: int
    dim: int
    parent: str | None = None
    fan_in: int | None = None
    seed: int = 0
    residual: bool = False
    table: tuple[tuple[int, ...], ...] | None = None
    slots: int = 5
    layer: int | None = None
    stochastic: bool = False

    def parent_table(self, parent_count: int) -> np.ndarray:
        """The ``[count, fan_in]`` int64 table of parent indices.

        Random tables draw ``fan_in`` distinct parents per neuron with
        ``numpy.random.default_rng(seed)``, so the same seed gives the same table.

        >>> NodeArray("h", count=3, dim=2, parent="p", fan_in=2, seed=0).parent_table(4).shape
        (3, 2)
        """
        if self.table is not None:
            return np.asarray(self.table, dtype=np.int64).reshape(self.count, -1)
        if self.fan_in is None:
            return np.zeros((self.count, 0), dtype=np.int64)
        rng = np.random.default_rng(self.seed)
        keys = rng.random((self.count, parent_count))
        return np.argsort(keys, axis=1)[:, : self.fan_in].astype(np.int64)

    @property
    def is_source(self) -> bool:
        return self.parent is None


def _check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not name:
        raise GraphError(f"{what} name must be a non-empty string, got {name!r}",
                         fix="give every node a unique non-empty name")
    if "[" in name or "]" in name:
        raise GraphError(f"{what} name {name!r} may not contain brackets",
                         node=name, fix="brackets are reserved for neurons of arrays (name[i]); rename it")
    return name


def _check_dim(name: str, dim: object, what: str = "dim") -> int:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
        raise GraphError(f"{what} must be an integer, got {dim!r}", node=name,
                         fix=f"set {what} to a positive integer")
    if dim <= 0:
        raise GraphError(f"{what} must be positive, got {dim}", node=name,
                         fix=f"set {what} to a positive integer")
    return int(dim)


class Graph:
    """A layered DAG of nodes and node arrays (torch-free).

    Parameters
    ----------
    name : str
        The graph's name (used in reports and drawings).

    Notes
    -----
    Mutating methods invalidate cached analysis. :meth:`lint` runs before every
    pass (analysis, compile, drawing) and raises :class:`~sggraph.GraphError`
    naming the node, the YAML file and line where known, and the fix.

    Examples
    --------
    >>> g = Graph("sparse")
    >>> g.add_array("pixels", count=16, dim=1)
    >>> g.add_array("h", count=8, dim=2, parents="pixels", fan_in=3, seed=1)
    >>> len(g.parents("h[0]")), g.layers[1][:2]
    (3, ['h[0]', 'h[1]'])
    """

    def __init__(self, name: str = "graph") -> None:
        self.name = name
        self._nodes: dict[str, Node] = {}
        self._arrays: dict[str, NodeArray] = {}
        self._feedback: dict[str, str] = {}
        #: where each node/array was declared: name -> (file, line)
        self.sources_of: dict[str, tuple[str | None, int | None]] = {}
        self._cache: dict[str, object] = {}

    # ------------------------------------------------------------------ build
    def _claim(self, name: str, what: str) -> None:
        _check_name(name, what)
        if name in self._nodes or name in self._arrays:
            raise GraphError(f"duplicate name '{name}'", node=name,
                             fix="every node and array needs a unique name; rename one of them")

    def add_node(self, name: str, dim: int, parents: Sequence[str] = (), *, layer: int | None = None,
                 stochastic: bool = False, fn: str | None = None, init_std: float | None = None) -> None:
        """Add a node.

        Parameters
        ----------
        name : str
            Unique name.
        dim : int
            Output dimension (positive).
        parents : sequence of str
            Parent names in order (they may be added later; :meth:`lint` checks them).
            A neuron of an array may be named as ``array[i]``; a whole array name reads
            the array flattened (``count * dim`` columns; its edges share one λ).
        layer : int, optional
            Layer of a source node (default 0). Non-source layers are inferred.
        stochastic : bool
            The node's computation is stochastic (A.2).
        fn : {'linear', 'tanh', 'identity', 'dot'}, optional
            Built-in function used by :func:`sggraph.compile` when no module is given.
        init_std : float, optional
            Standard deviation of the built-in function's normal weight init (``dot``: its keys;
            ``linear``/``tanh``: the weights, biases zero). Positive and finite.

        >>> g = Graph(); g.add_node("z", 2); g.add_node("y", 1, ["z"], fn="linear")
        >>> g.node("y").fn
        'linear'
        """
        self._claim(name, "node")
        dim = _check_dim(name, dim)
        if isinstance(parents, str):
            parents = (parents,)
        parents = tuple(parents)
        if len(set(parents)) != len(parents):
            raise GraphError(f"parent listed twice in {list(parents)}", node=name,
                             fix="list each parent once")
        if fn is not None and fn not in NODE_FUNCTIONS:
            raise GraphError(f"unknown fn '{fn}'", node=name,
                             fix=f"use one of {', '.join(NODE_FUNCTIONS)}, or pass a module in compile(functions=...)")
        if layer is not None and parents:
            raise GraphError("a layer may only be declared for a source node", node=name,
                             fix="remove `layer`; a non-source node's layer is one more than its parents'")
        if init_std is not None:
            if fn is None:
                raise GraphError("init_std is set but the node has no built-in fn", node=name,
                                 fix="add fn: linear|tanh|dot, or remove init_std (a module passed to compile "
                                     "initialises itself)")
            if isinstance(init_std, bool) or not isinstance(init_std, (int, float)) \
                    or not math.isfinite(init_std) or init_std <= 0:
                raise GraphError(f"init_std must be a positive finite number, got {init_std!r}", node=name,
                                 fix="use e.g. init_std: 0.1")
            init_std = float(init_std)
        self._nodes[name] = Node(name, dim, parents, layer, bool(stochastic), fn, init_std)
        self._cache.clear()

    def add_array(self, name: str, count: int, dim: int, parents: str | None = None, fan_in: int | None = None,
                  seed: int = 0, residual: bool = False, *, table: Sequence[Sequence[int]] | None = None,
                  slots: int = 5, layer: int | None = None, stochastic: bool = False) -> None:
        """Add an array of ``count`` neurons named ``name[0] ... name[count-1]``.

        Parameters
        ----------
        name : str
            Array name.
        count, dim : int
            Number of neurons and each neuron's dimension.
        parents : str, optional
            Parent array; omit for an input array (``count`` sources).
        fan_in : int, optional
            Parents per neuron, drawn at random (seeded) unless ``table`` is given.
        seed : int
            Seed of the random table.
        residual : bool
            Neuron ``i`` also adds neuron ``i`` of the parent array (needs equal count and dim).
        table : sequence of sequences of int, optional
            Explicit ``[count, fan_in]`` parent table.
        slots : int
            Slots ``M`` of the slot-routing template.
        layer : int, optional
            Layer of an input array.
        stochastic : bool
            Stochastic neurons (A.2).

        >>> g = Graph(); g.add_array("x", 4, 1); g.add_array("h", 3, 2, parents="x", table=[[0, 1], [1, 2], [2, 3]])
        >>> g.parents("h[2]")
        ('x[2]', 'x[3]')
        """
        self._claim(name, "array")
        count = _check_dim(name, count, "count")
        dim = _check_dim(name, dim)
        slots = _check_dim(name, slots, "slots")
        tbl = None
        if table is not None:
            tbl = tuple(tuple(int(i) for i in row) for row in table)
            if len(tbl) != count or len({len(r) for r in tbl}) > 1:
                raise GraphError(f"table must have shape [count={count}, fan_in]", node=name,
                                 fix="give one row per neuron, all rows of the same length")
            if fan_in is not None and tbl and len(tbl[0]) != fan_in:
                raise GraphError(f"fan_in={fan_in} disagrees with the table's {len(tbl[0])} columns",
                                 node=name, fix="drop fan_in or make it match the table")
            fan_in = len(tbl[0]) if tbl else 0
        if parents is None:
            if fan_in is not None or residual or tbl is not None:
                raise GraphError("fan_in, table and residual need a parent array", node=name,
                                 fix="name the parent array with `parents`, or drop fan_in/table/residual")
        else:
            if layer is not None:
                raise GraphError("a layer may only be declared for an input array", node=name,
                                 fix="remove `layer`; it is inferred from the parent array")
            if fan_in is None and not residual:
                raise GraphError("an array with a parent needs fan_in (or a table, or residual)", node=name,
                                 fix="set fan_in to the number of parents per neuron")
            if fan_in is not None:
                fan_in = _check_dim(name, fan_in, "fan_in")
        self._arrays[name] = NodeArray(name, count, dim, parents, fan_in, int(seed), bool(residual), tbl,
                                       slots, layer, bool(stochastic))
        self._cache.clear()

    def set_feedback(self, name: str, kind: str) -> None:
        """Declare the external feedback kind of a terminal node or array (A.1).

        Parameters
        ----------
        name : str
            A terminal node, or an array whose neurons are terminal.
        kind : {'deterministic', 'stochastic', 'contextual'}
            ``deterministic``: a function of the node's own output (the default);
            ``stochastic``: own output plus independent noise; ``contextual``: depends
            on other variables (a label, a reward that depends on the context).

        >>> g = Graph(); g.add_node("z", 1); g.add_node("y", 1, ["z"]); g.set_feedback("y", "contextual")
        >>> g.feedback("y")
        'contextual'
        """
        if kind not in FEEDBACK_KINDS:
            raise GraphError(f"unknown feedback kind '{kind}'", node=name,
                             fix=f"use one of {', '.join(FEEDBACK_KINDS)}")
        if name not in self._nodes and name not in self._arrays:
            raise GraphError(f"feedback declared for unknown node '{name}'", node=name,
                             fix="declare feedback only for nodes of the graph")
        self._feedback[name] = kind
        self._cache.clear()

    # ------------------------------------------------------------ read access
    @property
    def nodes(self) -> Mapping[str, Node]:
        """Declared plain nodes by name (arrays are in :attr:`arrays`)."""
        return dict(self._nodes)

    @property
    def arrays(self) -> Mapping[str, NodeArray]:
        """Declared node arrays by name."""
        return dict(self._arrays)

    def node(self, name: str) -> Node:
        """The declared plain node ``name``."""
        try:
            return self._nodes[name]
        except KeyError:
            raise GraphError(f"no node named '{name}'", node=name, fix="check the spelling") from None

    def feedback(self, name: str) -> str:
        """Feedback kind of a node or neuron (``deterministic`` unless declared)."""
        base = name.split("[", 1)[0]
        return self._feedback.get(name, self._feedback.get(base, "deterministic"))

    @property
    def feedback_kinds(self) -> Mapping[str, str]:
        """Declared (non-default) feedback kinds by node or array name."""
        return dict(self._feedback)

    def where(self, name: str) -> tuple[str | None, int | None]:
        """``(file, line)`` where ``name`` was declared, or ``(None, None)``."""
        return self.sources_of.get(name.split("[", 1)[0], (None, None))

    def _error(self, message: str, node: str, fix: str, at: str | None = None) -> GraphError:
        file, line = self.sources_of[at] if at in self.sources_of else self.where(node)
        return GraphError(message, node=node, file=file, line=line, fix=fix)

    def array_table(self, name: str) -> np.ndarray:
        """The realised ``[count, fan_in]`` parent table of array ``name``."""
        arr = self._arrays[name]
        parent_count = self._arrays[arr.parent].count if arr.parent in self._arrays else 0
        key = f"table:{name}"
        if key not in self._cache:
            self._cache[key] = arr.parent_table(parent_count)
        return self._cache[key]  # type: ignore[return-value]

    # ------------------------------------------------------------- structure
    @property
    def nx(self) -> nx.DiGraph:
        """The expanded graph as a :class:`networkx.DiGraph` (do not mutate).

        Node attributes: ``dim``, ``layer``, ``stochastic``, ``array`` (array name or None),
        ``index`` (neuron index or None), ``feedback``.
        """
        if "nx" not in self._cache:
            self.lint()
        return self._cache["nx"]  # type: ignore[return-value]

    def _build_nx(self) -> nx.DiGraph:
        d = nx.DiGraph()
        for n in self._nodes.values():
            d.add_node(n.name, dim=n.dim, stochastic=n.stochastic, array=None, index=None, parents=n.parents)
        for a in self._arrays.values():
            for i in range(a.count):
                d.add_node(neuron_name(a.name, i), dim=a.dim, stochastic=a.stochastic, array=a.name, index=i,
                           parents=())
        for a in self._arrays.values():
            if a.parent is None:
                continue
            if a.parent not in self._arrays:
                continue  # reported by lint
            parent = self._arrays[a.parent]
            table = a.parent_table(parent.count)
            for i in range(a.count):
                ps = [neuron_name(a.parent, int(j)) for j in table[i]]
                if a.residual:
                    r = neuron_name(a.parent, i)
                    if r not in ps:
                        ps.append(r)
                d.nodes[neuron_name(a.name, i)]["parents"] = tuple(ps)
        for n in self._nodes.values():
            if any(p in self._arrays for p in n.parents):
                expanded: list[str] = []
                for p in n.parents:
                    if p in self._arrays:
                        expanded.extend(neuron_name(p, i) for i in range(self._arrays[p].count))
                    else:
                        expanded.append(p)
                d.nodes[n.name]["parents"] = tuple(expanded)
        for v, data in d.nodes(data=True):
            for p in data["parents"]:
                if p in d:
                    d.add_edge(p, v)
        return d

    def parents(self, name: str) -> tuple[str, ...]:
        """Parents of ``name`` in declared order (arrays at the neuron level).

        >>> g = Graph(); g.add_node("a", 1); g.add_node("b", 1); g.add_node("c", 1, ["b", "a"])
        >>> g.parents("c")
        ('b', 'a')
        """
        d = self.nx
        if name not in d:
            raise GraphError(f"no node named '{name}'", node=name, fix="check the spelling; neurons are name[i]")
        return tuple(d.nodes[name]["parents"])

    def children(self, name: str) -> tuple[str, ...]:
        """Children of ``name`` (sorted by layer position).

        >>> g = Graph(); g.add_node("a", 1); g.add_node("b", 1, ["a"]); g.add_node("c", 1, ["a"])
        >>> g.children("a")
        ('b', 'c')
        """
        d = self.nx
        if name not in d:
            raise GraphError(f"no node named '{name}'", node=name, fix="check the spelling; neurons are name[i]")
        order = self._cache["order"]
        return tuple(sorted(d.successors(name), key=order.__getitem__))  # type: ignore[index]

    @property
    def layers(self) -> list[list[str]]:
        """Node names per layer, layer 0 first (arrays expanded, in declaration order).

        >>> g = Graph(); g.add_node("z", 1); g.add_node("e", 1, layer=1); g.add_node("y", 1, ["z"])
        >>> g.layers
        [['z'], ['e', 'y']]
        """
        self.lint()
        return [list(layer) for layer in self._cache["layers"]]  # type: ignore[union-attr]

    def layer_of(self, name: str) -> int:
        """Layer index of a node or neuron."""
        self.lint()
        return self._cache["layer_of"][name]  # type: ignore[index]

    @property
    def sources(self) -> list[str]:
        """Nodes without parents (arrays expanded)."""
        d = self.nx
        return [v for v in self._cache["order"] if d.in_degree(v) == 0]  # type: ignore[union-attr]

    @property
    def terminals(self) -> list[str]:
        """Non-source nodes without children (arrays expanded)."""
        d = self.nx
        return [v for v in self._cache["order"] if d.out_degree(v) == 0 and d.in_degree(v) > 0]  # type: ignore

    def block_layers(self) -> dict[str, int]:
        """Layer of every declared node and array (an array's neurons share a layer)."""
        self.lint()
        lo = self._cache["layer_of"]
        out = {n: lo[n] for n in self._nodes}  # type: ignore[index]
        out.update({a: lo[neuron_name(a, 0)] for a in self._arrays})  # type: ignore[index]
        return out

    def __len__(self) -> int:
        return len(self._nodes) + sum(a.count for a in self._arrays.values())

    def __contains__(self, name: object) -> bool:
        return name in self._nodes or name in self._arrays

    # ------------------------------------------------------------------ lint
    def lint(self) -> None:
        """Check the graph and cache its expanded structure; raise :class:`GraphError` if invalid.

        Checks: non-empty; parents exist; no cycle; parent arrays exist and have enough
        neurons for ``fan_in``; tables in range; residual arrays match; every parent of
        a node in layer ``l`` is in layer ``l - 1``; feedback only on terminal nodes.

        >>> g = Graph("bad"); g.add_node("y", 1, ["nope"])
        >>> g.lint()
        Traceback (most recent call last):
        ...
        sggraph.exceptions.GraphError: node 'y': unknown parent 'nope'. Fix: declare a node named 'nope', or correct the spelling (known: y).
        """
        if "layers" in self._cache:
            return
        if not self._nodes and not self._arrays:
            file, line = self.sources_of.get("", (None, None))
            raise GraphError(f"graph '{self.name}' is empty", file=file, line=line,
                             fix="declare at least one node under `nodes:` or one array under `arrays:`")
        known = set(self._nodes) | set(self._arrays)
        for n in self._nodes.values():
            for p in n.parents:
                base, _, rest = p.partition("[")
                if p in self._nodes:
                    continue
                if rest and base in self._arrays:
                    idx = rest.rstrip("]")
                    if idx.isdigit() and int(idx) < self._arrays[base].count:
                        continue
                    raise self._error(f"parent '{p}' is out of range of array '{base}' "
                                      f"({self._arrays[base].count} neurons)", n.name,
                                      f"use an index below {self._arrays[base].count}")
                if p in self._arrays:
                    continue  # a whole array: z_v reads it flattened, [B, count * dim]
                raise self._error(f"unknown parent '{p}'", n.name,
                                  f"declare a node named '{p}', or correct the spelling "
                                  f"(known: {', '.join(sorted(known)[:12])})")
        for a in self._arrays.values():
            if a.parent is None:
                continue
            if a.parent not in self._arrays:
                what = "a plain node" if a.parent in self._nodes else "unknown"
                raise self._error(f"parent array '{a.parent}' is {what}", a.name,
                                  "an array's parent must be another array (declare the input as an array "
                                  "with no parents, e.g. {name: pixels, count: 784, dim: 1})")
            parent = self._arrays[a.parent]
            if a.fan_in is not None and a.fan_in > parent.count:
                raise self._error(f"fan_in={a.fan_in} is larger than parent array '{parent.name}' "
                                  f"({parent.count} neurons)", a.name,
                                  f"use fan_in <= {parent.count}, or a larger parent array")
            if a.table is not None and a.table and (min(min(r) for r in a.table) < 0 or
                                                     max(max(r) for r in a.table) >= parent.count):
                raise self._error(f"table index out of range of parent array '{parent.name}' "
                                  f"({parent.count} neurons)", a.name,
                                  f"use indices in 0..{parent.count - 1}")
            if a.table is not None and any(len(set(r)) != len(r) for r in a.table):
                raise self._error("a table row lists the same parent twice", a.name, "list each parent once per row")
            if a.residual and (parent.count != a.count or parent.dim != a.dim):
                raise self._error(f"residual needs the parent array '{parent.name}' to have the same count and dim "
                                  f"({parent.count}x{parent.dim} vs {a.count}x{a.dim})", a.name,
                                  "match count and dim, or set residual: false")
        d = self._build_nx()
        if not nx.is_directed_acyclic_graph(d):
            cycle = nx.find_cycle(d)
            path = " -> ".join([u for u, _ in cycle] + [cycle[0][0]])
            node = cycle[0][1]
            raise self._error(f"the graph has a cycle: {path}", node,
                              "remove one of these parent links; recurrent cells are declared as a cell graph "
                              "and unrolled with sggraph.unroll")
        order = list(d.nodes)
        position = {v: i for i, v in enumerate(order)}
        layer_of: dict[str, int] = {}
        for v in nx.topological_sort(d):
            ps = d.nodes[v]["parents"]
            if not ps:
                declared = self._declared_layer(v)
                layer_of[v] = 0 if declared is None else declared
                continue
            player = {p: layer_of[p] for p in ps}
            lo, hi = min(player.values()), max(player.values())
            if lo != hi:
                a = min(player, key=player.__getitem__)
                b = max(player, key=player.__getitem__)
                raise self._error(
                    f"parents in different layers: '{a}' is in layer {lo} and '{b}' in layer {hi}", v,
                    f"every parent of a node in layer l must be in layer l-1; insert identity relay nodes "
                    f"between '{a}' and '{v}' (Graph.insert_relays() does it), or give the source a `layer`")
            layer_of[v] = hi + 1
        for name in self._feedback:
            members = [name] if name in self._nodes else [neuron_name(name, i) for i in range(self._arrays[name].count)]
            for m in members:
                if d.out_degree(m) > 0:
                    raise self._error(f"feedback declared on a non-terminal node (it has child "
                                      f"'{next(iter(d.successors(m)))}')", name,
                                      "declare feedback only for terminal nodes (nodes without children)",
                                      at=f"feedback:{name}")
                if d.in_degree(m) == 0:
                    raise self._error("feedback declared on a source node", name,
                                      "declare feedback only for terminal nodes (non-source nodes without children)",
                                      at=f"feedback:{name}")
        for v in d:
            d.nodes[v]["layer"] = layer_of[v]
            d.nodes[v]["feedback"] = self.feedback(v) if d.out_degree(v) == 0 and d.in_degree(v) > 0 else None
        n_layers = max(layer_of.values()) + 1
        layers: list[list[str]] = [[] for _ in range(n_layers)]
        for v in order:
            layers[layer_of[v]].append(v)
        for i, layer in enumerate(layers):
            if not layer:  # only a source's declared layer can leave a gap: name the first one above it
                above = next(v for later in layers[i + 1:] for v in later).split("[", 1)[0]
                raise self._error(f"layer {i} is empty (source '{above}' is declared in layer "
                                  f"{self._declared_layer(above)})", above,
                                  f"declare sources in consecutive layers: give '{above}' a layer <= {i}")
        self._cache.update(nx=d, order=position, layer_of=layer_of, layers=layers)

    def _declared_layer(self, v: str) -> int | None:
        if v in self._nodes:
            return self._nodes[v].layer
        base = v.split("[", 1)[0]
        return self._arrays[base].layer if base in self._arrays else None

    # -------------------------------------------------------------- helpers
    def insert_relays(self) -> Graph:
        """Return a copy in which identity relay nodes bridge parents more than one layer up.

        A parent ``p`` of ``v`` in layer ``l_p < l_v - 1`` is replaced by a chain of
        ``identity`` relays ``p@1 -> p@2 -> ...`` so that the layer rule holds. Only plain
        nodes are relayed.

        >>> g = Graph(); g.add_node("z", 1); g.add_node("h", 1, ["z"]); g.add_node("y", 1, ["h", "z"])
        >>> g.insert_relays().parents("y")
        ('h', 'z@1')
        """
        # layers as if every node sat one below its deepest parent
        depth: dict[str, int] = {}
        pending = dict(self._nodes)
        while pending:
            progressed = False
            for name, n in list(pending.items()):
                if all(p in depth for p in n.parents if p in self._nodes):
                    ps = [depth[p] for p in n.parents if p in self._nodes]
                    depth[name] = (max(ps) + 1) if ps else (n.layer or 0)
                    del pending[name]
                    progressed = True
            if not progressed:
                raise self._error("cannot insert relays into a graph with a cycle", next(iter(pending)),
                                  "remove the cycle first")
        out = Graph(self.name)
        out.sources_of = dict(self.sources_of)
        relays: dict[tuple[str, int], str] = {}

        def relay(p: str, k: int) -> str:
            if k == 0:
                return p
            key = (p, k)
            if key not in relays:
                prev = relay(p, k - 1)
                relays[key] = f"{p}@{k}"
                out._nodes[relays[key]] = Node(relays[key], self._nodes[p].dim, (prev,), None, False, "identity")
            return relays[key]

        for name, n in self._nodes.items():
            new_parents = []
            for p in n.parents:
                if p in self._nodes and depth[p] < depth[name] - 1:
                    new_parents.append(relay(p, depth[name] - 1 - depth[p]))
                else:
                    new_parents.append(p)
            out._nodes[name] = attrs.evolve(n, parents=tuple(new_parents))
        out._arrays = dict(self._arrays)
        out._feedback = dict(self._feedback)
        return out

    def copy(self) -> Graph:
        """A deep copy (nodes are immutable, so this copies the containers)."""
        out = Graph(self.name)
        out._nodes = dict(self._nodes)
        out._arrays = dict(self._arrays)
        out._feedback = dict(self._feedback)
        out.sources_of = dict(self.sources_of)
        return out

    # ----------------------------------------------------------- conversion
    def to_dict(self) -> dict:
        """The graph as a plain mapping in the YAML format (see :mod:`sggraph.spec`).

        >>> g = Graph("t"); g.add_node("z", 2); g.add_node("y", 1, ["z"], fn="linear")
        >>> g.to_dict()["nodes"][1]
        {'name': 'y', 'dim': 1, 'parents': ['z'], 'fn': 'linear'}
        """
        from .spec import graph_to_dict

        return graph_to_dict(self)

    @classmethod
    def from_dict(cls, mapping: Mapping, *, file: str | None = None) -> Graph:
        """Build a graph from a mapping in the YAML format.

        >>> g = Graph.from_dict({"name": "t", "nodes": [{"name": "z", "dim": 2},
        ...                                            {"name": "y", "dim": 1, "parents": ["z"]}]})
        >>> g.layers
        [['z'], ['y']]
        """
        from .spec import graph_from_dict

        return graph_from_dict(mapping, file=file)

    @classmethod
    def from_yaml(cls, path: str) -> Graph:
        """Load a graph from a YAML file (errors name the file and line).

        >>> Graph.from_yaml("examples/expert-net.yaml")
        Graph('expert-net', nodes=7, arrays=0, layers=3)
        """
        from .spec import load_yaml

        return load_yaml(path)

    def to_yaml(self) -> str:
        """The graph as YAML text.

        >>> g = Graph("t"); g.add_node("z", 2)
        >>> print(g.to_yaml().strip())
        name: t
        nodes:
        - name: z
          dim: 2
        """
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Graph):
            return NotImplemented
        return (self.name, self._nodes, self._arrays, self._feedback) == (
            other.name, other._nodes, other._arrays, other._feedback)

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by structure: not hashable

    def __repr__(self) -> str:
        try:
            n_layers = len(self.layers)
        except GraphError:
            n_layers = "?"
        return f"Graph({self.name!r}, nodes={len(self)}, arrays={len(self._arrays)}, layers={n_layers})"

