"""A traced ``nn.Module`` as a compiled net: the module's own call, the engine's λ, generators and records.

:class:`TracedNet` wraps the :class:`~sggraph.CompiledGraph` of the traced graph. Called like the
module (``net(x)``) it returns what the module returns; called with a mapping of source tensors
(``net({"x": x})``) it behaves as the compiled graph does (a dict of the terminal nodes' outputs
``[B, dim]``), so :func:`~sggraph.training.train_step` and the MSE profiler take it unchanged.
Everything else — ``set_lambda``, ``set_self_lambda``, ``adapt_lambda``, ``generator_loss``,
``update_generators``, ``records``, ``graph`` … — is the compiled graph's.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

import torch
from torch import nn
from torch.utils import _pytree as pytree

from ..exceptions import DimensionError, LambdaError
from .generators import ContextSlot
from .node_functions import SharedViews
from .partition import node_name

__all__ = ["TracedNet"]


class TracedNet(nn.Module):
    """The compiled net of a traced module (built by :func:`sggraph.trace`).

    Attributes
    ----------
    compiled : CompiledGraph
        The engine's net; its node functions run the module's own submodules.
    graph : Graph
        The traced layered graph (relays ``u@k`` bridge skip connections; cuts are ``cut:u``). A
        submodule's node is named by its qualified name with ``/`` for ``.`` (``layer1/0``); the λ
        methods take either spelling.
    module : nn.Module
        The traced module (not registered as a submodule: its parameters are reached through the
        nodes, under the nodes' names, so ``net.state_dict()`` holds each once per node).
    shapes : dict
        Per-sample shape of every node's and source's output.
    skips : dict
        ``(u, v) -> (u@k, v)``: the module's skip edges and the relay edges that carry them.
    cuts : tuple of str
        Nodes followed by a DNI cut.
    functions : dict
        Every node's function (:class:`~sggraph.tracing.node_functions.NodeFunction`).
    parametrised : list of str
        The nodes whose functions have parameters (what :meth:`adapt_lambda` adapts by default).
    """

    def __init__(self, compiled: nn.Module, module: nn.Module, sources: Mapping[str, tuple],
                 used_sources: Sequence[str], outputs: tuple, shapes: Mapping[str, tuple],
                 skips: Mapping[tuple, tuple], cuts: Sequence[str], context: ContextSlot,
                 views: SharedViews, functions: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self.compiled = compiled
        object.__setattr__(self, "module", module)
        self.source_shapes = dict(sources)
        self.used_sources = list(used_sources)
        self._leaves, self._spec = outputs
        self._output_nodes = sorted({ref for kind, ref in self._leaves if kind == "node"})
        self._single = self._spec.is_leaf() and self._leaves[0][0] == "node"  # the module returns one node's tensor
        self.shapes = dict(shapes)
        self.skips = dict(skips)
        self.cuts = tuple(cuts)
        object.__setattr__(self, "context_slot", context)
        object.__setattr__(self, "views", views)
        object.__setattr__(self, "functions", dict(functions))
        self.parametrised = [n for n, f in functions.items() if any(True for _ in f.parameters())]

    # ----------------------------------------------------------------- the engine's names
    def __getattr__(self, name: str):  # noqa: ANN204 - whatever the compiled net holds
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "compiled":
                raise
            return getattr(super().__getattr__("compiled"), name)

    @property
    def synthetic(self) -> bool:
        """When False the net is plain backprop (no mixer or generator runs)."""
        return self.compiled.synthetic

    @synthetic.setter
    def synthetic(self, value: bool) -> None:
        self.compiled.synthetic = value

    @property
    def check_finite(self) -> bool:
        """Raise naming the node when a NaN/inf gradient reaches a mixer."""
        return self.compiled.check_finite

    @check_finite.setter
    def check_finite(self, value: bool) -> None:
        self.compiled.check_finite = value

    @property
    def grouping(self) -> str:
        """How λ is tied: ``edge``, ``parent`` or ``child``."""
        return self.compiled.grouping

    def train(self, mode: bool = True) -> TracedNet:
        """Training mode for the net and the whole module (``net.eval()`` is ``model.eval()`` too)."""
        super().train(mode)
        self.module.train(mode)
        return self

    def model_parameters(self) -> Iterator[nn.Parameter]:
        """The module's parameters that the nodes use (each once, even when shared by several nodes)."""
        seen = set()
        for p in self.compiled.model_parameters():
            if id(p) not in seen:
                seen.add(id(p))
                yield p

    def adapt_lambda(self, momentum: float = 0.9, normalize: bool | str = True, nodes: Sequence[str] | None = None,
                     fast: bool = True) -> dict[str, torch.Tensor]:
        """:meth:`CompiledGraph.adapt_lambda <sggraph.CompiledGraph.adapt_lambda>` (eq. 18) on the nodes with
        parameters (default): eq. 18 weighs a node's parameter gradients, so a node without any (``nn.ReLU``,
        a relay, a cut) keeps the λ it has."""
        chosen = self.parametrised if nodes is None else [node_name(n) for n in nodes]
        for name in chosen:
            function = self.functions.get(name)
            coupled = [m for m in (function.modules() if function is not None else ())
                       if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
            if coupled:
                others = [n for n in chosen if n != name]
                raise LambdaError("adaptive λ weighs per-sample parameter gradients, and this node's BatchNorm in "
                                  "training mode couples the samples of a batch", node=name,
                                  fix=f"adapt the other nodes, net.adapt_lambda(nodes={others[:6]}), or set λ of "
                                      "this node by hand (or put the BatchNorm in eval mode for the step)")
        return self.compiled.adapt_lambda(momentum=momentum, normalize=normalize, nodes=chosen, fast=fast)

    def _edge(self, edge: tuple[str, str] | None) -> tuple[str, str] | None:
        if not (isinstance(edge, (tuple, list)) and len(edge) == 2):
            return edge
        edge = (node_name(edge[0]), node_name(edge[1]))
        return self.skips.get(edge, edge)

    def set_lambda(self, value: float | torch.Tensor, edge: tuple[str, str] | None = None, *,
                   node: str | None = None) -> None:
        """:meth:`CompiledGraph.set_lambda <sggraph.CompiledGraph.set_lambda>`; a skip edge ``(u, v)`` of the
        module names the relay edge ``(u@k, v)`` that carries it (the relays' own edges keep λ = 1)."""
        self.compiled.set_lambda(value, self._edge(edge), node=node_name(node))

    def get_lambda(self, edge: tuple[str, str]) -> float | torch.Tensor:
        """The weight of one edge (a skip edge ``(u, v)``: of ``(u@k, v)``)."""
        return self.compiled.get_lambda(self._edge(edge))

    def set_self_lambda(self, value: float | torch.Tensor, node: str | None = None) -> None:
        """:meth:`CompiledGraph.set_self_lambda <sggraph.CompiledGraph.set_self_lambda>` (``layer1.0`` or
        ``layer1/0``)."""
        self.compiled.set_self_lambda(value, node_name(node))

    def get_self_lambda(self, node: str) -> float | torch.Tensor:
        """``λ^self`` of a node."""
        return self.compiled.get_self_lambda(node_name(node))

    # ------------------------------------------------------------------------- context
    def set_context(self, context: torch.Tensor | None) -> None:
        """Set the context ``[B, k]`` the generators read from the next forward on (cDNI; None clears it)."""
        slot = self.context_slot
        if context is None:
            slot.value = None
            return
        if slot.dim is None:
            raise DimensionError("this net's generators take no context", fix="trace with context=k (the context's "
                                                                              "size) to give the generators one")
        if not isinstance(context, torch.Tensor) or context.dim() < 1:
            raise DimensionError(f"the context must be a tensor [B, {slot.dim}], got {type(context).__name__}",
                                 fix=f"pass a float tensor [B, {slot.dim}] (e.g. a one-hot label)")
        flat = context.detach().reshape(context.shape[0], -1)
        if flat.shape[1] != slot.dim:
            raise DimensionError(f"the context has {flat.shape[1]} features per sample, the net {slot.dim}",
                                 fix=f"pass a tensor [B, {slot.dim}]")
        dtype = next((p.dtype for p in self.compiled.generator_parameters()), flat.dtype)
        slot.value = flat.to(dtype) if flat.is_floating_point() else flat.to(dtype)

    # ------------------------------------------------------------------------- forward
    def _flatten_source(self, name: str, x: object) -> torch.Tensor:
        shape = self.source_shapes[name]
        if not isinstance(x, torch.Tensor):
            raise DimensionError(f"the input is a {type(x).__name__}, not a tensor", node=name,
                                 fix="pass torch tensors, batch first")
        if tuple(x.shape[1:]) != shape and not (x.dim() == 2 and x.shape[1] == math.prod(shape)):
            raise DimensionError(f"input has shape {list(x.shape)}, expected [B, {', '.join(map(str, shape))}]",
                                 node=name, fix="pass inputs of the shape the module was traced with (batch free)")
        return x.reshape(x.shape[0], -1) if x.dim() != 2 else x

    def forward(self, *args, context: torch.Tensor | None = None):  # noqa: ANN201 - the module's own output
        """``net(*inputs)`` → the module's output; ``net({name: tensor})`` → ``{terminal: [B, dim]}``.

        ``context`` (cDNI) sets the generators' context first (see :meth:`set_context`).
        """
        if context is not None:
            self.set_context(context)
        if len(args) == 1 and isinstance(args[0], Mapping):
            given = args[0]
            inputs = {k: self._flatten_source(k, v) if k in self.source_shapes else v for k, v in given.items()}
            with self.views.active():
                return self.compiled({k: v for k, v in inputs.items() if k in self.used_sources or
                                      k not in self.source_shapes})
        names = list(self.source_shapes)
        if len(args) != len(names):
            raise DimensionError(f"{type(self.module).__name__} takes {len(names)} input(s) ({', '.join(names)}), "
                                 f"got {len(args)}", fix="call the net as you call the module")
        flat = {n: self._flatten_source(n, x) for n, x in zip(names, args)}
        with self.views.active():
            values = self.compiled.activations({n: flat[n] for n in self.used_sources}, self._output_nodes) \
                if self._output_nodes else {}
        if self._single:
            v = values[self._output_nodes[0]]
            return v.reshape(v.shape[0], *self.shapes[self._output_nodes[0]])
        leaves = []
        for kind, ref in self._leaves:
            if kind == "node":
                v = values[ref]
                leaves.append(v.reshape(v.shape[0], *self.shapes[ref]))
            elif kind == "source":
                leaves.append(args[names.index(ref)])
            else:
                leaves.append(ref)
        return pytree.tree_unflatten(leaves, self._spec)

    def __repr__(self) -> str:
        n_model = sum(p.numel() for p in self.model_parameters())
        n_gen = sum(p.numel() for p in self.compiled.generator_parameters())
        nodes = [n for n in self.graph.nodes if self.graph.nodes[n].parents]
        return (f"TracedNet({type(self.module).__name__}, nodes={len(nodes)}, params={n_model}, "
                f"generator_params={n_gen}, grouping={self.grouping!r}, synthetic={self.synthetic}"
                f"{f', cuts={list(self.cuts)}' if self.cuts else ''})")
