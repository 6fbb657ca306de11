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

A cell has a YAML form next to the graph's (:mod:`sggraph.core.cell_spec`):

>>> Cell.from_dict(cell.to_dict()) == cell
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import numpy as np

from ..exceptions import GraphError, SggraphError
from .cell_spec import cell_from_dict, cell_to_dict, load_cell_yaml
from .graph import FEEDBACK_KINDS, NODE_FUNCTIONS, Graph
from .nodes import check_dim
from .state_tables import recurrent_table, state_table

__all__ = ["MAX_UNROLLED_NODES", "Cell", "StateArray", "StepNode", "check_unroll", "recurrent_table", "unroll",
           "unrolled_size"]


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
    stochastic : bool
        The neurons compute stochastically (condition A.2).
    scale_dim : int or None
        The ``d`` of every neuron's routing temperature ``1/√d`` and init std when compiled
        (None: each neuron's wired input size; see
        :class:`~sggraph.engine.neuron.RecurrentSlotArray`).
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
    stochastic: bool = False
    scale_dim: int | None = None

    def parent_table(self) -> np.ndarray:
        if self.table is not None:
            return np.asarray(self.table, dtype=np.int64).reshape(self.count, self.fan_in)
        return recurrent_table(self.count, self.fan_in, self.seed, self.self_parents)


@attrs.frozen
class StepNode:
    """A per-step plain node of a cell (a *pre* or a *post* node).

    Attributes
    ----------
    name : str
    dim : int
    parents : tuple of str
        Inputs, nodes of the cell, the state (``h``) or one state neuron (``h[i]``).
    fn : str or None
        Built-in function (:data:`~sggraph.core.nodes.NODE_FUNCTIONS`) or None.
    stochastic : bool
        The node computes stochastically (condition A.2).
    """

    name: str
    dim: int
    parents: tuple[str, ...]
    fn: str | None = None
    stochastic: bool = False


class Cell:
    """One step of a recurrent graph (see the module docstring).

    Parameters
    ----------
    name : str

    Attributes
    ----------
    inputs : dict
        Input name → dim.
    nodes : dict
        Pre and post nodes (:class:`StepNode`) by name, in declaration order.
    state : StateArray or None
    feedback : dict
        Feedback kinds (A.1) of post nodes.
    sources_of : dict
        Where each input, node and the state was declared: name → ``(file, line)``
        (``""``: the document itself); filled by :meth:`from_yaml`.
    """

    def __init__(self, name: str = "cell") -> None:
        self.name = name
        self.inputs: dict[str, int] = {}
        self.nodes: dict[str, StepNode] = {}
        self.state: StateArray | None = None
        self.feedback: dict[str, str] = {}
        self.sources_of: dict[str, tuple[str | None, int | None]] = {}

    def _free(self, name: str) -> None:
        if not isinstance(name, str) or not name or any(c in name for c in "[]@:"):
            raise GraphError(f"invalid name {name!r}", node=str(name),
                             fix="use a non-empty name without '[', ']', '@' or ':'")
        if name in self.inputs or name in self.nodes or (self.state is not None and self.state.name == name):
            raise GraphError(f"duplicate name '{name}'", node=name, fix="rename one of them")

    def add_input(self, name: str, dim: int) -> None:
        """An exogenous input at every step (``[T, B, dim]`` when compiled)."""
        self._free(name)
        self.inputs[name] = check_dim(name, dim)

    def add_node(self, name: str, dim: int, parents: Sequence[str], fn: str | None = None, *,
                 stochastic: bool = False) -> None:
        """A per-step plain node: a *pre* node (reads inputs / pre nodes) or a *post* node
        (reads the state at this step — whole, ``"h"``, or one neuron ``"h[i]"`` — or post nodes).
        ``stochastic``: the node computes stochastically (A.2)."""
        self._free(name)
        dim = check_dim(name, dim)
        refs = (parents,) if isinstance(parents, str) else tuple(parents)
        if not refs:
            raise GraphError("a node of a cell needs parents", node=name,
                             fix="list what it reads: inputs, other nodes of the cell, or the state")
        if len(set(refs)) != len(refs):
            raise GraphError(f"parent listed twice in {list(refs)}", node=name, fix="list each parent once")
        if fn is not None and fn not in NODE_FUNCTIONS:
            raise GraphError(f"unknown fn '{fn}'", node=name, fix=f"use one of {', '.join(NODE_FUNCTIONS)}")
        self.nodes[name] = StepNode(name, dim, refs, fn, bool(stochastic))

    def set_state(self, name: str, count: int, dim: int, fan_in: int | None = None, *, slots: int = 5,
                  seed: int = 0, input: str | None = None, input_neurons: int = 0,
                  table: Sequence[Sequence[int]] | None = None, self_parents: bool = False,
                  stochastic: bool = False, scale_dim: int | None = None) -> None:
        """Declare the recurrent state array (one per cell).

        ``fan_in`` parents per neuron are drawn at random (``seed``) unless an explicit
        ``[count, fan_in]`` ``table`` is given. ``self_parents``: a neuron may read its own
        previous state (the edge ``state@t−1:i → state@t:i``); default: never itself.
        ``input`` feeds neurons ``0 … input_neurons − 1`` at the same step.
        """
        if self.state is not None:
            raise GraphError("a cell has one state array", node=name, fix="declare the state once")
        self._free(name)
        count = check_dim(name, count, "count")
        dim = check_dim(name, dim)
        slots = check_dim(name, slots, "slots")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise GraphError(f"seed must be a non-negative integer, got {seed!r}", node=name, fix="use e.g. seed: 0")
        tbl = None
        if table is not None:
            tbl = state_table(name, table, count, fan_in, self_parents)
            fan_in = len(tbl[0])
        elif fan_in is None:
            raise GraphError("the state needs fan_in (or an explicit table)", node=name,
                             fix="set fan_in to the number of previous-step parents per neuron")
        else:
            fan_in = check_dim(name, fan_in, "fan_in")
            if self_parents and fan_in > count:
                raise GraphError(f"fan_in={fan_in} must be at most count={count}", node=name,
                                 fix=f"use fan_in <= {count}")
            if not self_parents and fan_in >= count:
                raise GraphError(f"fan_in={fan_in} must be below count={count} (a neuron never reads itself)",
                                 node=name, fix=f"use fan_in <= {count - 1}, or self_parents=True")
        if input is None and input_neurons:
            raise GraphError("input_neurons needs an input", node=name, fix="name the pre node with input=")
        if input is not None and (isinstance(input_neurons, bool) or not isinstance(input_neurons, (int, np.integer))
                                  or not 0 < input_neurons <= count):
            raise GraphError(f"input_neurons must be in 1..{count}, got {input_neurons!r}", node=name,
                             fix="set how many neurons (the first ones) read the input")
        if scale_dim is not None:
            scale_dim = check_dim(name, scale_dim, "scale_dim")
        self.state = StateArray(name, count, dim, int(fan_in), slots, int(seed), input, int(input_neurons), tbl,
                                bool(self_parents), bool(stochastic), scale_dim)

    def set_feedback(self, name: str, kind: str) -> None:
        """Feedback kind of a post node (A.1)."""
        if kind not in FEEDBACK_KINDS:
            raise GraphError(f"unknown feedback kind '{kind}'", node=name, fix=f"use one of {', '.join(FEEDBACK_KINDS)}")
        if name not in self.nodes:
            raise GraphError("feedback for an unknown node", node=name,
                             fix="feedback applies to post nodes of the cell: declare the node (under `post:`) first")
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
                self._check_refs(name, n.parents)
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
            if src not in self.inputs and src not in self.nodes:
                raise GraphError(f"the state reads the unknown input '{src}'", node=self.state.name,
                                 fix=f"declare '{src}' as an input or a pre node, or correct the spelling "
                                     f"(known: {', '.join(self._known())})")
            if src not in self.inputs and stage.get(src) != "pre":
                raise GraphError(f"the state's input '{src}' must be an input or a pre node", node=self.state.name,
                                 fix="feed the state from an input or a node computed from inputs")
        return stage

    def _known(self) -> list[str]:
        names = list(self.inputs) + list(self.nodes) + ([self.state.name] if self.state is not None else [])
        return names[:12]

    def _check_refs(self, name: str, refs: Sequence[str]) -> None:
        st = self.state
        assert st is not None
        for ref in refs:
            base, _, rest = ref.partition("[")
            if base not in self.inputs and base not in self.nodes and base != st.name:
                raise GraphError(f"unknown parent '{ref}'", node=name,
                                 fix=f"parents must be inputs, nodes of the cell, or the state '{st.name}' "
                                     f"(known: {', '.join(self._known())})")
            if rest and (base != st.name or not rest[:-1].isdigit() or not rest.endswith("]")
                         or int(rest[:-1]) >= st.count):
                raise GraphError(f"parent '{ref}' is not a neuron of the state", node=name,
                                 fix=f"name one state neuron as {st.name}[i] with i in 0..{st.count - 1}")

    def levels(self) -> dict[str, int]:
        """Within-step levels: the state is 0, pre nodes below it, post nodes above.

        Every parent sits exactly one level below the node reading it (the layer rule of the
        unrolled graph); raises :class:`~sggraph.GraphError` naming the node otherwise.
        """
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
        for parent, readers in consumers.items():
            for reader in readers:
                if level[parent] != level[reader] - 1:
                    raise GraphError(
                        f"'{parent}' is {level[reader] - level[parent]} levels below '{reader}' within a step "
                        f"(it also feeds {', '.join(r for r in readers if r != reader) or 'nothing else'})",
                        node=reader, fix="every parent must sit exactly one level below the node reading it: "
                                         "relay the shallower parent through an identity node (fn: identity)")
        return level

    def lint(self) -> None:
        """Check the cell: parents, stages, levels and the unrolled graph's rules (one step).

        Raises :class:`~sggraph.GraphError` naming the cell's node (and, for a cell read from
        YAML, its file and line).
        """
        try:
            unroll(self, 1)
        except GraphError as err:
            raise self.locate(err) from None

    def where(self, name: str) -> tuple[str | None, int | None]:
        """``(file, line)`` where ``name`` (an input, node, the state; ``h@t:i``-style unrolled names
        too) was declared, else where the cell was."""
        base = name.split("@", 1)[0].split("[", 1)[0]
        return self.sources_of.get(base, self.sources_of.get("", (None, None)))

    def locate(self, err: SggraphError) -> SggraphError:
        """``err`` about this cell (or its unrolled graph), with the cell's node name, file and line."""
        if err.node is not None:
            base = err.node.split("@", 1)[0].split("[", 1)[0]
            if base in self.inputs or base in self.nodes or (self.state is not None and base == self.state.name):
                err.node = base
        return err.located(*self.where(err.node or ""))

    # ----------------------------------------------------------- conversion
    def to_dict(self) -> dict:
        """The cell as a plain mapping in the YAML format (see :mod:`sggraph.core.cell_spec`)."""
        return cell_to_dict(self)

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any], *, file: str | None = None) -> Cell:
        """Build a cell from a mapping in the YAML format (errors name the node and the fix)."""
        return cell_from_dict(mapping, cls=cls, file=file)

    @classmethod
    def from_yaml(cls, path: str) -> Cell:
        """Load a cell from a YAML file (errors name the file, line, node and fix).

        >>> Cell.from_yaml("examples/popgym-sparsenet-cell.yaml")
        Cell('popgym-sparsenet', inputs=['obs'], pre=['emb'], state=h[128×6], post=['act'])
        """
        return load_cell_yaml(path, cls)

    def to_yaml(self) -> str:
        """The cell as YAML text (:meth:`from_yaml` reads it back to an equal cell)."""
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Cell):
            return NotImplemented
        return (self.name, self.inputs, self.nodes, self.state, self.feedback) == (
            other.name, other.inputs, other.nodes, other.state, other.feedback)

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by structure: not hashable

    def __repr__(self) -> str:
        try:
            stage = self.stages()
        except GraphError:
            stage = {}
        pre = [n for n in self.nodes if stage.get(n) == "pre"]
        post = [n for n in self.nodes if stage.get(n) != "pre"]
        st = "None" if self.state is None else f"{self.state.name}[{self.state.count}×{self.state.dim}]"
        return f"Cell({self.name!r}, inputs={list(self.inputs)}, pre={pre}, state={st}, post={post})"


#: Most nodes of an unrolled graph (:func:`unroll`); the POPGym cell (131 nodes a step) reaches it at 381 steps; 380 fit.
MAX_UNROLLED_NODES = 50_000


def unrolled_size(cell: Cell, steps: int) -> int:
    """Nodes of the graph of ``steps`` unrolled steps: per step the inputs, the nodes and the state neurons,
    plus the initial state.

    >>> c = Cell("c"); c.add_input("x", 2); c.set_state("h", count=4, dim=2, fan_in=1); unrolled_size(c, 3)
    19
    """
    neurons = cell.state.count if cell.state is not None else 0
    return neurons + steps * (len(cell.inputs) + len(cell.nodes) + neurons)


def check_unroll(cell: Cell, steps: int) -> None:
    """Raise a :class:`~sggraph.GraphError` unless ``1 <= steps`` and the unrolled graph has at most
    :data:`MAX_UNROLLED_NODES` nodes (checked from the sizes alone, before anything is built)."""
    if steps < 1:
        raise GraphError(f"steps must be at least 1, got {steps}", node=cell.name, fix="unroll for T >= 1 steps")
    size = unrolled_size(cell, steps)
    if size > MAX_UNROLLED_NODES:
        most = max(1, (MAX_UNROLLED_NODES - unrolled_size(cell, 0)) // max(1, unrolled_size(cell, 1)
                                                                           - unrolled_size(cell, 0)))
        raise GraphError(f"{steps:,} unrolled steps make a graph of {size:,} nodes, more than the limit "
                         f"{MAX_UNROLLED_NODES:,}", node=cell.name, fix=f"unroll for at most {most:,} steps")


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
        state ``state@0:i`` (sources). Nodes and state neurons carry the cell's stochastic
        flags; post nodes carry its feedback kinds.
    """
    check_unroll(cell, steps)
    level = cell.levels()
    st = cell.state
    assert st is not None
    # inputs at step 1 and the initial state (level 0 at step 0) land on layers >= 0
    offset = max(0, -min(level.values()) - 1)
    table = st.parent_table()
    stage = cell.stages()
    for name in cell.feedback:
        if stage[name] != "post":
            raise GraphError("feedback is declared on a pre node (it feeds the state)", node=name,
                             fix="declare feedback only on terminal post nodes")
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
    for t in range(1, steps + 1):
        for name, dim in cell.inputs.items():
            g.add_node(f"{name}@{t}", dim, layer=level[name] + t + offset)
        for name, n in cell.nodes.items():
            if stage[name] == "pre":
                g.add_node(f"{name}@{t}", n.dim, [r for p in n.parents for r in ref(p, t)], fn=n.fn,
                           stochastic=n.stochastic)
        for i in range(st.count):
            parents = [f"{st.name}@{t - 1}:{int(j)}" for j in table[i]]
            if st.input is not None and i < st.input_neurons:
                parents.append(f"{st.input}@{t}")
            g.add_node(f"{st.name}@{t}:{i}", st.dim, parents, stochastic=st.stochastic)
        for name, n in cell.nodes.items():
            if stage[name] == "post":
                g.add_node(f"{name}@{t}", n.dim, [r for p in n.parents for r in ref(p, t)], fn=n.fn,
                           stochastic=n.stochastic)
                if name in cell.feedback:
                    g.set_feedback(f"{name}@{t}", cell.feedback[name])
    g.lint()
    return g
