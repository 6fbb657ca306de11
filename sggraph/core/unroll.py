"""Recurrent cells and their unrolling into the layered DAG that analysis and drawing use.

A :class:`Cell` is one time step: exogenous *inputs* at step ``t``, *pre* nodes computed
from them (an embedding), one recurrent *state* array whose neuron ``i`` reads ``fan_in``
other neurons of the state at step ``t − 1`` (and, for the first ``input_neurons``
neurons, one pre node at step ``t``), and *post* nodes reading the state at step ``t``
(an actor head). :func:`unroll` writes ``T`` steps out as a :class:`~sggraph.Graph`:
nodes ``name@t`` (t = 1 … T), state neurons ``state@t:i``, the zero initial state
``state@0:i`` as sources.

Examples
--------
>>> cell = Cell("rnn")
>>> cell.add_input("obs", 3)
>>> cell.add_node("emb", 4, ["obs"], fn="tanh")
>>> cell.set_state("h", count=5, dim=2, fan_in=2, input="emb", input_neurons=2)
>>> cell.add_node("act", 3, ["h"], fn="linear")
>>> g = unroll(cell, steps=3)
>>> g.parents("h@2:0")
('h@1:3', 'h@1:2', 'emb@2')
>>> [g.layer_of(n) for n in ("obs@1", "emb@1", "h@0:0", "h@1:0", "act@1")]
[0, 1, 1, 2, 3]
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import numpy as np

from ..exceptions import GraphError
from .graph import FEEDBACK_KINDS, NODE_FUNCTIONS, Graph

__all__ = ["Cell", "StateArray", "recurrent_table", "unroll"]


def recurrent_table(count: int, fan_in: int, seed: int, self_parents: bool = False) -> np.ndarray:
    """``[count, fan_in]`` distinct random parents per neuron (a uniform random subset in random order).

    ``self_parents=False`` (default): never the neuron itself. ``True``: drawn from all ``count``
    neurons, so a neuron may read its own previous state — the authors' POPGym code
    (``randperm(width)[:n_parents]`` per neuron).

    >>> t = recurrent_table(6, 3, 0)
    >>> t.shape, bool((t != np.arange(6)[:, None]).all())
    ((6, 3), True)
    >>> bool((recurrent_table(6, 6, 0, self_parents=True) == np.arange(6)[:, None]).any(1).all())
    True
    """
    rng = np.random.default_rng(seed)
    keys = rng.random((count, count))
    if not self_parents:
        np.fill_diagonal(keys, np.inf)
    return np.argsort(keys, axis=1)[:, :fan_in].astype(np.int64)


@attrs.frozen
class StateArray:
    """The recurrent state: ``count`` slot neurons of dimension ``dim``.

    Attributes
    ----------
    name : str
    count, dim, fan_in, slots, seed : int
    input : str or None
        A pre node (or input) fed, at the same step, to the first ``input_neurons`` neurons.
    input_neurons : int
        How many neurons (0 … input_neurons − 1) read ``input``.
    table : tuple or None
        Explicit ``[count, fan_in]`` table into the previous step's state.
    self_parents : bool
        The random table may make a neuron its own parent (see :func:`recurrent_table`).
    """

    name: str
    count: int
    dim: int
    fan_in: int
    slots: int = 5
    seed: int = 0
    input: str | None = None
    input_neurons: int = 0
    table: tuple[tuple[int, ...], ...] | None = None
    self_parents: bool = False

    def parent_table(self) -> np.ndarray:
        if self.table is not None:
            return np.asarray(self.table, dtype=np.int64).reshape(self.count, self.fan_in)
        return recurrent_table(self.count, self.fan_in, self.seed, self.self_parents)


@attrs.frozen
class _StepNode:
    name: str
    dim: int
    parents: tuple[str, ...]
    fn: str | None


class Cell:
    """One step of a recurrent graph (see the module docstring).

    Parameters
    ----------
    name : str
    """

    def __init__(self, name: str = "cell") -> None:
        self.name = name
        self.inputs: dict[str, int] = {}
        self.nodes: dict[str, _StepNode] = {}
        self.state: StateArray | None = None
        self.feedback: dict[str, str] = {}

    def _free(self, name: str) -> None:
        if not isinstance(name, str) or not name or any(c in name for c in "[]@:"):
            raise GraphError(f"invalid name {name!r}", node=str(name),
                             fix="use a non-empty name without '[', ']', '@' or ':'")
        if name in self.inputs or name in self.nodes or (self.state is not None and self.state.name == name):
            raise GraphError(f"duplicate name '{name}'", node=name, fix="rename one of them")

    def add_input(self, name: str, dim: int) -> None:
        """An exogenous input at every step (``[T, B, dim]`` when compiled)."""
        self._free(name)
        if dim <= 0:
            raise GraphError(f"dim must be positive, got {dim}", node=name, fix="set a positive dim")
        self.inputs[name] = int(dim)

    def add_node(self, name: str, dim: int, parents: Sequence[str], fn: str | None = None) -> None:
        """A per-step plain node: a *pre* node (reads inputs / pre nodes) or a *post* node
        (reads the state at this step — whole, ``"h"``, or one neuron ``"h[i]"`` — or post nodes)."""
        self._free(name)
        if dim <= 0:
            raise GraphError(f"dim must be positive, got {dim}", node=name, fix="set a positive dim")
        if fn is not None and fn not in NODE_FUNCTIONS:
            raise GraphError(f"unknown fn '{fn}'", node=name, fix=f"use one of {', '.join(NODE_FUNCTIONS)}")
        self.nodes[name] = _StepNode(name, int(dim), tuple(parents), fn)

    def set_state(self, name: str, count: int, dim: int, fan_in: int, *, slots: int = 5, seed: int = 0,
                  input: str | None = None, input_neurons: int = 0,
                  table: Sequence[Sequence[int]] | None = None, self_parents: bool = False) -> None:
        """Declare the recurrent state array (one per cell).

        ``self_parents``: the random parent table draws from all ``count`` neurons, the neuron
        itself included (the edge ``state@t−1:i → state@t:i``); default: never itself.
        """
        if self.state is not None:
            raise GraphError("a cell has one state array", node=name, fix="declare the state once")
        self._free(name)
        if self_parents and fan_in > count:
            raise GraphError(f"fan_in={fan_in} must be at most count={count}", node=name,
                             fix=f"use fan_in <= {count}")
        if not self_parents and fan_in >= count:
            raise GraphError(f"fan_in={fan_in} must be below count={count} (a neuron never reads itself)",
                             node=name, fix=f"use fan_in <= {count - 1}, or self_parents=True")
        if input is None and input_neurons:
            raise GraphError("input_neurons needs an input", node=name, fix="name the pre node with input=")
        if input is not None and not 0 < input_neurons <= count:
            raise GraphError(f"input_neurons must be in 1..{count}", node=name, fix="set input_neurons")
        tbl = None if table is None else tuple(tuple(int(i) for i in r) for r in table)
        self.state = StateArray(name, int(count), int(dim), int(fan_in), int(slots), int(seed), input,
                                int(input_neurons), tbl, bool(self_parents))

    def set_feedback(self, name: str, kind: str) -> None:
        """Feedback kind of a post node (A.1)."""
        if kind not in FEEDBACK_KINDS:
            raise GraphError(f"unknown feedback kind '{kind}'", node=name, fix=f"use one of {', '.join(FEEDBACK_KINDS)}")
        if name not in self.nodes:
            raise GraphError("feedback for an unknown node", node=name, fix="declare the node first")
        self.feedback[name] = kind

    # ------------------------------------------------------------ structure
    def _base(self, ref: str) -> str:
        return ref.split("[", 1)[0]

    def stages(self) -> dict[str, str]:
        """``pre`` or ``post`` for every plain node (pre: computed before the state)."""
        if self.state is None:
            raise GraphError("the cell has no state array", node=self.name, fix="call cell.set_state(...)")
        stage: dict[str, str] = {}
        pending = dict(self.nodes)
        while pending:
            progressed = False
            for name, n in list(pending.items()):
                bases = [self._base(p) for p in n.parents]
                unknown = [p for p in bases if p not in self.inputs and p not in self.nodes and p != self.state.name]
                if unknown:
                    raise GraphError(f"unknown parent '{unknown[0]}'", node=name,
                                     fix=f"parents must be inputs, nodes of the cell, or the state '{self.state.name}'")
                if all(p in self.inputs or p == self.state.name or p in stage for p in bases):
                    post = any(p == self.state.name or stage.get(p) == "post" for p in bases)
                    stage[name] = "post" if post else "pre"
                    del pending[name]
                    progressed = True
            if not progressed:
                raise GraphError("the cell's nodes form a cycle", node=next(iter(pending)),
                                 fix="a node may only read inputs, earlier nodes and the state")
        if self.state.input is not None:
            src = self.state.input
            if src not in self.inputs and stage.get(src) != "pre":
                raise GraphError(f"the state's input '{src}' must be an input or a pre node", node=self.state.name,
                                 fix="feed the state from an input or a node computed from inputs")
        return stage

    def levels(self) -> dict[str, int]:
        """Within-step levels: the state is 0, pre nodes below it, post nodes above."""
        stage = self.stages()
        st = self.state
        assert st is not None
        level: dict[str, int] = {st.name: 0}
        order = [n for n in self.nodes]
        # pre nodes and inputs: one below their lowest consumer
        consumers: dict[str, list[str]] = {}
        for name, n in self.nodes.items():
            for p in n.parents:
                consumers.setdefault(self._base(p), []).append(name)
        if st.input is not None:
            consumers.setdefault(st.input, []).append(st.name)
        post_order = [n for n in order if stage[n] == "post"]
        for name in post_order:  # forward from the state
            level[name] = 1 + max(level.get(self._base(p), 0) for p in self.nodes[name].parents)
        pre_like = [n for n in reversed(order) if stage[n] == "pre"] + list(self.inputs)
        for _ in range(len(pre_like) + 1):
            for name in pre_like:
                cs = [level[c] for c in consumers.get(name, []) if c in level]
                if cs:
                    level[name] = min(cs) - 1
        for name in pre_like:
            if name not in level:
                raise GraphError("this input or node feeds nothing", node=name, fix="remove it or wire it")
        return level


def unroll(cell: Cell, steps: int) -> Graph:
    """Write ``steps`` steps of ``cell`` out as a layered :class:`~sggraph.Graph`.

    Parameters
    ----------
    cell : Cell
    steps : int
        ``T ≥ 1``.

    Returns
    -------
    Graph
        Plain nodes ``name@t`` (t = 1 … T), state neurons ``state@t:i`` and the initial
        state ``state@0:i`` (sources). State neurons are stochastic/feedback-free; post nodes
        carry the cell's feedback kinds.
    """
    if steps < 1:
        raise GraphError(f"steps must be at least 1, got {steps}", node=cell.name, fix="unroll for T >= 1 steps")
    level = cell.levels()
    st = cell.state
    assert st is not None
    offset = -min(level.values()) - 1  # input levels at step 1 land on layer >= 0
    table = st.parent_table()
    g = Graph(f"{cell.name}-unrolled-{steps}")

    def ref(p: str, t: int) -> list[str]:
        base, _, rest = p.partition("[")
        if base == st.name:
            if rest:
                return [f"{st.name}@{t}:{int(rest[:-1])}"]
            return [f"{st.name}@{t}:{i}" for i in range(st.count)]
        return [f"{base}@{t}"]

    for i in range(st.count):
        g.add_node(f"{st.name}@0:{i}", st.dim, layer=offset)
    stage = cell.stages()
    for t in range(1, steps + 1):
        for name, dim in cell.inputs.items():
            g.add_node(f"{name}@{t}", dim, layer=level[name] + t + offset)
        for name, n in cell.nodes.items():
            if stage[name] == "pre":
                g.add_node(f"{name}@{t}", n.dim, [r for p in n.parents for r in ref(p, t)], fn=n.fn)
        for i in range(st.count):
            parents = [f"{st.name}@{t - 1}:{int(j)}" for j in table[i]]
            if st.input is not None and i < st.input_neurons:
                parents.append(f"{st.input}@{t}")
            g.add_node(f"{st.name}@{t}:{i}", st.dim, parents)
        for name, n in cell.nodes.items():
            if stage[name] == "post":
                g.add_node(f"{name}@{t}", n.dim, [r for p in n.parents for r in ref(p, t)], fn=n.fn)
                if name in cell.feedback:
                    g.set_feedback(f"{name}@{t}", cell.feedback[name])
    g.lint()
    return g
