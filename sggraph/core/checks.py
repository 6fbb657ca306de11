"""The graph's checks and rewrites that read only its declarations (torch-free): the references of
:meth:`~sggraph.Graph.lint` and the relays of :meth:`~sggraph.Graph.insert_relays`.

They take the graph as an argument (``g``) and never import its class, which imports them.
"""

from __future__ import annotations

from typing import Any

import attrs

from .nodes import Node

__all__ = ["check_references", "insert_relays", "relay_depths"]


def check_references(g: Any) -> None:
    """Raise :class:`~sggraph.GraphError` naming the node unless every parent reference resolves: parents
    exist (array neurons in range), parent arrays exist and have enough neurons for ``fan_in``, tables
    stay in range without repeats, residual arrays match their parent."""
    known = set(g._nodes) | set(g._arrays)
    for n in g._nodes.values():
        for p in n.parents:
            base, _, rest = p.partition("[")
            if p in g._nodes:
                continue
            if rest and base in g._arrays:
                idx = rest.rstrip("]")
                if idx.isdigit() and int(idx) < g._arrays[base].count:
                    continue
                raise g.error(f"parent '{p}' is out of range of array '{base}' "
                                  f"({g._arrays[base].count} neurons)", n.name,
                                  f"use an index below {g._arrays[base].count}")
            if p in g._arrays:
                continue  # a whole array: z_v reads it flattened, [B, count * dim]
            raise g.error(f"unknown parent '{p}'", n.name,
                              f"declare a node named '{p}', or correct the spelling "
                              f"(known: {', '.join(sorted(known)[:12])})")
    for a in g._arrays.values():
        if a.parent is None:
            continue
        if a.parent not in g._arrays:
            what = "a plain node" if a.parent in g._nodes else "unknown"
            raise g.error(f"parent array '{a.parent}' is {what}", a.name,
                              "an array's parent must be another array (declare the input as an array "
                              "with no parents, e.g. {name: pixels, count: 784, dim: 1})")
        parent = g._arrays[a.parent]
        if a.fan_in is not None and a.fan_in > parent.count:
            raise g.error(f"fan_in={a.fan_in} is larger than parent array '{parent.name}' "
                              f"({parent.count} neurons)", a.name,
                              f"use fan_in <= {parent.count}, or a larger parent array")
        if a.table is not None and a.table and (min(min(r) for r in a.table) < 0 or
                                                 max(max(r) for r in a.table) >= parent.count):
            raise g.error(f"table index out of range of parent array '{parent.name}' "
                              f"({parent.count} neurons)", a.name,
                              f"use indices in 0..{parent.count - 1}")
        if a.table is not None and any(len(set(r)) != len(r) for r in a.table):
            raise g.error("a table row lists the same parent twice", a.name, "list each parent once per row")
        if a.residual and (parent.count != a.count or parent.dim != a.dim):
            raise g.error(f"residual needs the parent array '{parent.name}' to have the same count and dim "
                              f"({parent.count}x{parent.dim} vs {a.count}x{a.dim})", a.name,
                              "match count and dim, or set residual: false")


def insert_relays(g: Any) -> Any:
    """A copy of ``g`` in which identity relays bridge parents more than one layer up (see
    :meth:`sggraph.Graph.insert_relays`)."""
    depth = relay_depths(g)
    out = type(g)(g.name)
    out.sources_of = dict(g.sources_of)
    taken = set(g._nodes) | set(g._arrays)
    relays: dict[tuple[str, int], str] = {}

    def relay(p: str, k: int) -> str:
        if k == 0:
            return p
        key = (p, k)
        if key not in relays:
            prev = relay(p, k - 1)
            base, _, rest = p.partition("[")
            name = f"{base}_{rest[:-1]}@{k}" if rest else f"{p}@{k}"
            if name in taken:
                raise g.error(f"the relay of '{p}' would be named '{name}', which the graph already uses",
                              name, f"rename the node '{name}'")
            taken.add(name)
            relays[key] = name
            out._nodes[name] = Node(name, g._ref_dim(p), (prev,), None, False, "identity")
        return relays[key]

    for name, n in g._nodes.items():
        new_parents = []
        for p in n.parents:
            base = p.split("[", 1)[0]
            if base in depth and depth[base] < depth[name] - 1:
                new_parents.append(relay(p, depth[name] - 1 - depth[base]))
            else:
                new_parents.append(p)
        out._nodes[name] = attrs.evolve(n, parents=tuple(new_parents))
    out._arrays = dict(g._arrays)
    out._feedback = dict(g._feedback)
    return out


def relay_depths(g: Any) -> dict[str, int]:
    """Layer of every node and array as if every node sat one below its deepest parent."""
    depth: dict[str, int] = {}
    for a in g._arrays.values():  # arrays read arrays only: walk up each chain
        chain, cur = [], a
        while cur.name not in depth and cur.parent is not None and cur.parent in g._arrays:
            if cur.name in chain:
                raise g.error("cannot insert relays into a graph with a cycle", cur.name,
                          "remove the cycle first")
            chain.append(cur.name)
            cur = g._arrays[cur.parent]
        base = depth.get(cur.name, cur.layer or 0)
        depth[cur.name] = base
        for k, name in enumerate(reversed(chain), start=1):
            depth[name] = base + k
    pending = dict(g._nodes)
    while pending:
        progressed = False
        for name, n in list(pending.items()):
            bases = [p.split("[", 1)[0] for p in n.parents]
            known = [b for b in bases if b in g._nodes or b in g._arrays]
            if all(b in depth for b in known):
                ps = [depth[b] for b in known]
                depth[name] = (max(ps) + 1) if ps else (n.layer or 0)
                del pending[name]
                progressed = True
        if not progressed:
            raise g.error("cannot insert relays into a graph with a cycle", next(iter(pending)),
                          "remove the cycle first")
    return depth
