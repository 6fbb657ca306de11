"""The YAML format of a recurrent cell, next to the graph's and as strict.

A file looks like this (the POPGym SparseNet, ``examples/popgym-sparsenet-cell.yaml``)::

    name: popgym-sparsenet
    inputs:
      - {name: obs, dim: 56}                        # exogenous, at every step t
    pre:                                            # computed from inputs, before the state
      - {name: emb, dim: 128, parents: [obs], fn: embedding}
    state:                                          # the recurrent state array
      name: h
      count: 128                                    # neurons h[0] … h[127]
      dim: 6
      slots: 6
      parents: {fan_in: 6, seed: 0, self_parents: true}   # or {table: [[…], …]}
      input: {node: emb, neurons: 16}               # emb@t feeds h@t[0 … 15]
      scale_dim: 164
    post:                                           # read the state at step t
      - {name: act, dim: 4, parents: [h], fn: slot_actor}
    feedback:
      act: contextual                               # deterministic | stochastic | contextual

Unknown keys are errors, not ignored; every error names the file, the line, the node and
the fix, as for graphs (:mod:`sggraph.core.spec`).

Examples
--------
>>> from sggraph import Cell
>>> doc = {"name": "rnn", "inputs": [{"name": "x", "dim": 3}],
...        "state": {"name": "h", "count": 4, "dim": 2, "parents": {"fan_in": 2}, "input": {"node": "x", "neurons": 2}},
...        "post": [{"name": "y", "dim": 1, "parents": ["h"], "fn": "linear"}]}
>>> cell = cell_from_dict(doc, cls=Cell)
>>> cell_from_dict(cell_to_dict(cell), cls=Cell) == cell
True
>>> cell_from_dict({**doc, "state": {**doc["state"], "parents": {"fanin": 2}}}, cls=Cell)
Traceback (most recent call last):
...
sggraph.exceptions.SpecError: node 'h': unknown key 'fanin' in state.parents. Fix: did you mean 'fan_in'? Allowed keys: fan_in, seed, table, self_parents.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar

import attrs
import cattrs

from ..exceptions import GraphError, SggraphError, SpecError
from .spec import check_keys, line_for, read_yaml, spec_error, strict_converter

#: The cell class a caller hands in (:class:`~sggraph.Cell`, which imports this module: cell_spec builds
#: cells of the class it is given instead of importing it).
CellT = TypeVar("CellT")

__all__ = [
    "CellSpec",
    "InputSpec",
    "StateInputSpec",
    "StateParentsSpec",
    "StateSpec",
    "StepNodeSpec",
    "cell_from_dict",
    "cell_to_dict",
    "is_cell_document",
    "load_cell_yaml",
]


@attrs.frozen
class InputSpec:
    """One entry of ``inputs:``."""

    name: str
    dim: int


@attrs.frozen
class StepNodeSpec:
    """One entry of ``pre:`` or ``post:``."""

    name: str
    dim: int
    parents: list[str]
    fn: str | None = None
    stochastic: bool = False


@attrs.frozen
class StateParentsSpec:
    """The state's ``parents:``: its previous-step parent table, random or explicit."""

    fan_in: int | None = None
    seed: int = 0
    table: list[list[int]] | None = None
    self_parents: bool = False


@attrs.frozen
class StateInputSpec:
    """The state's ``input:``: the input or pre node fed to the first ``neurons`` neurons."""

    node: str
    neurons: int


@attrs.frozen
class StateSpec:
    """The ``state:`` mapping."""

    name: str
    count: int
    dim: int
    slots: int = 5
    parents: StateParentsSpec | None = None
    input: StateInputSpec | None = None
    stochastic: bool = False
    scale_dim: int | None = None


@attrs.frozen(kw_only=True)
class CellSpec:
    """A whole cell file."""

    name: str = "cell"
    inputs: list[InputSpec]
    pre: list[StepNodeSpec] = attrs.field(factory=list)
    state: StateSpec
    post: list[StepNodeSpec] = attrs.field(factory=list)
    feedback: dict[str, str] = attrs.field(factory=dict)


_ALLOWED = {
    "cell": [f.name for f in attrs.fields(CellSpec)],
    "inputs": [f.name for f in attrs.fields(InputSpec)],
    "nodes": [f.name for f in attrs.fields(StepNodeSpec)],
    "state": [f.name for f in attrs.fields(StateSpec)],
    "state.parents": [f.name for f in attrs.fields(StateParentsSpec)],
    "state.input": [f.name for f in attrs.fields(StateInputSpec)],
}

_MISSING = {"dim": "a positive integer dimension, e.g. `dim: 4`", "name": "a unique name",
            "count": "the number of state neurons, e.g. `count: 128`",
            "parents": "what the node reads, e.g. `parents: [obs]`",
            "inputs": "the exogenous inputs, e.g. `inputs: [{name: obs, dim: 8}]`",
            "state": "the recurrent state, e.g. `state: {name: h, count: 64, dim: 4, parents: {fan_in: 4}}`",
            "node": "the input or pre node feeding the state", "neurons": "how many (first) neurons read it"}

_VALUE_FIX = ("use the expected type: names are strings; dim, count, slots, fan_in, seed, neurons and scale_dim are "
              "integers; parents of a node is a list of names; the state's parents is {fan_in, seed, self_parents} "
              "or {table}; its input is {node, neurons}; stochastic and self_parents are true or false")

_converter = strict_converter()


def _section(path: str) -> str:
    for pattern, section in ((r"\$\.state\.parents", "state.parents"), (r"\$\.state\.input", "state.input"),
                             (r"\$\.state", "state"), (r"\$\.inputs\[", "inputs"), (r"\$\.(pre|post)\[", "nodes")):
        if re.match(pattern, path):
            return section
    return "cell"


def _node_for(data: Any, path: str) -> str | None:
    if not isinstance(data, Mapping):
        return None
    m = re.match(r"\$\.(inputs|pre|post)\[(\d+)\]", path)
    if m:
        items = data.get(m.group(1))
        i = int(m.group(2))
        if isinstance(items, list) and i < len(items) and isinstance(items[i], Mapping):
            name = items[i].get("name")
            return name if isinstance(name, str) else None
        return None
    if path.startswith("$.state"):
        state = data.get("state")
        name = state.get("name") if isinstance(state, Mapping) else None
        return name if isinstance(name, str) else None
    m = re.match(r"\$\.feedback\.([^.\[]+)", path)
    return m.group(1) if m else None


def is_cell_document(data: Any) -> bool:
    """Whether a parsed YAML document declares a cell (``state:``, or ``inputs:`` without graph sections)."""
    if not isinstance(data, Mapping):
        return False
    return "state" in data or (any(k in data for k in ("inputs", "pre", "post"))
                               and not any(k in data for k in ("nodes", "arrays")))


def cell_from_dict(data: Any, *, cls: type[CellT], file: str | None = None,
                   index: Mapping[str, int] | None = None) -> CellT:
    """Build a :class:`~sggraph.Cell` from a mapping in the YAML format, and lint it.

    Parameters
    ----------
    data : mapping
        The parsed document.
    cls : type
        The cell class to build (:class:`~sggraph.Cell`).
    file : str, optional
        File name used in error messages.
    index : mapping, optional
        Path-to-line index from :func:`~sggraph.core.spec.yaml_line_index`.

    Raises
    ------
    SpecError
        Unknown key, missing key, wrong type, a graph document.
    GraphError
        The cell is invalid (unknown parent, bad sizes, a node in the wrong section...), located
        at the node's line.
    """
    index = index or {}
    if not isinstance(data, Mapping):
        raise SpecError(f"the document must be a mapping with `inputs:` and `state:`, got {type(data).__name__}",
                        file=file, line=1, fix="start the file with `name: ...`, `inputs:` and `state:`")
    if not is_cell_document(data) and any(k in data for k in ("nodes", "arrays")):
        raise SpecError("this file declares a layered graph (it has `nodes:` or `arrays:`), not a recurrent cell",
                        file=file, line=line_for(index, "$.nodes") or line_for(index, "$.arrays") or 1,
                        fix="load it with sggraph.Graph.from_yaml; on the command line drop --unroll")
    check_keys(data, "$", index, file)
    try:
        spec = _converter.structure(dict(data), CellSpec)
    except (cattrs.BaseValidationError, TypeError, ValueError) as exc:
        raise spec_error(exc, data, index, file, allowed=_ALLOWED, section_of=_section, node_of=_node_for,
                         missing=_MISSING, value_fix=_VALUE_FIX) from None
    cell = cls(spec.name)
    cell.sources_of[""] = (file, 1)

    def build(path: str, name: str, action) -> None:
        cell.sources_of.setdefault(name, (file, line_for(index, path)))
        try:
            action()
        except GraphError as err:
            raise err.located(file, line_for(index, path)) from None

    if not spec.inputs:
        raise GraphError("a cell needs at least one input", node=spec.name, file=file,
                         line=line_for(index, "$.inputs"), fix="declare one under `inputs:`, e.g. {name: obs, dim: 8}")
    for i, x in enumerate(spec.inputs):
        build(f"$.inputs[{i}]", x.name, lambda x=x: cell.add_input(x.name, x.dim))
    for i, n in enumerate(spec.pre):
        build(f"$.pre[{i}]", n.name, lambda n=n: cell.add_node(n.name, n.dim, n.parents, n.fn,
                                                                 stochastic=n.stochastic))
    build("$.state", spec.state.name, lambda: _set_state(cell, spec.state))
    for i, n in enumerate(spec.post):
        build(f"$.post[{i}]", n.name, lambda n=n: cell.add_node(n.name, n.dim, n.parents, n.fn,
                                                                  stochastic=n.stochastic))
    for name, kind in spec.feedback.items():
        path = f"$.feedback.{name}"
        build(path, name, lambda name=name, kind=kind: cell.set_feedback(name, kind))
        cell.sources_of[f"feedback:{name}"] = (file, line_for(index, path))
    _check_sections(cell, spec)
    cell.lint()
    return cell


def _set_state(cell: Any, st: StateSpec) -> None:
    p = st.parents
    if p is None:
        raise GraphError("the state needs `parents:` (its previous-step parent table)", node=st.name,
                         fix="add `parents: {fan_in: 4}` (random, seeded) or `parents: {table: [[…], …]}`")
    cell.set_state(st.name, st.count, st.dim, p.fan_in, slots=st.slots, seed=p.seed,
                   input=st.input.node if st.input is not None else None,
                   input_neurons=st.input.neurons if st.input is not None else 0, table=p.table,
                   self_parents=p.self_parents, stochastic=st.stochastic, scale_dim=st.scale_dim)


def _check_sections(cell: Any, spec: CellSpec) -> None:
    """Every node sits in the section its parents put it in (``post:`` iff it reads the state)."""
    try:
        stage = cell.stages()
    except SggraphError as err:
        raise cell.locate(err) from None
    state = spec.state.name
    for section, nodes, other in (("pre", spec.pre, "post"), ("post", spec.post, "pre")):
        for n in nodes:
            if stage[n.name] != section:
                what = (f"reads the state '{state}' (directly or through a post node), so it runs after the state"
                        if section == "pre" else f"does not read the state '{state}', so it runs before the state")
                raise cell.locate(GraphError(f"'{n.name}' is declared under `{section}:` but {what}", node=n.name,
                                             fix=f"move it under `{other}:`"))


def cell_to_dict(cell: Any) -> dict:
    """The mapping :func:`cell_from_dict` reads back to an equal cell (defaults omitted)."""
    stage = cell.stages()
    st = cell.state
    assert st is not None

    def node(name: str) -> dict:
        n = cell.nodes[name]
        d: dict[str, Any] = {"name": n.name, "dim": n.dim, "parents": list(n.parents)}
        if n.fn is not None:
            d["fn"] = n.fn
        if n.stochastic:
            d["stochastic"] = True
        return d

    parents: dict[str, Any] = {}
    if st.table is not None:
        parents["table"] = [list(r) for r in st.table]
        if st.seed != 0:
            parents["seed"] = st.seed
    else:
        parents.update(fan_in=st.fan_in, seed=st.seed)
    if st.self_parents:
        parents["self_parents"] = True
    state: dict[str, Any] = {"name": st.name, "count": st.count, "dim": st.dim}
    if st.slots != 5:
        state["slots"] = st.slots
    state["parents"] = parents
    if st.input is not None:
        state["input"] = {"node": st.input, "neurons": st.input_neurons}
    if st.stochastic:
        state["stochastic"] = True
    if st.scale_dim is not None:
        state["scale_dim"] = st.scale_dim
    out: dict[str, Any] = {"name": cell.name, "inputs": [{"name": k, "dim": v} for k, v in cell.inputs.items()]}
    pre = [node(n) for n in cell.nodes if stage[n] == "pre"]
    if pre:
        out["pre"] = pre
    out["state"] = state
    post = [node(n) for n in cell.nodes if stage[n] == "post"]
    if post:
        out["post"] = post
    if cell.feedback:
        out["feedback"] = dict(cell.feedback)
    return out


def load_cell_yaml(path: str, cls: type[CellT]) -> CellT:
    """Load a cell from a YAML file; every error names ``path`` and the line.

    Raises
    ------
    SpecError
        The file is missing, is not valid YAML, or does not follow the format.
    GraphError
        The cell it declares is invalid.
    """
    data, index = read_yaml(path)
    if data is None:
        raise SpecError("the file is empty", file=str(path), line=1,
                        fix="declare `inputs:`, `state:` and the cell's `pre:`/`post:` nodes")
    return cell_from_dict(data, cls=cls, file=str(path), index=index)
