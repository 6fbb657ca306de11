"""What a graph is made of: nodes, node arrays and their names (torch-free)."""

from __future__ import annotations

import re

import attrs
import numpy as np

from ..exceptions import GraphError

__all__ = ["FEEDBACK_KINDS", "MAX_DIM", "NODE_FUNCTIONS", "Node", "NodeArray", "check_dim", "check_layer",
           "check_name", "natural_key", "neuron_name"]

#: Feedback kinds of a terminal node (condition A.1).
FEEDBACK_KINDS = ("deterministic", "stochastic", "contextual")
#: Built-in node functions a YAML file may name with ``fn:`` (see :mod:`sggraph.engine.functions`).
NODE_FUNCTIONS = ("linear", "tanh", "identity", "dot", "embedding", "slot_actor")


def neuron_name(array: str, index: int) -> str:
    """Name of neuron ``index`` of ``array``.

    >>> neuron_name("h1", 7)
    'h1[7]'
    """
    return f"{array}[{index}]"


def natural_key(name: str) -> tuple:
    """Sort key that orders the numbers inside names by value: ``h1[2]`` before ``h1[10]``,
    ``h@2:9`` before ``h@10:0``.

    >>> sorted(["h1[10]", "h1[2]", "x", "h1[1]"], key=natural_key)
    ['h1[1]', 'h1[2]', 'h1[10]', 'x']
    """
    return tuple(int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", name)))


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
        if self.fan_in >= parent_count:
            keys = rng.random((self.count, parent_count))
            return np.argsort(keys, axis=1)[:, : self.fan_in].astype(np.int64)
        # the same table as argsort(rng.random((count, parent_count)))[:, :fan_in], in blocks of rows (the
        # same random stream) and by partial sorting: linear time and bounded memory for wide arrays
        table = np.empty((self.count, self.fan_in), dtype=np.int64)
        block = max(1, (1 << 22) // parent_count)
        for start in range(0, self.count, block):
            keys = rng.random((min(block, self.count - start), parent_count))
            smallest = np.argpartition(keys, self.fan_in - 1, axis=1)[:, : self.fan_in]
            order = np.argsort(np.take_along_axis(keys, smallest, axis=1), axis=1)
            table[start:start + len(keys)] = np.take_along_axis(smallest, order, axis=1)
        return table

    @property
    def is_source(self) -> bool:
        return self.parent is None


def check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not name:
        raise GraphError(f"{what} name must be a non-empty string, got {name!r}",
                         fix="give every node a unique non-empty name")
    if "[" in name or "]" in name:
        raise GraphError(f"{what} name {name!r} may not contain brackets",
                         node=name, fix="brackets are reserved for neurons of arrays (name[i]); rename it")
    return name


#: The largest dim, count, fan_in or slots of a node or array (a sane bound: no tensor of a larger side is built).
MAX_DIM = 2**20


def check_layer(name: str, layer: object) -> int | None:
    """A declared layer as an int (None stays None), or a :class:`~sggraph.GraphError` unless it is an integer
    in ``0..MAX_DIM``.

    >>> check_layer("e", 2), check_layer("e", None)
    (2, None)
    """
    if layer is None:
        return None
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= layer <= MAX_DIM:
        raise GraphError(f"layer must be an integer in 0..{MAX_DIM:,}, got {layer!r}", node=name,
                         fix="give the source's layer as a small non-negative integer, or leave it out (layer 0)")
    return int(layer)


def check_dim(name: str, dim: object, what: str = "dim") -> int:
    """``dim`` as an int, or a :class:`~sggraph.GraphError` unless it is an integer in ``1..MAX_DIM``.

    >>> check_dim("h", 100000000000000000000)
    Traceback (most recent call last):
    ...
    sggraph.exceptions.GraphError: node 'h': dim 100000000000000000000 is larger than the limit 1,048,576. Fix: use a dim of at most 1,048,576.
    """
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
        raise GraphError(f"{what} must be an integer, got {dim!r}", node=name,
                         fix=f"set {what} to a positive integer")
    if dim <= 0:
        raise GraphError(f"{what} must be positive, got {dim}", node=name,
                         fix=f"set {what} to a positive integer")
    if dim > MAX_DIM:
        raise GraphError(f"{what} {dim} is larger than the limit {MAX_DIM:,}", node=name,
                         fix=f"use a {what} of at most {MAX_DIM:,}")
    return int(dim)
