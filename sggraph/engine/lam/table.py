"""The λ table: one owner for every mixing weight of a compiled net.

Storage is per edge, as the backward reads it: each block keeps ``lam`` (its in-edges: ``[P]``
for a node, one per parent ref; ``[N, F (+1 residual)]`` for an array; ``[N, F + 1]`` for a
recurrent state, column ``F`` its input edge) and ``λ^self`` ``lam_self`` (``[]`` or ``[N]``) as
buffers, under the checkpoint keys ``blocks.<name>.lam`` / ``.lam_self``. The table owns them:
every write goes through it, keyed by what owns the value under the net's grouping

* ``edge`` — each edge on its own, ``λ^self`` apart (eq. 5–6 as written);
* ``parent`` — ``λ_u``: one value over all out-edges of node (or neuron) ``u`` (§4.2);
* ``child`` — ``θ_v = λ^self_v = λ_{·→v}``: all in-edges of ``v`` and its ``λ^self`` (the paper's
  experiment code);

and a write is checked whole on staged copies before any table changes (a bad value leaves every
table as it was). The blocks only read their tables; the path each node runs (``child`` when all
its in-edges equal ``λ^self``, else ``general``) is decided here and cached until a table
changes (tensor version counters: no device sync per forward).

>>> import sggraph
>>> g = sggraph.Graph(); g.add_node("z", 2); g.add_node("h", 3, ["z"], fn="tanh"); g.add_node("y", 1, ["h"], fn="linear")
>>> net = sggraph.compile(g, grouping="parent")
>>> net.lambdas.set(0.25, node="h")          # λ_h on h's out-edges
>>> net.lambdas.get(("h", "y")), net.lambdas.get(("z", "h")), net.lambdas.mode("y")
(0.25, 1.0, 'general')
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping

import torch
from torch import nn

from ...exceptions import LambdaError
from ..blocks import ArrayBlock, NodeBlock, StateBlock, split_ref

__all__ = ["GROUPINGS", "LambdaTable", "check_lambda_value"]

#: Named groupings of the mixing weights.
#: ``edge``: every edge free, ``λ^self = 1`` unless set (eq. 5–6 as written);
#: ``parent``: one λ per node over its out-edges (paper §4.2);
#: ``child``: ``λ^self_v = λ_{·→v} = θ_v`` (the paper's experiment code; SparseNet runs).
GROUPINGS = ("edge", "parent", "child")


def check_lambda_value(value: object, what: str) -> None:
    """Raise :class:`~sggraph.LambdaError` unless ``value`` is a real number or tensor in ``[0, 1]``."""
    t = torch.as_tensor(value, dtype=torch.float64)
    if torch.isnan(t).any():
        raise LambdaError(f"{what} is NaN", fix="use values in [0, 1]")
    if (t < 0).any() or (t > 1).any():
        bad = t[(t < 0) | (t > 1)].flatten()[0].item()
        raise LambdaError(f"{what} = {bad} is outside [0, 1]", fix="mixing weights must lie in [0, 1]: "
                          "1 is backpropagation, 0 fully synthetic")


def _shorten(value: object, limit: int = 40) -> str:
    text = f"shape {list(value.shape)}" if isinstance(value, torch.Tensor) and value.dim() > 0 else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Stage:
    """Copies of the tables a write changes; committed only when the whole write succeeded."""

    def __init__(self, blocks: Mapping[str, nn.Module]) -> None:
        self.blocks = blocks
        self.copies: dict[tuple[str, str], torch.Tensor] = {}

    def __call__(self, name: str, which: str = "lam") -> torch.Tensor:
        key = (name, which)
        if key not in self.copies:
            self.copies[key] = getattr(self.blocks[name], which).detach().clone()
        return self.copies[key]

    @torch.no_grad()
    def commit(self) -> None:
        for (name, which), new in self.copies.items():
            live = getattr(self.blocks[name], which)
            if not torch.equal(live, new):
                live.copy_(new)


class LambdaTable:
    """Every λ of one compiled net (see the module docstring).

    Parameters
    ----------
    owner : nn.Module
        The compiled net: its ``blocks`` (name -> node, array or recurrent state block, whose ``lam``
        and ``lam_self`` buffers hold the values) and its ``grouping`` (one of :data:`GROUPINGS`) are
        read at each call, so copies of the net (``copy.deepcopy``) and device moves stay consistent.
    sources : collection of str
        The net's sources (named in errors).
    what : str
        ``"graph"`` or ``"cell"`` (errors; a cell ties an edge's write to its child's in-edges).
    cell_input : str, optional
        A cell's state input (the source of the state's column-``F`` edge).
    """

    def __init__(self, owner: nn.Module, sources=(), what: str = "graph", cell_input: str | None = None) -> None:
        self._owner = owner
        self.sources = set(sources)
        self.what = what
        self.cell_input = cell_input
        self._modes: dict[str, tuple[tuple, str]] = {}

    @property
    def blocks(self) -> Mapping[str, nn.Module]:
        return self._owner.blocks

    @property
    def grouping(self) -> str:
        return self._owner.grouping

    def _find(self, name: str) -> nn.Module | None:
        blocks = self.blocks
        return blocks[name] if name in blocks else None  # noqa: SIM401 - nn.ModuleDict has no get

    def block(self, name: str) -> nn.Module:
        """The block of a node, array or state (a :class:`~sggraph.LambdaError` for sources and unknown names)."""
        blocks = self.blocks
        if name not in blocks:
            if self.what == "cell":
                raise LambdaError(f"'{name}' is not a node of the cell", node=name, fix="name a node or the state")
            what = "a source (it has no in-edges)" if name in self.sources else "not a node of the graph"
            raise LambdaError(f"'{name}' is {what}", node=name, fix="name a non-source node or array")
        return blocks[name]

    # ------------------------------------------------------------------ reading
    def views(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lam, lam_self)`` of a block for its backward (read-only: detached views of the storage)."""
        b = self.blocks[name]
        return b.lam.detach(), b.lam_self.detach()

    def edges(self) -> dict[str, torch.Tensor]:
        """Every block's in-edge weights (copies): nodes ``[P]``, arrays ``[N, F (+1)]``, a state ``[N, F + 1]``."""
        return {name: b.lam.detach().clone() for name, b in self.blocks.items()}

    def selves(self) -> dict[str, torch.Tensor]:
        """Every block's ``λ^self`` (copies): nodes ``[]``, arrays and states ``[N]``."""
        return {name: b.lam_self.detach().clone() for name, b in self.blocks.items()}

    def snapshot(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Copies of every table, for :meth:`restore` (a measurement that runs at other weights)."""
        return {name: (b.lam.detach().clone(), b.lam_self.detach().clone()) for name, b in self.blocks.items()}

    @torch.no_grad()
    def restore(self, snapshot: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Put back the tables of a :meth:`snapshot`."""
        for name, (lam, lam_self) in snapshot.items():
            block = self.blocks[name]
            block.lam.copy_(lam)
            block.lam_self.copy_(lam_self)

    def mode(self, name: str) -> str:
        """``child`` when every in-edge weight of ``name`` equals its ``λ^self`` (one mixer on the output
        serves both), else ``general``; cached until a table of ``name`` changes."""
        b = self.blocks[name]
        lam, lam_self = b.lam, b.lam_self
        key = (id(lam), lam._version, id(lam_self), lam_self._version)
        hit = self._modes.get(name)
        if hit is not None and hit[0] == key:
            return hit[1]
        if isinstance(b, StateBlock):
            lam = lam.clone()
            lam[b.input_neurons:, b.fan_in] = lam_self[b.input_neurons:]  # the unused input column
            tied = bool((lam == lam_self.unsqueeze(1)).all())
        else:
            per_edge = lam_self.unsqueeze(1) if isinstance(b, ArrayBlock) else lam_self
            tied = lam.numel() == 0 or bool((lam == per_edge).all())
        mode = "child" if tied else "general"
        self._modes[name] = (key, mode)
        return mode

    def get(self, edge: tuple[str, str]) -> float | torch.Tensor:
        """The weight of one edge (float), or of several (tensor; all edges between two arrays ``[N, F(+1)]``)."""
        if self.what == "cell":
            return self._get_cell(edge)
        name, where = self._edge_mask(*edge)
        lam = self.blocks[name].lam
        vals = lam[where]
        if isinstance(where, torch.Tensor) and bool(where.all()):
            return lam.clone()
        return float(vals.flatten()[0]) if vals.numel() >= 1 and bool((vals == vals.flatten()[0]).all()) \
            else vals.clone()

    def get_self(self, node: str) -> float | torch.Tensor:
        """``λ^self`` of a node (float) or of an array or state (``[N]`` tensor; ``name[i]``: one neuron)."""
        base, idx = split_ref(node)
        lam_self = self.block(base).lam_self
        if idx is not None:
            return float(lam_self[idx])
        return float(lam_self) if lam_self.dim() == 0 else lam_self.clone()

    def _get_cell(self, edge: tuple[str, str]) -> float | torch.Tensor:
        parent, child = edge
        (cb, ci), (pb, pi) = split_ref(child), split_ref(parent)
        block = self.block(cb)
        if isinstance(block, StateBlock):
            st = block
            if ci is None:
                vals = st.lam if pb == st.name else st.lam[:, st.fan_in]
                return vals.clone()
            cols = torch.zeros(st.fan_in + 1, dtype=torch.bool, device=st.lam.device)
            if pb == st.name:
                cols[: st.fan_in] = True if pi is None else st.table[ci] == pi
            else:
                cols[st.fan_in] = ci < st.input_neurons and pb == self.cell_input
            vals = st.lam[ci, cols]
        else:
            vals = block.lam[[k for k, p in enumerate(block.parents) if p == parent or split_ref(p)[0] == parent]]
        if vals.numel() == 0:
            raise LambdaError(f"there is no edge {parent} -> {child}", node=child,
                              fix="name an existing (parent, child) pair; state neurons are name[i]")
        first = vals.flatten()[0]
        return float(first) if bool((vals == first).all()) else vals.clone()

    # ------------------------------------------------------------------ topology
    def _edge_mask(self, parent: str, child: str) -> tuple[str, object]:
        """The block name and index/mask of its ``lam`` entries for edge ``parent → child``."""
        cbase, cidx = split_ref(child)
        pbase, pidx = split_ref(parent)
        block = self._find(cbase)
        if isinstance(block, NodeBlock) and cidx is None:
            slots = [i for i, p in enumerate(block.parents) if p == parent]
            if slots:
                return cbase, slots
        if isinstance(block, ArrayBlock) and block.parent == pbase:
            mask = block.columns_for(pidx, cidx)
            if bool(mask.any()):
                return cbase, mask
        raise LambdaError(f"there is no edge {parent} -> {child}", node=child,
                          fix="name an existing (parent, child) pair; neurons of arrays are name[i], "
                              "or use array names for all edges between two arrays")

    def _out_edges(self, parent: str) -> list[tuple[str, object]]:
        pbase, pidx = split_ref(parent)
        found: list[tuple[str, object]] = []
        for name, block in self.blocks.items():
            if isinstance(block, NodeBlock):
                slots = [i for i, p in enumerate(block.parents)
                         if p == parent or (pidx is None and split_ref(p)[0] == pbase)]
                if slots:
                    found.append((name, slots))
            elif isinstance(block, ArrayBlock) and block.parent == pbase:
                found.append((name, block.columns_for(pidx, None)))
        return found

    # ------------------------------------------------------------------ writing
    def set(self, value: float | torch.Tensor, edge: tuple[str, str] | None = None, *, node: str | None = None) -> None:
        """Set λ per the grouping (see :meth:`sggraph.CompiledGraph.set_lambda`); checked whole, then written."""
        target = node
        if target is None and isinstance(edge, tuple) and len(edge) == 2 and isinstance(edge[1], str):
            target = edge[1]
        self._check_type(value, target)
        check_lambda_value(value, "λ")
        if edge is not None and node is not None:
            raise LambdaError("give either edge or node, not both", fix="call set_lambda once per target")
        write = self._stage_cell if self.what == "cell" else self._stage_graph
        self._staged(lambda stage: write(stage, value, edge, node), value, target)

    def set_self(self, value: float | torch.Tensor, node: str | None = None) -> None:
        """Set ``λ^self`` of every node or of one (under ``child`` also its in-edges: ``θ_v``)."""
        self._check_type(value, node)
        check_lambda_value(value, "λ^self")
        self._staged(lambda stage: self._stage_self(stage, value, node), value, node)

    def _check_type(self, value: object, target: str | None) -> None:
        real = isinstance(value, numbers.Real) or (isinstance(value, torch.Tensor) and not value.is_complex())
        if isinstance(value, (str, bytes)) or not real:
            raise LambdaError(f"λ must be a number in [0, 1] or a tensor of them, got {type(value).__name__} "
                              f"{_shorten(value)}", node=target,
                              fix="pass a float such as 0.9, or a torch tensor (torch.tensor(...) of a list)")

    def _staged(self, write: Callable[[_Stage], None], value: object, target: str | None) -> None:
        stage = _Stage(self.blocks)
        try:
            with torch.no_grad():
                write(stage)
        except LambdaError as err:
            if err.node is None and target is not None:
                err.node = target
                err.args = (str(err),)
            raise
        except (RuntimeError, ValueError, TypeError, IndexError):  # torch's own words name no node
            raise self._misfit(value, target) from None
        stage.commit()

    def _misfit(self, value: object, target: str | None) -> LambdaError:
        """The error for a λ value whose shape fits no λ table of ``target`` (or of some node, when None)."""
        shape = list(value.shape) if isinstance(value, torch.Tensor) else None
        blocks = self.blocks
        if target is None and shape is not None:  # every node: name the first whose table the tensor does not fit
            for name, block in blocks.items():
                try:
                    fits = list(torch.broadcast_shapes(tuple(shape), tuple(block.lam.shape))) == list(block.lam.shape)
                except RuntimeError:
                    fits = False
                if not fits:
                    target = name
                    break
        block = self._find(split_ref(target)[0]) if target is not None else None
        table = f" (its λ table has shape {list(block.lam.shape)})" if block is not None else ""
        what = f"a λ tensor of shape {shape}" if shape is not None else f"the λ value {_shorten(value)}"
        return LambdaError(f"{what} does not fit{table}", node=target,
                           fix="pass a float in [0, 1], or a tensor of the table's shape (arrays: [count] for one λ "
                               "per neuron, [count, fan_in(+1 residual)] for one per edge)")

    @staticmethod
    def _write(stage: _Stage, name: str, where: object, value: object) -> None:
        lam = stage(name)
        if isinstance(value, torch.Tensor) and value.dim() > 0 and isinstance(where, torch.Tensor):
            v = value.to(lam)
            if v.shape == lam.shape:
                lam[where] = v[where]
                return
            raise LambdaError(f"λ tensor of shape {list(v.shape)} does not match the edge table "
                              f"{list(lam.shape)}", node=name,
                              fix="pass a scalar or a tensor of the table's shape [count, fan_in(+1)]")
        lam[where] = float(value) if not isinstance(value, torch.Tensor) else value.to(lam)

    def _stage_graph(self, stage: _Stage, value, edge, node) -> None:
        if edge is None and node is None:
            for name in self.blocks:
                lam = stage(name)
                lam.fill_(float(value)) if not isinstance(value, torch.Tensor) or value.dim() == 0 else lam.copy_(value)
                if self.grouping == "child":
                    stage(name, "lam_self").fill_(float(value))
            return
        if edge is not None:
            if not (isinstance(edge, tuple) and len(edge) == 2):
                raise LambdaError(f"edge must be a (parent, child) pair, got {edge!r}", fix="pass edge=('u', 'v')")
            name, where = self._edge_mask(*edge)
            if self.grouping == "child":
                node = edge[1]
            elif self.grouping == "parent":
                node = edge[0]
            else:
                self._write(stage, name, where, value)
                return
        assert node is not None
        if self.grouping == "parent":
            self._stage_parent(stage, node, value)
            return
        self._stage_node_in(stage, node, value, include_self=self.grouping == "child")

    def _stage_parent(self, stage: _Stage, node: str, value) -> None:
        edges = self._out_edges(node)
        if not edges:
            raise LambdaError("this node has no out-edges", node=node, fix="name a node with children")
        parent = self._find(node)
        if isinstance(value, torch.Tensor) and value.dim() == 1 and isinstance(parent, ArrayBlock):
            if value.shape != (parent.count,):
                raise LambdaError(f"λ tensor of shape {list(value.shape)} for array '{node}' of {parent.count} "
                                  "neurons", node=node, fix=f"pass one λ per neuron, a tensor of shape "
                                                            f"[{parent.count}], or a scalar")
            self._spread_out_edges(node, value, None, stage)  # one λ per neuron on all its out-edges
            return
        for name, where in edges:
            block = self.blocks[name]
            if isinstance(value, torch.Tensor) and value.dim() == 1 and isinstance(block, ArrayBlock):
                lam = stage(name)  # one λ per parent neuron: spread over the table
                per_edge = value.to(lam)[block.table]
                if block.residual:
                    per_edge = torch.cat([per_edge, value.to(lam)[: block.count, None]], dim=1)
                self._write(stage, name, where, per_edge)
            else:
                self._write(stage, name, where, value)

    def _stage_node_in(self, stage: _Stage, node: str, value, include_self: bool) -> None:
        base, idx = split_ref(node)
        block = self.block(base)
        lam, lam_self = stage(base), stage(base, "lam_self")
        if isinstance(block, ArrayBlock):
            sel = slice(None) if idx is None else idx
            v = value.to(lam) if isinstance(value, torch.Tensor) else float(value)
            if isinstance(v, torch.Tensor) and v.dim() == 1 and idx is None:
                lam[:] = v.unsqueeze(1)
            else:
                lam[sel] = v
            if include_self:
                lam_self[sel] = v
        else:
            lam.fill_(float(value))
            if include_self:
                lam_self.fill_(float(value))

    def _stage_self(self, stage: _Stage, value, node: str | None) -> None:
        if self.what == "cell":
            if self.grouping == "child":
                self._stage_cell(stage, value, None, node)
                return
            for name in list(self.blocks) if node is None else [node]:
                self.block(name)
                lam_self = stage(name, "lam_self")
                lam_self[...] = value.to(lam_self) if isinstance(value, torch.Tensor) else float(value)
            return
        for t in [node] if node is not None else list(self.blocks):
            base, idx = split_ref(t)
            self.block(base)
            if self.grouping == "child":
                self._stage_node_in(stage, t, value, include_self=True)
                continue
            lam_self = stage(base, "lam_self")
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                lam_self.copy_(value)
            elif idx is None:
                lam_self.fill_(float(value))
            else:
                lam_self[idx] = float(value)

    def _stage_cell(self, stage: _Stage, value, edge, node) -> None:
        """A cell ties a node's in-edges: ``edge=(u, v)`` sets ``v``'s; a ``[N]`` tensor sets the state per neuron."""
        if edge is not None:
            if not (isinstance(edge, tuple) and len(edge) == 2):
                raise LambdaError(f"edge must be a (parent, child) pair, got {edge!r}", fix="pass edge=('u', 'v')")
            self._get_cell(edge)  # the edge must exist
            node = split_ref(edge[1])[0]
        for name in list(self.blocks) if node is None else [node]:
            self.block(name)
            lam, lam_self = stage(name), stage(name, "lam_self")
            v = value.to(lam) if isinstance(value, torch.Tensor) else float(value)
            if isinstance(v, torch.Tensor) and v.dim() == 1 and lam.dim() == 2:
                lam[:] = v.unsqueeze(1)
            else:
                lam[...] = v
            if self.grouping == "child":
                lam_self[...] = v

    # ------------------------------------------------------- adaptation's writes
    def out_edge_mean(self, name: str) -> torch.Tensor:
        """The current λ of a parent: the mean over its out-edges (``[]`` for a node, ``[N]`` per neuron of an
        array; NaN where a neuron has no out-edge)."""
        block = self.blocks[name]
        units = block.count if isinstance(block, ArrayBlock) else 1
        total = torch.zeros(units, dtype=block.lam.dtype, device=block.lam.device)
        count = torch.zeros_like(total)
        for child in self.blocks.values():
            if isinstance(child, ArrayBlock) and child.parent == name:
                ones = torch.ones_like(child.lam[:, : child.fan_in]).flatten()
                total.index_add_(0, child.flat_table, child.lam[:, : child.fan_in].flatten())
                count.index_add_(0, child.flat_table, ones)
                if child.residual:
                    total += child.lam[:, child.fan_in]
                    count += 1
            elif isinstance(child, NodeBlock):
                for k, ref in enumerate(child.parents):
                    base, idx = split_ref(ref)
                    if base == name:
                        sel = slice(None) if idx is None else idx
                        total[sel] += child.lam[k]
                        count[sel] += 1
        mean = total / count
        return mean if isinstance(block, ArrayBlock) else mean[0]

    @torch.no_grad()
    def write_out_edges(self, name: str, value: torch.Tensor, only: torch.Tensor | None = None) -> None:
        """Set every out-edge of parent ``name`` to ``value`` (``[]``, or ``[N]`` per neuron of an array; a
        whole array read by a node takes the mean over its neurons). ``only`` (bool, like ``value``):
        write the out-edges of those units alone. Values come from an adaptation rule (in ``[0, 1]``)."""
        self._spread_out_edges(name, value, only, None)

    def _spread_out_edges(self, name: str, value, only, stage: _Stage | None) -> None:
        value = torch.as_tensor(value)
        keep = torch.ones_like(value, dtype=torch.bool) if only is None else only
        for cname, child in self.blocks.items():
            lam = child.lam if stage is None else stage(cname)
            if isinstance(child, ArrayBlock) and child.parent == name:
                v = value.to(lam)
                cols = lam[:, : child.fan_in]
                cols[keep[child.table]] = v[child.table][keep[child.table]]
                if child.residual:
                    res = lam[:, child.fan_in]
                    res[keep[: child.count]] = v[: child.count][keep[: child.count]]
            elif isinstance(child, NodeBlock):
                for k, ref in enumerate(child.parents):
                    base, idx = split_ref(ref)
                    if base != name:
                        continue
                    if idx is None and bool(keep.any()):
                        lam[k] = value.nanmean()
                    elif idx is not None and bool(keep.reshape(-1)[idx]):
                        lam[k] = value[idx]

    @torch.no_grad()
    def write_theta(self, name: str, theta: torch.Tensor) -> None:
        """``θ_v`` of the ``child`` grouping: ``λ^self`` and every in-edge of ``name`` (one row per unit)
        take ``theta`` (``[]`` or ``[N]``, from an adaptation rule)."""
        block = self.blocks[name]
        lam, lam_self = block.lam, block.lam_self
        lam_self.copy_(theta)
        lam.copy_(theta.unsqueeze(-1).expand_as(lam) if lam.dim() == 2 else theta.expand_as(lam))
