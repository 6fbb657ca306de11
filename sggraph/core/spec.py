"""The YAML format of a graph, loaded through cattrs with line-accurate errors.

A file looks like this::

    name: expert-net
    nodes:
      - {name: z, dim: 8}                        # a source, layer 0
      - {name: x, dim: 8, parents: [z], fn: tanh}
      - {name: e1, dim: 1, parents: [x], fn: linear}
    feedback:
      e1: stochastic                             # deterministic | stochastic | contextual
    arrays:
      - {name: pixels, count: 784, dim: 1}       # an input array
      - {name: h1, count: 200, dim: 10, parents: {array: pixels, fan_in: 50, seed: 0}}

Unknown keys are errors, not ignored; every error names the file, the line,
the node and the fix.

Examples
--------
>>> from sggraph import Graph
>>> g = graph_from_dict({"nodes": [{"name": "z", "dim": 2}, {"name": "y", "dim": 1, "parents": ["z"]}]}, cls=Graph)
>>> graph_from_dict(g.to_dict(), cls=Graph) == g
True
>>> graph_from_dict({"nodes": [{"name": "z", "dimm": 2}]}, cls=Graph)
Traceback (most recent call last):
...
sggraph.exceptions.SpecError: node 'z': unknown key 'dimm' in nodes[0]. Fix: did you mean 'dim'? Allowed keys: name, dim, parents, layer, stochastic, fn, init_std.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs
import cattrs

from ..exceptions import GraphError, SggraphError, SpecError
from .safe_yaml import parse_yaml
from .safe_yaml import read_yaml as read_yaml_document

#: The graph class a caller hands in (:class:`~sggraph.Graph`, which imports this module: spec builds
#: graphs of the class it is given instead of importing it).
GraphT = TypeVar("GraphT")

__all__ = [
    "ArrayParentsSpec",
    "ArraySpec",
    "GraphSpec",
    "NodeSpec",
    "check_keys",
    "graph_from_dict",
    "graph_to_dict",
    "line_for",
    "load_yaml",
    "read_yaml",
    "spec_error",
    "strict_converter",
    "yaml_line_index",
]


@attrs.frozen
class NodeSpec:
    """One entry of ``nodes:``."""

    name: str
    dim: int
    parents: list[str] = attrs.field(factory=list)
    layer: int | None = None
    stochastic: bool = False
    fn: str | None = None
    init_std: float | None = None


@attrs.frozen
class ArrayParentsSpec:
    """The ``parents:`` mapping of an array: the parent array and how neurons are wired to it."""

    array: str
    fan_in: int | None = None
    seed: int = 0
    table: list[list[int]] | None = None


@attrs.frozen
class ArraySpec:
    """One entry of ``arrays:``."""

    name: str
    count: int
    dim: int
    parents: ArrayParentsSpec | None = None
    residual: bool = False
    slots: int = 5
    layer: int | None = None
    stochastic: bool = False


@attrs.frozen
class GraphSpec:
    """A whole file."""

    name: str = "graph"
    nodes: list[NodeSpec] = attrs.field(factory=list)
    arrays: list[ArraySpec] = attrs.field(factory=list)
    feedback: dict[str, str] = attrs.field(factory=dict)


_ALLOWED = {
    "graph": [f.name for f in attrs.fields(GraphSpec)],
    "nodes": [f.name for f in attrs.fields(NodeSpec)],
    "arrays": [f.name for f in attrs.fields(ArraySpec)],
    "parents": [f.name for f in attrs.fields(ArrayParentsSpec)],
}

_TYPE_WORDS = {int: "an integer", bool: "true or false", str: "a string"}


def _strict(converter: cattrs.Converter) -> None:
    """Reject values of the wrong type instead of coercing them (``"8"`` is not a dim)."""

    def make(tp: type):
        def hook(value: Any, _: type) -> Any:
            ok = isinstance(value, tp) and (tp is bool or not isinstance(value, bool))
            if not ok:
                raise TypeError(f"expected {_TYPE_WORDS[tp]}, got {value!r}")
            return value

        return hook

    for tp in (int, bool, str):
        converter.register_structure_hook(tp, make(tp))


def strict_converter() -> cattrs.Converter:
    """The cattrs converter of the YAML formats: unknown keys are errors, scalars are not coerced
    (``"8"`` is not a dim, ``1`` is not ``true``), and a list of names is never a single string."""
    converter = cattrs.Converter(forbid_extra_keys=True)
    _strict(converter)
    list_of_str = converter.get_structure_hook(list[str])

    def names(value: Any, tp: type) -> Any:
        if isinstance(value, str):  # `parents: h1` would otherwise become the parents 'h' and '1'
            raise TypeError(f"expected a list of names, got {value!r}")
        return list_of_str(value, tp)

    converter.register_structure_hook_func(lambda tp: tp == list[str], names)
    return converter


_converter = strict_converter()


def yaml_line_index(text: str) -> dict[str, int]:
    """Map document paths (``$.nodes[1].dim``) to 1-based line numbers (read by :func:`~sggraph.core.safe_yaml.parse_yaml`).

    >>> yaml_line_index("name: g\\nnodes:\\n  - {name: z, dim: 2}\\n")["$.nodes[0].dim"]
    3
    """
    return dict(parse_yaml(text).lines)


def line_for(index: Mapping[str, int], path: str) -> int | None:
    while path:
        if path in index:
            return index[path]
        shorter = re.sub(r"(\.[^.\[\]]+|\[\d+\])$", "", path)
        if shorter == path:
            break
        path = shorter
    return None


def _node_for(data: Any, path: str) -> str | None:
    m = re.match(r"\$\.(nodes|arrays)\[(\d+)\]", path)
    if m and isinstance(data, Mapping):
        items = data.get(m.group(1))
        if isinstance(items, list) and int(m.group(2)) < len(items) and isinstance(items[int(m.group(2))], Mapping):
            name = items[int(m.group(2))].get("name")
            return name if isinstance(name, str) else None
    m = re.match(r"\$\.feedback\.([^.\[]+)", path)
    return m.group(1) if m else None


def _section(path: str) -> str:
    tail = re.findall(r"\.([A-Za-z_]+)", path)
    if tail and tail[-1] == "parents" and "arrays" in path:
        return "parents"
    for key in ("arrays", "nodes"):
        if f".{key}[" in path:
            return key
    return "graph"


def spec_error(exc: Exception, data: Any, index: Mapping[str, int], file: str | None, *,
               allowed: Mapping[str, list[str]], section_of: Callable[[str], str],
               node_of: Callable[[Any, str], str | None], missing: Mapping[str, str], value_fix: str) -> SpecError:
    """One located :class:`~sggraph.SpecError` for a cattrs structuring failure of a YAML document.

    ``allowed`` maps a section (as named by ``section_of(path)``) to its keys, ``node_of(data, path)``
    names the node a path belongs to, ``missing`` says what to write for a missing key and
    ``value_fix`` how to fix a value of the wrong type.
    """
    messages = cattrs.transform_error(exc, path="$")  # type: ignore[arg-type]
    # a misspelt key shows up twice (unknown key + missing key): report the misspelling
    messages = sorted(messages, key=lambda m: not m.startswith("extra fields"))
    first = messages[0] if messages else str(exc)
    msg, _, path = first.rpartition(" @ ")
    if not _:
        msg, path = first, "$"
    node = node_of(data, path)
    pretty = path.replace("$.", "").replace("$", "the document") or "the document"
    extra = re.match(r"extra fields found \((.*)\)", msg)
    if extra:
        key = extra.group(1).split(",")[0].strip()
        keys = allowed[section_of(path)]
        guess = difflib.get_close_matches(key, keys, n=1)
        hint = f"did you mean '{guess[0]}'? " if guess else "remove it. "
        line = line_for(index, f"{path}.{key}")
        return SpecError(f"unknown key '{key}' in {pretty}", node=node, file=file, line=line,
                         fix=f"{hint}Allowed keys: {', '.join(keys)}")
    line = line_for(index, path)
    field = path.rsplit(".", 1)[-1]
    if msg.startswith("required field missing"):
        return SpecError(f"missing required key '{field}' in {pretty.rsplit('.', 1)[0]}", node=node, file=file,
                         line=line, fix=f"add `{field}:` ({missing.get(field, 'see the YAML format in the README')})")
    return SpecError(f"invalid value for '{field}' in {pretty}: {msg}", node=node, file=file, line=line,
                     fix=value_fix)


_MISSING = {"dim": "a positive integer dimension, e.g. `dim: 4`", "name": "a unique name",
            "count": "the number of neurons, e.g. `count: 200`", "array": "the parent array's name"}


def _spec_errors(exc: Exception, data: Any, index: Mapping[str, int], file: str | None) -> SpecError:
    return spec_error(exc, data, index, file, allowed=_ALLOWED, section_of=_section, node_of=_node_for,
                      missing=_MISSING,
                      value_fix="use the expected type: names are strings; dim, count, fan_in, seed, slots and layer "
                                "are integers; parents is a list of names (or {array, fan_in, seed} for an array); "
                                "stochastic and residual are true or false")


def check_keys(data: Any, path: str, index: Mapping[str, int], file: str | None) -> None:
    """Raise :class:`SpecError` at the first mapping key that is not text (``1: x``, ``? [a]``, ``null: x``)."""
    todo, seen = [(data, path)], set()
    while todo:
        value, where = todo.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, Mapping):
            for key, item in value.items():
                if not isinstance(key, str):
                    pretty = where.replace("$.", "").replace("$", "the document")
                    raise SpecError(f"the key {key!r} in {pretty} is not a name", file=file,
                                    line=line_for(index, where), fix="keys are words such as `name`, `dim`, `nodes`")
                todo.append((item, f"{where}.{key}"))
        elif isinstance(value, list):
            todo.extend((item, f"{where}[{i}]") for i, item in enumerate(value))


def graph_from_dict(data: Any, *, cls: type[GraphT], file: str | None = None,
                    index: Mapping[str, int] | None = None) -> GraphT:
    """Build a :class:`~sggraph.Graph` from a mapping in the YAML format.

    Parameters
    ----------
    data : mapping
        The parsed document.
    cls : type
        The graph class to build (:class:`~sggraph.Graph`).
    file : str, optional
        File name used in error messages.
    index : mapping, optional
        Path-to-line index from :func:`yaml_line_index`.

    Raises
    ------
    SpecError
        Unknown key, missing key, wrong type.
    GraphError
        Structural errors (unknown parent, cycle, layers...), located at the node's line.
    """
    index = index or {}
    if not isinstance(data, Mapping):
        raise SpecError(f"the document must be a mapping with `nodes:` and/or `arrays:`, got {type(data).__name__}",
                        file=file, line=1, fix="start the file with `name: ...` and `nodes:`")
    if "state" in data:
        raise SpecError("this file declares a recurrent cell (it has `state:`), not a layered graph", file=file,
                        line=line_for(index, "$.state") or 1,
                        fix="load it with sggraph.Cell.from_yaml; on the command line pass --unroll T to work on "
                            "the graph of T unrolled steps")
    check_keys(data, "$", index, file)
    try:
        spec = _converter.structure(dict(data), GraphSpec)
    except (cattrs.BaseValidationError, TypeError, ValueError) as exc:
        raise _spec_errors(exc, data, index, file) from None
    g = cls(spec.name)
    g.sources_of[""] = (file, 1)

    def located(err: SggraphError, path: str) -> SggraphError:
        return err.located(file, line_for(index, path))

    for i, n in enumerate(spec.nodes):
        path = f"$.nodes[{i}]"
        g.sources_of[n.name] = (file, line_for(index, path))
        try:
            g.add_node(n.name, n.dim, tuple(n.parents), layer=n.layer, stochastic=n.stochastic, fn=n.fn,
                       init_std=n.init_std)
        except GraphError as err:
            raise located(err, path) from None
    for i, a in enumerate(spec.arrays):
        path = f"$.arrays[{i}]"
        g.sources_of[a.name] = (file, line_for(index, path))
        p = a.parents
        try:
            g.add_array(a.name, a.count, a.dim, parents=p.array if p else None, fan_in=p.fan_in if p else None,
                        seed=p.seed if p else 0, residual=a.residual, table=p.table if p else None, slots=a.slots,
                        layer=a.layer, stochastic=a.stochastic)
        except GraphError as err:
            raise located(err, path) from None
    for name, kind in spec.feedback.items():
        try:
            g.set_feedback(name, kind)
        except GraphError as err:
            raise located(err, f"$.feedback.{name}") from None
        g.sources_of.setdefault(name, (file, line_for(index, f"$.feedback.{name}")))
        g.sources_of[f"feedback:{name}"] = (file, line_for(index, f"$.feedback.{name}"))
    g.lint()
    return g


def graph_to_dict(g: Any) -> dict:
    """The mapping :func:`graph_from_dict` reads back to an equal graph (defaults omitted)."""
    nodes = []
    for n in g.nodes.values():
        d: dict[str, Any] = {"name": n.name, "dim": n.dim}
        if n.parents:
            d["parents"] = list(n.parents)
        if n.layer is not None:
            d["layer"] = n.layer
        if n.stochastic:
            d["stochastic"] = True
        if n.fn is not None:
            d["fn"] = n.fn
        if n.init_std is not None:
            d["init_std"] = n.init_std
        nodes.append(d)
    arrays = []
    for a in g.arrays.values():
        d = {"name": a.name, "count": a.count, "dim": a.dim}
        if a.parent is not None:
            p: dict[str, Any] = {"array": a.parent}
            if a.table is not None:
                p["table"] = [list(r) for r in a.table]
            elif a.fan_in is not None:
                p["fan_in"] = a.fan_in
            if a.seed != 0 or (a.table is None and a.fan_in is not None):
                p["seed"] = a.seed
            d["parents"] = p
        if a.residual:
            d["residual"] = True
        if a.slots != 5:
            d["slots"] = a.slots
        if a.layer is not None:
            d["layer"] = a.layer
        if a.stochastic:
            d["stochastic"] = True
        arrays.append(d)
    out: dict[str, Any] = {"name": g.name}
    if nodes:
        out["nodes"] = nodes
    if arrays:
        out["arrays"] = arrays
    if g.feedback_kinds:
        out["feedback"] = dict(g.feedback_kinds)
    return out


def read_yaml(path: str, what: str = "model file") -> tuple[Any, dict[str, int]]:
    """Read and parse the YAML file ``path`` through the safe loader
    (:func:`~sggraph.core.safe_yaml.read_yaml`): its document (None when empty) and its
    path-to-line index. Graphs and cells are read through it.

    Raises
    ------
    SpecError
        The file is missing, unreadable, too large, not UTF-8 or not valid YAML.
    """
    doc = read_yaml_document(path, what=what)
    return doc.data, doc.lines


def load_yaml(path: str, cls: type[GraphT]) -> GraphT:
    """Load a graph from a YAML file; every error names ``path`` and the line.

    Raises
    ------
    SpecError
        The file is missing, too large, not UTF-8, not valid YAML, or does not follow the format.
    GraphError
        The graph it declares is invalid.
    """
    data, index = read_yaml(path, what="graph file")
    if data is None:
        raise SpecError("the file is empty", file=str(path), line=1,
                        fix="declare at least one node under `nodes:` or one array under `arrays:`")
    return graph_from_dict(data, cls=cls, file=str(path), index=index)
