"""Cut a traced module's operations into the pieces that become a graph's nodes.

Every chosen submodule call is a piece; each other operation belongs to a piece:

* to its consumer's, when every use of its result is inside one piece (``x.flatten(1)`` before
  ``fc`` is part of the ``fc`` node);
* otherwise (its result feeds several pieces, or the module's output) it starts a piece of its
  own, named by ``torch.fx`` (``relu``, ``add``) — which then joins its producer's piece when
  it reads a single piece whose output nothing else uses (``relu(fc1(x))`` feeding both a block and
  a skip connection stays the node ``fc1``; ``log_softmax(fc(x))`` returned by the module stays
  the node ``fc``).

Each piece reads the outputs of other pieces and the module's inputs (its parents) and produces
one tensor (its output). No operation is computed twice, so the traced net computes exactly
what the module computes.

>>> import torch
>>> from torch import nn
>>> from sggraph.tracing.fx_reader import read_module
>>> class Skip(nn.Module):
...     def __init__(self):
...         super().__init__()
...         self.fc1, self.block, self.fc2 = nn.Linear(3, 4), nn.Linear(4, 4), nn.Linear(4, 2)
...     def forward(self, x):
...         h = torch.relu(self.fc1(x))
...         return self.fc2(self.block(h) + h)
>>> pieces = partition(read_module(Skip(), (torch.zeros(2, 3),)))
>>> [(p.name, p.parents) for p in pieces.pieces]
[('fc1', ('x',)), ('block', ('fc1',)), ('fc2', ('block', 'fc1'))]
"""

from __future__ import annotations

import attrs
import torch
from torch import fx

from ..exceptions import CompileError
from .fx_reader import Reading

__all__ = ["Partition", "Piece", "node_name", "partition"]


def node_name(name: str) -> str:
    """The graph's name for a submodule's node: its qualified name with ``/`` for ``.`` (the engine keys
    modules by node name, and module names may not contain dots). Other names are unchanged.

    >>> node_name("layer1.0"), node_name("fc")
    ('layer1/0', 'fc')
    """
    return name.replace(".", "/") if isinstance(name, str) else name


@attrs.define
class Piece:
    """One node of the traced graph.

    Attributes
    ----------
    name : str
        The node's name: the submodule's qualified name with ``/`` for ``.`` (``layer1/0``; a second call
        ``layer1/0#2``),
        or the fx name of an operation piece (``add``).
    module : str or None
        Qualified name of the chosen submodule (None for an operation piece).
    nodes : list of fx.Node
        Its operations, in the module's order.
    head : fx.Node
        The operation whose result is the node's output.
    inputs : list of fx.Node
        The values it reads from outside (other pieces' heads or placeholders), in first-use order.
    parents : tuple of str
        The names of those values' nodes (sources: the forward's argument names).
    shape : tuple of int
        Per-sample shape of the output (the batch dimension removed).
    """

    name: str
    module: str | None
    nodes: list
    head: fx.Node
    inputs: list = attrs.Factory(list)
    parents: tuple = ()
    shape: tuple = ()


@attrs.frozen
class Partition:
    """The pieces of a traced module, its sources and its outputs.

    Attributes
    ----------
    reading : Reading
    pieces : list of Piece
        In the module's order.
    sources : dict
        Forward argument name -> per-sample shape, for every argument (used or not).
    used_sources : list of str
        The arguments some piece reads.
    output : fx.Node
        The graph's output node (its ``args[0]`` is the returned structure).
    name_of : dict
        ``fx.Node -> node name`` for every piece head and placeholder.
    """

    reading: Reading
    pieces: list
    sources: dict
    used_sources: list
    output: fx.Node
    name_of: dict


_OUT = "<output>"


def _owners(graph: fx.Graph, chosen: set) -> dict:
    """Reverse pass: each operation's piece (a chosen call, or the operation itself when shared)."""
    owner: dict = {}
    dead = []
    for n in reversed(list(graph.nodes)):
        if n.op in ("placeholder", "output", "get_attr"):
            continue
        if n in chosen:
            owner[n] = n
            continue
        users = [u for u in n.users if u.op == "output" or u in owner]  # results nobody reads come later
        if not users:
            dead.append(n)
            continue
        owners = {_OUT if u.op == "output" else owner[u] for u in users}
        owner[n] = owners.pop() if len(owners) == 1 and _OUT not in owners else n
    for n in reversed(dead):  # a result nobody reads (an in-place op): joins its only producer's piece
        producers = {owner.get(a) for a in n.all_input_nodes if a.op not in ("get_attr", "placeholder")}
        producers.discard(None)
        if len(producers) != 1:
            raise CompileError(f"the operation '{n.name}' ({n.format_node()}) has an unused result and no single "
                               "producing node", node=n.name,
                               fix="keep it inside one node: list the submodule that contains it in nodes=[...]")
        owner[n] = producers.pop()
    return owner


def _external_inputs(members: list, member_set: set) -> list:
    found, seen = [], set()
    for n in members:
        for a in n.all_input_nodes:
            if a.op == "get_attr" or a in member_set or a in seen:
                continue
            seen.add(a)
            found.append(a)
    return found


def _merge_into_producers(groups: dict, heads: dict, owner: dict, chosen: set) -> None:
    """An operation piece whose inputs all come from one piece P, when nothing else reads P's output,
    joins P (P's output becomes the operation's)."""
    changed = True
    while changed:
        changed = False
        for g in list(groups):
            if g in chosen or g not in groups:
                continue
            members = groups[g]
            ext = _external_inputs(members, set(members))
            producers = {owner.get(a, a) for a in ext}
            if len(producers) != 1:
                continue
            p = producers.pop()
            if p not in groups:  # a placeholder: sources have no function to extend
                continue
            if any(u.op == "output" or owner.get(u) is not g for u in heads[p].users):
                continue
            for n in members:
                owner[n] = p
            groups[p] = groups[p] + members
            heads[p] = heads[g]
            del groups[g], heads[g]
            changed = True


def _name_pieces(groups: dict, chosen: set, taken: set) -> dict:
    names, calls = {}, {}
    for g in groups:
        if g in chosen:
            calls[g.target] = calls.get(g.target, 0) + 1
            base = node_name(g.target)
            name = base if calls[g.target] == 1 else f"{base}#{calls[g.target]}"
        else:
            name = g.name
        while name in taken:
            name += "_op"
        taken.add(name)
        names[g] = name
    return names


def _check_head(piece: Piece, info, batch: int) -> tuple:
    what = f"{'submodule' if piece.module else 'operation'} '{piece.name}'"
    if info is None or info.kind != "tensor":
        kind = "nothing" if info is None else f"a {info.kind}"
        raise CompileError(f"the {what} returns {kind}, not a tensor: a node's output must be one tensor",
                           node=piece.name,
                           fix="leave it out of nodes=[...] (its call then belongs to the node that uses its "
                               "result, e.g. the submodule after it), or wrap it in a module returning one tensor")
    if not info.dtype.is_floating_point and not info.dtype.is_complex:
        raise CompileError(f"the {what} returns a {info.dtype} tensor: a node's output must carry gradients",
                           node=piece.name, fix="leave it out of nodes=[...] so that it belongs to its consumer")
    if len(info.shape) == 0 or info.shape[0] != batch:
        raise CompileError(f"the {what} returns shape {list(info.shape)}: the first dimension must be the batch "
                           f"({batch})", node=piece.name,
                           fix="choose nodes whose outputs are batch first (leave this one out of nodes=[...])")
    return tuple(info.shape[1:])


def partition(reading: Reading) -> Partition:
    """Cut ``reading``'s operations into pieces (see the module docstring)."""
    graph = reading.graph
    chosen = set(reading.chosen)
    owner = _owners(graph, chosen)
    order = list(graph.nodes)
    groups: dict = {}
    for n in order:
        if n in owner:
            groups.setdefault(owner[n], []).append(n)
    heads = {g: g for g in groups}
    _merge_into_producers(groups, heads, owner, chosen)
    placeholders = [n for n in order if n.op == "placeholder"]
    sources = {}
    for p in placeholders:
        info = reading.values.get(p)
        sources[str(p.target)] = tuple(info.shape[1:]) if info is not None and info.kind == "tensor" else ()
    names = _name_pieces(groups, chosen, set(sources))
    name_of = {p: str(p.target) for p in placeholders}
    for g, name in names.items():
        name_of[heads[g]] = name
    pieces, used = [], []
    for g in sorted(groups, key=order.index):
        members = groups[g]
        piece = Piece(names[g], g.target if g in chosen else None, members, heads[g])
        piece.inputs = _external_inputs(members, set(members))
        if not piece.inputs:
            what = f"submodule '{piece.module}'" if piece.module else f"operation '{piece.name}'"
            raise CompileError(f"the {what} reads none of the module's inputs (it is computed from parameters or "
                               "constants alone, and would be a source of the graph)", node=names[g],
                               fix="leave it out of nodes=[...], or compute it inside the submodule that uses it")
        piece.parents = tuple(name_of[a] for a in piece.inputs)
        piece.shape = _check_head(piece, reading.values.get(heads[g]), reading.batch)
        for a in piece.inputs:
            if a.op == "placeholder" and name_of[a] not in used:
                used.append(name_of[a])
        pieces.append(piece)
    if not pieces:
        raise CompileError(f"{type(reading.root).__name__} has no node to train: its forward calls no submodule and "
                           "computes nothing from its inputs", fix="trace a module whose forward calls submodules")
    output = next(n for n in order if n.op == "output")
    return Partition(reading, pieces, sources, [s for s in sources if s in used], output, name_of)


def example_dtype(reading: Reading) -> torch.dtype:
    """The dtype of the module's first floating input (the generators' dtype)."""
    for n, info in reading.values.items():
        if n.op == "placeholder" and info.dtype is not None and info.dtype.is_floating_point:
            return info.dtype
    return torch.get_default_dtype()
