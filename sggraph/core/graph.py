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

import networkx as nx
import numpy as np

from ..exceptions import GraphError
from .checks import check_references, insert_relays
from .nodes import FEEDBACK_KINDS, NODE_FUNCTIONS, Node, NodeArray, check_dim, check_layer, check_name, neuron_name
from .spec import graph_from_dict, graph_to_dict, load_yaml
from .structure import Structure, derive_structure

__all__ = ["FEEDBACK_KINDS", "NODE_FUNCTIONS", "Graph", "Node", "NodeArray", "neuron_name"]

class Graph:
    """A layered DAG of nodes and node arrays (torch-free).

    Parameters
    ----------
    name : str
        The graph's name (used in reports and drawings).

    Notes
    -----
    Mutating methods drop the derived :attr:`structure` (and with it cached analysis). :meth:`lint` runs before every
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
        self._structure: Structure | None = None
        self._tables: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ build
    def _claim(self, name: str, what: str) -> None:
        check_name(name, what)
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
        fn : {'linear', 'tanh', 'identity', 'dot', 'embedding', 'slot_actor'}, optional
            Built-in function used by :func:`sggraph.compile` when no module is given.
        init_std : float, optional
            Standard deviation of the built-in function's normal weight init (``dot``: its keys;
            ``linear``/``tanh``: the weights, biases zero). Positive and finite.

        >>> g = Graph(); g.add_node("z", 2); g.add_node("y", 1, ["z"], fn="linear")
        >>> g.node("y").fn
        'linear'
        """
        self._claim(name, "node")
        dim = check_dim(name, dim)
        layer = check_layer(name, layer)
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
        self._invalidate()

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
        count = check_dim(name, count, "count")
        layer = check_layer(name, layer)
        dim = check_dim(name, dim)
        slots = check_dim(name, slots, "slots")
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
                fan_in = check_dim(name, fan_in, "fan_in")
        self._arrays[name] = NodeArray(name, count, dim, parents, fan_in, int(seed), bool(residual), tbl,
                                       slots, layer, bool(stochastic))
        self._invalidate()

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
        self._invalidate()

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

    def error(self, message: str, node: str, fix: str, at: str | None = None) -> GraphError:
        file, line = self.sources_of[at] if at in self.sources_of else self.where(node)
        return GraphError(message, node=node, file=file, line=line, fix=fix)

    def array_table(self, name: str) -> np.ndarray:
        """The realised ``[count, fan_in]`` parent table of array ``name``."""
        arr = self._arrays[name]
        parent_count = self._arrays[arr.parent].count if arr.parent in self._arrays else 0
        if name not in self._tables:
            self._tables[name] = arr.parent_table(parent_count)
        return self._tables[name]

    # ------------------------------------------------------------- structure
    def _invalidate(self) -> None:
        self._structure = None
        self._tables = {}

    @property
    def structure(self) -> Structure:
        """The derived structure (expanded DAG, order, layers): built once per graph state, immutable.

        Raises :class:`~sggraph.GraphError` when the graph is invalid (see :meth:`lint`).
        """
        if self._structure is None:
            self.lint()
        assert self._structure is not None
        return self._structure

    @property
    def nx(self) -> nx.DiGraph:
        """The expanded graph as a :class:`networkx.DiGraph` (do not mutate).

        Node attributes: ``dim``, ``layer``, ``stochastic``, ``array`` (array name or None),
        ``index`` (neuron index or None), ``feedback``.
        """
        return self.structure.nx

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
        order = self.structure.position
        return tuple(sorted(d.successors(name), key=order.__getitem__))

    @property
    def layers(self) -> list[list[str]]:
        """Node names per layer, layer 0 first (arrays expanded, in declaration order).

        >>> g = Graph(); g.add_node("z", 1); g.add_node("e", 1, layer=1); g.add_node("y", 1, ["z"])
        >>> g.layers
        [['z'], ['e', 'y']]
        """
        return [list(layer) for layer in self.structure.layers]

    def layer_of(self, name: str) -> int:
        """Layer index of a node or neuron."""
        return self.structure.layer_of[name]

    @property
    def sources(self) -> list[str]:
        """Nodes without parents (arrays expanded)."""
        d = self.nx
        return [v for v in self.structure.position if d.in_degree(v) == 0]

    @property
    def terminals(self) -> list[str]:
        """Non-source nodes without children (arrays expanded)."""
        d = self.nx
        return [v for v in self.structure.position if d.out_degree(v) == 0 and d.in_degree(v) > 0]

    def block_layers(self) -> dict[str, int]:
        """Layer of every declared node and array (an array's neurons share a layer)."""
        lo = self.structure.layer_of
        out = {n: lo[n] for n in self._nodes}
        out.update({a: lo[neuron_name(a, 0)] for a in self._arrays})
        return out

    def __len__(self) -> int:
        return len(self._nodes) + sum(a.count for a in self._arrays.values())

    def __contains__(self, name: object) -> bool:
        return name in self._nodes or name in self._arrays

    # ------------------------------------------------------------------ lint
    def lint(self) -> None:
        """Check the graph; raise :class:`GraphError` if invalid.

        The checks that need the expanded DAG (cycles, layers, feedback placement) run while
        :func:`~sggraph.core.structure.derive_structure` derives it; the checked, immutable
        :attr:`structure` is kept until the graph changes, so a second lint costs nothing.

        Checks: non-empty; parents exist; no cycle; parent arrays exist and have enough
        neurons for ``fan_in``; tables in range; residual arrays match; every parent of
        a node in layer ``l`` is in layer ``l - 1``; feedback only on terminal nodes.

        >>> g = Graph("bad"); g.add_node("y", 1, ["nope"])
        >>> g.lint()
        Traceback (most recent call last):
        ...
        sggraph.exceptions.GraphError: node 'y': unknown parent 'nope'. Fix: declare a node named 'nope', or correct the spelling (known: y).
        """
        if self._structure is not None:
            return
        if not self._nodes and not self._arrays:
            file, line = self.sources_of.get("", (None, None))
            raise GraphError(f"graph '{self.name}' is empty", file=file, line=line,
                             fix="declare at least one node under `nodes:` or one array under `arrays:`")
        check_references(self)
        self._structure = derive_structure(self)

    def declared_layer(self, v: str) -> int | None:
        if v in self._nodes:
            return self._nodes[v].layer
        base = v.split("[", 1)[0]
        return self._arrays[base].layer if base in self._arrays else None

    # -------------------------------------------------------------- helpers
    def insert_relays(self) -> Graph:
        """Return a copy in which identity relay nodes bridge parents more than one layer up.

        A parent ``p`` of ``v`` in layer ``l_p < l_v - 1`` is replaced by a chain of
        ``identity`` relays ``p@1 -> p@2 -> ...`` so that the layer rule holds. Parents that
        are array neurons (``a[i]``, relays ``a_i@1 …``) or whole arrays (read flattened,
        relays ``a@1 …``) are relayed too; arrays themselves always read the layer just below.

        >>> g = Graph(); g.add_node("z", 1); g.add_node("h", 1, ["z"]); g.add_node("y", 1, ["h", "z"])
        >>> g.insert_relays().parents("y")
        ('h', 'z@1')
        >>> g = Graph(); g.add_array("x", 4, 1); g.add_array("h", 2, 3, parents="x", fan_in=2)
        >>> g.add_node("y", 1, ["h", "x[3]"]); g.insert_relays().parents("y")
        ('h[0]', 'h[1]', 'x_3@1')
        """
        return insert_relays(self)

    def _ref_dim(self, ref: str) -> int:
        """Width of a parent reference: a node's dim, an array's ``count * dim``, a neuron's dim."""
        base, _, rest = ref.partition("[")
        if base in self._nodes:
            return self._nodes[base].dim
        arr = self._arrays[base]
        return arr.dim if rest else arr.count * arr.dim

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
        """The graph as a plain mapping in the YAML format (see :mod:`sggraph.core.spec`).

        >>> g = Graph("t"); g.add_node("z", 2); g.add_node("y", 1, ["z"], fn="linear")
        >>> g.to_dict()["nodes"][1]
        {'name': 'y', 'dim': 1, 'parents': ['z'], 'fn': 'linear'}
        """
        return graph_to_dict(self)

    @classmethod
    def from_dict(cls, mapping: Mapping, *, file: str | None = None) -> Graph:
        """Build a graph from a mapping in the YAML format.

        >>> g = Graph.from_dict({"name": "t", "nodes": [{"name": "z", "dim": 2},
        ...                                            {"name": "y", "dim": 1, "parents": ["z"]}]})
        >>> g.layers
        [['z'], ['y']]
        """
        return graph_from_dict(mapping, cls=cls, file=file)

    @classmethod
    def from_yaml(cls, path: str) -> Graph:
        """Load a graph from a YAML file (errors name the file and line).

        >>> Graph.from_yaml("examples/expert-net.yaml")
        Graph('expert-net', nodes=7, arrays=0, layers=3)
        """
        return load_yaml(path, cls)

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

