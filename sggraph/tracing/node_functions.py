"""The function of a traced node: the module's own operations between its parents and its output.

The compiled graph hands a node ``z [B, Σ parent dims]`` (its parents' outputs flattened and
concatenated); :class:`NodeFunction` splits ``z`` back into the parents' tensors in their
original shapes (views, no copy), runs the piece of the module (an ``fx.GraphModule`` over the
user's own submodules — the same parameter objects) and returns the output flattened to
``[B, dim]`` (a view when it is contiguous). Splitting, reshaping and flattening move values
without arithmetic, and :class:`SharedViews` keeps the order in which a value's gradients are
added, so gradients are the module's own bit for bit (see :class:`SharedViews` for the one case
that groups sums differently).
"""

from __future__ import annotations

import contextlib
import math
import operator
from collections.abc import Iterator, Sequence

import torch
from torch import fx, nn

from .partition import Piece

__all__ = ["NodeFunction", "SharedViews", "piece_module"]

_INPLACE_FUNCTIONS = {operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ifloordiv,
                      operator.imod, operator.ipow, operator.iand, operator.ior, operator.ixor,
                      operator.ilshift, operator.irshift, operator.imatmul, operator.setitem}


def _mutates_first_argument(n: fx.Node, root: nn.Module) -> bool:
    """Whether ``n`` writes into its first argument (``relu_``, ``inplace=True``, ``x += y``, ``x[i] = v``)."""
    if n.kwargs.get("inplace") is True:
        return True
    if n.op == "call_method":
        return str(n.target).endswith("_") and not str(n.target).startswith("_")
    if n.op == "call_function":
        return n.target in _INPLACE_FUNCTIONS or getattr(n.target, "__name__", "").endswith("_")
    if n.op == "call_module":
        return bool(getattr(root.get_submodule(str(n.target)), "inplace", False))
    return False


def piece_module(root: nn.Module, piece: Piece) -> nn.Module:
    """A module computing ``piece`` from its parents' tensors (one argument per parent).

    A piece that is one submodule call on its parents is that submodule itself; otherwise an
    ``fx.GraphModule`` whose submodules and parameters are ``root``'s own objects. A parent tensor
    that an operation of the piece would modify in place (``nn.ReLU(inplace=True)`` right after a
    node) is cloned first: it is the parent's output, which other nodes and the backward still read.
    """
    (first, *rest) = piece.nodes
    if not rest and first.op == "call_module" and list(first.args) == list(piece.inputs) and not first.kwargs \
            and not _mutates_first_argument(first, root):
        return root.get_submodule(str(first.target))
    g = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    members = set(piece.nodes)
    mutated = {n.args[0] for n in piece.nodes if n.args and isinstance(n.args[0], fx.Node)
               and _mutates_first_argument(n, root)}
    for k, value in enumerate(piece.inputs):
        ph = g.placeholder(f"parent_{k}")
        env[value] = g.call_method("clone", (ph,)) if value in mutated else ph

    def lookup(n: fx.Node) -> fx.Node:
        if n not in env:  # a parameter or buffer read by this piece (get_attr): its own read
            env[n] = g.node_copy(n, lookup)
        return env[n]

    for n in piece.nodes:
        if n in members:
            env[n] = g.node_copy(n, lookup)
    g.output(env[piece.head])
    return fx.GraphModule(root, g, class_name=f"Node_{''.join(c if c.isalnum() else '_' for c in piece.name)}")


class SharedViews:
    """One reshaped view per node output and forward, shared by every node that reads it.

    The engine passes a node's output as ``[B, dim]``; an image-shaped parent is read through a view
    ``[B, C, H, W]``. When all readers share one view, the gradients of a value used several times
    meet in one place, one by one, in the order the module's own backward adds them: the sums are
    bit-identical to the module's (two readers with views of their own would each add their part first).
    The cache lives for one forward of the :class:`~sggraph.tracing.net.TracedNet` (:meth:`active`);
    outside it every call makes its own view.
    """

    def __init__(self) -> None:
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Share views until the block ends (then forget them)."""
        outer = self._cache
        self._cache = {}
        try:
            yield
        finally:
            self._cache = outer

    def shaped(self, t: torch.Tensor, shape: tuple) -> torch.Tensor:
        """``t [B, prod(shape)]`` as ``[B, *shape]`` (``t`` itself for vectors)."""
        if len(shape) == 1:
            return t
        cache = self._cache
        if cache is None:
            return t.reshape(t.shape[0], *shape)
        hit = cache.get(id(t))
        if hit is not None and hit[0] is t:
            return hit[1]
        view = t.reshape(t.shape[0], *shape)
        cache[id(t)] = (t, view)
        return view


class NodeFunction(nn.Module):
    """``z [B, Σ parent dims] -> [B, dim]`` through the module's own operations.

    ``z`` is split into the parents' columns (one parent: ``z`` itself) and each is viewed in its
    original shape (:class:`SharedViews`); the output is flattened (a view when contiguous).

    Parameters
    ----------
    name : str
        The node's name (for ``repr``).
    body : nn.Module or None
        The piece of the module (:func:`piece_module`), called with the parents' tensors; None for
        an identity (a relay or a DNI cut).
    in_shapes : sequence of tuple
        Per-sample shape of each parent, in the order of ``z``'s columns.
    shape : tuple
        Per-sample shape of the output.
    views : SharedViews
        The net's shared views.
    """

    def __init__(self, name: str, body: nn.Module | None, in_shapes: Sequence[tuple], shape: tuple,
                 views: SharedViews) -> None:
        super().__init__()
        self.name = name
        self.body = body
        self.in_shapes = [tuple(s) for s in in_shapes]
        self.sizes = [math.prod(s) for s in self.in_shapes]
        self.shape = tuple(shape)
        self.flat_out = len(self.shape) == 1
        self.views = views
        # a GraphModule's own __call__ wrappers cost about as much as a small layer: call its forward. Kept
        # out of the module tree (object.__setattr__): registering ``body`` twice would tie its parameters
        # to themselves under two names, which torch.func.functional_call then restores wrongly.
        object.__setattr__(self, "_run", body.forward if isinstance(body, fx.GraphModule) else body)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if len(self.sizes) == 1:
            parts = (self.views.shaped(z, self.in_shapes[0]),)
        else:
            parts = tuple(self.views.shaped(p, s) for p, s in zip(torch.split(z, self.sizes, dim=1), self.in_shapes))
        out = parts[0] if self._run is None else self._run(*parts)
        return out if self.flat_out else out.reshape(z.shape[0], -1)

    def extra_repr(self) -> str:
        ins = ", ".join(str(list(s)) for s in self.in_shapes)
        return f"{self.name!r}: ({ins}) -> {list(self.shape)}{'' if self.body is not None else ', identity'}"
