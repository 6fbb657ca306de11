"""Where a drawing's λ and feedback magnitudes come from: an explicit mapping, or a compiled net's
public read API (``edge_lambdas``, ``self_lambdas``, ``records``, ``paths``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from ..exceptions import LambdaError
from .style import UNROLLED, split_name

__all__ = ["CellLambdas", "CellMagnitudes", "Lambdas", "MappingLambdas", "NetLambdas", "NetMagnitudes"]


# ------------------------------------------------------------------ λ providers
class Lambdas:
    """λ of an edge between two drawn names (expanded names); None where unknown."""

    def edge(self, parent: str, child: str) -> float | None:
        return None

    def table_mean(self, parent_group: str, child_group: str) -> float | None:
        return None

    def effective(self, parent: str, child: str) -> float | None:
        """λ that actually mixed the last backward (1 where the child ran plain backprop)."""
        return self.edge(parent, child)



class MappingLambdas(Lambdas):
    """An explicit ``{(parent, child): λ}`` mapping; names are tried from the most specific alias."""

    def __init__(self, mapping: Mapping, aliases: Callable[[str], list[str]]) -> None:
        if not isinstance(mapping, Mapping):
            raise LambdaError(f"lambdas must be a mapping {{(parent, child): λ}}, got {type(mapping).__name__}",
                              fix="pass lambdas={('u', 'v'): 0.5, ...}")
        self.values: dict[tuple[str, str], float] = {}
        for key, value in mapping.items():
            if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, str) for k in key)):
                raise LambdaError(f"lambdas key {key!r} is not a (parent, child) pair of names",
                                  fix="key every λ by an edge: ('u', 'v')")
            try:
                v = float(value)
            except (TypeError, ValueError):
                raise LambdaError(f"λ of edge {key[0]} -> {key[1]} is not a number: {value!r}",
                                  fix="use values in [0, 1]") from None
            if not 0.0 <= v <= 1.0:
                raise LambdaError(f"λ of edge {key[0]} -> {key[1]} = {value} is outside [0, 1]",
                                  fix="mixing weights must lie in [0, 1]: 1 is backpropagation, 0 fully synthetic")
            self.values[key] = v
        self.aliases = aliases


    def edge(self, parent: str, child: str) -> float | None:
        for p in self.aliases(parent):
            for c in self.aliases(child):
                v = self.values.get((p, c))
                if v is not None:
                    return v
        return None

    def check(self, edges: Iterable[tuple[str, str]]) -> None:
        """Raise :class:`LambdaError` for keys that name no edge of the drawing."""
        if not self.values:
            return
        valid = set()
        for p, c in edges:
            for pa in self.aliases(p):
                for ca in self.aliases(c):
                    valid.add((pa, ca))
        unknown = [k for k in self.values if k not in valid]
        if unknown:
            shown = ", ".join(f"{p} -> {c}" for p, c in unknown[:4])
            raise LambdaError(f"lambdas names edges that are not in the graph: {shown}",
                              fix="key λ by existing (parent, child) edges: node names, neurons name[i], "
                                  "or two array names for all their edges")


class NetLambdas(Lambdas):
    """λ of a :class:`~sggraph.CompiledGraph`, read through its public API and its graph."""

    def __init__(self, net: Any) -> None:
        self.net = net
        self.graph = net.graph
        self._lam = {name: lam.double().cpu().numpy() for name, lam in net.edge_lambdas().items()}
        self._paths = net.paths()
        self._slots: dict[str, dict[str, list[int]]] = {}

    def edge(self, parent: str, child: str) -> float | None:
        cb, ci = split_name(child)
        pb, pi = split_name(parent)
        if cb not in self._lam:
            return None
        lam = self._lam[cb]
        if cb in self.graph.arrays:
            arr = self.graph.arrays[cb]
            if ci is None or pi is None or pb != arr.parent:
                return None
            table = self.graph.array_table(cb)
            cols = list(np.flatnonzero(table[ci] == pi))
            if arr.residual and pi == ci:
                cols.append(table.shape[1])
            return float(lam[ci, cols].mean()) if cols else None
        if cb not in self._slots:
            slots: dict[str, list[int]] = {}
            for k, ref in enumerate(self.graph.nodes[cb].parents):
                slots.setdefault(ref, []).append(k)
            self._slots[cb] = slots
        slots = self._slots[cb]
        ks = slots.get(parent, []) + (slots.get(pb, []) if pi is not None else [])
        return float(lam[ks].mean()) if ks else None

    def table_mean(self, parent_group: str, child_group: str) -> float | None:
        arr = self.graph.arrays.get(child_group)
        if arr is not None and arr.parent == parent_group and child_group in self._lam:
            return float(self._lam[child_group].mean())
        return None

    def effective(self, parent: str, child: str) -> float | None:
        path = self._paths.get(split_name(child)[0])
        if path is not None and (not self.net.synthetic or path == "plain"):
            return 1.0
        return self.edge(parent, child)


class CellLambdas(Lambdas):
    """λ of a :class:`~sggraph.CompiledCell` (its public API and its cell), for its unrolled graph or
    its folded cell."""

    def __init__(self, cnet: Any, steps: int | None) -> None:
        self.cnet = cnet
        self.state = cnet.cell.state
        self.node_lam = {name: lam.double().cpu().numpy() for name, lam in cnet.edge_lambdas().items()}
        self.lam = self.node_lam[self.state.name]
        self.table = self.state.parent_table()
        self.fan_in = self.state.fan_in
        self._paths = cnet.paths()
        theta = cnet.self_lambdas()[self.state.name].double().cpu().numpy()
        k = self.state.input_neurons
        tied = (self.lam[:, : self.fan_in] == theta[:, None]).all() and (self.lam[:k, self.fan_in] == theta[:k]).all()
        self.child_mode = bool(tied)
        self.theta = cnet.schedule(steps).detach().double().cpu().numpy() if steps and self.child_mode else None

    def _node_lam(self, node: str, ref: str, folded: bool = False) -> float | None:
        """λ of the edges from ``ref`` (``x``, ``h[i]``; folded: a base name) into pre/post node ``node``."""
        spec = self.cnet.cell.nodes.get(node)
        if spec is None or node == self.state.name:
            return None
        base = ref.partition("[")[0]
        if folded:
            ks = [k for k, p in enumerate(spec.parents) if p.partition("[")[0] == base]
        else:
            ks = [k for k, p in enumerate(spec.parents) if p == ref or (ref != base and p == base)]
        return float(self.node_lam[node][ks].mean()) if ks else None

    def edge(self, parent: str, child: str) -> float | None:
        cm, pm = UNROLLED.match(child), UNROLLED.match(parent)
        if cm is None or pm is None:
            return None
        cb, ct, ci = cm["base"], int(cm["t"]), cm["i"]
        pb, pi = pm["base"], pm["i"]
        if cb == self.state.name and ci is not None:
            i = int(ci)
            if self.theta is not None and ct <= len(self.theta):
                return float(self.theta[ct - 1, i])
            if pb == self.state.name and pi is not None:
                cols = np.flatnonzero(self.table[i] == int(pi))
                return float(self.lam[i, cols].mean()) if len(cols) else None
            return float(self.lam[i, self.fan_in])
        ref = pb if pi is None else f"{pb}[{pi}]"
        return self._node_lam(cb, ref)

    def table_mean(self, parent_group: str, child_group: str) -> float | None:
        cm, pm = UNROLLED.match(child_group), UNROLLED.match(parent_group)
        st = self.state
        if cm is None or pm is None or cm["base"] != st.name:
            return None
        t = int(cm["t"])
        if pm["base"] == st.name:
            if self.theta is not None and t <= len(self.theta):
                return float(self.theta[t - 1].mean())
            return float(self.lam[:, : self.fan_in].mean())
        k = st.input_neurons
        if self.theta is not None and t <= len(self.theta):
            return float(self.theta[t - 1, :k].mean())
        return float(self.lam[:k, self.fan_in].mean())

    def folded(self, parent: str, child: str) -> float | None:
        st = self.state
        if child == st.name:
            if parent == st.name:
                return float(self.lam[:, : self.fan_in].mean())
            return float(self.lam[: st.input_neurons, self.fan_in].mean())
        return self._node_lam(child, parent, folded=True)

    def _plain(self, child_base: str) -> bool:
        return not self.cnet.synthetic or self._paths.get(child_base) == "plain"

    def effective(self, parent: str, child: str) -> float | None:
        m = UNROLLED.match(child)
        if m is not None and self._plain(m["base"]):
            return 1.0
        return self.edge(parent, child)

    def effective_folded(self, parent: str, child: str) -> float | None:
        return 1.0 if self._plain(child) else self.folded(parent, child)


# ------------------------------------------------------------ feedback magnitudes
class NetMagnitudes:
    """Mean ``|g̃|`` each node (or neuron) of a compiled graph received in the last backward."""

    def __init__(self, net: Any) -> None:
        self.net = net
        self.records = net.records()
        self.names = list(net.paths())
        self._per: dict[str, np.ndarray | float | None] = {}

    def _of_block(self, name: str) -> np.ndarray | float | None:
        if name not in self._per:
            rec = self.records.get(name)
            value: np.ndarray | float | None = None
            if rec is not None and rec.received is not None:
                r = rec.received.detach().abs().double()
                value = r.mean(dim=tuple(range(1, r.dim()))).cpu().numpy() if name in self.net.graph.arrays \
                    and r.dim() == 3 else float(r.mean())
            self._per[name] = value
        return self._per[name]

    def any(self) -> bool:
        return any(self._of_block(n) is not None for n in self.names)

    def of(self, name: str) -> float | None:
        base, idx = split_name(name)
        value = self._of_block(base)
        if value is None:
            return None
        if isinstance(value, np.ndarray):
            return float(value[idx]) if idx is not None else float(value.mean())
        return value


class CellMagnitudes:
    """Mean ``|g̃|`` received per unrolled node of a compiled cell (or per cell node, folded)."""

    def __init__(self, cnet: Any) -> None:
        self.cnet = cnet
        self.state = cnet.cell.state.name
        self.records = cnet.records()
        steps = sorted((int(k.rsplit("@", 1)[1]), r) for k, r in self.records.items()
                       if k.startswith(f"{self.state}@"))
        self.steps = len(steps)
        self.per_step = [None if r.received is None else
                         r.received.detach().abs().double().mean(dim=(1, 2)).cpu().numpy() for _, r in steps]
        self.batch = next((r.received.shape[1] for _, r in steps if r.received is not None), None)
        self.names = list(cnet.paths())

    def any(self) -> bool:
        return any(self.folded(n) is not None for n in self.names)

    def _node(self, base: str, t: int | None) -> float | None:
        rec = None if base == self.state else self.records.get(base)
        if rec is None or rec.received is None:
            return None
        r = rec.received.detach().abs().double()
        if t is None:
            return float(r.mean())
        if self.batch is None or t > self.steps or r.shape[0] != self.steps * self.batch:
            return None
        return float(r.view(self.steps, self.batch, -1)[t - 1].mean())

    def of(self, name: str) -> float | None:
        m = UNROLLED.match(name)
        if m is None:
            return None
        base, t = m["base"], int(m["t"])
        if base == self.state:
            if t < 1 or t > self.steps or self.per_step[t - 1] is None:
                return None
            per = self.per_step[t - 1]
            return float(per[int(m["i"])]) if m["i"] is not None else float(per.mean())
        return self._node(base, t)

    def folded(self, name: str) -> float | None:
        if name == self.state:
            have = [p for p in self.per_step if p is not None]
            return float(np.mean([p.mean() for p in have])) if have else None
        return self._node(name, None)


