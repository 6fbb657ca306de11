"""Synthetic-gradient generators built for a traced node's shapes.

A traced node ``v`` reads its parents' outputs ``z_v`` and its generator predicts the feedback
at its output, ``ĥ_v(z_v) ≈ E[g̃_v | z_v]`` (eq. 13). The compiled graph calls a generator with
``z [B, Σ parent dims]`` (flattened) and wants ``[B, dim]``; the modules here see the parents'
tensors in their original shapes:

* ``"linear"`` — zero-initialised (DNI's choice): a dense ``W z + c`` when the output is a vector
  (or any non-image shape), a convolution per parent when the output is an image ``(C, H, W)``
  (3×3, stride ``H_in / H``, padding 1 — never a dense ``CHW × CHW`` matrix);
* ``"mlp"`` — one hidden layer (ReLU) of the output's width (channels for images), the last layer
  zero-initialised, like DNI's synthesizer;
* ``"none"`` — no learned generator: ``ĥ = 0``, nothing to train (λ < 1 on such a node scales its
  backpropagated gradient);
* a callable ``(node_name, output_shape) -> nn.Module``: the module is called with the node's
  parents' tensors in their original shapes (and the context, when the net has one) and returns
  ``[B, *output_shape]``.

With a context (cDNI: e.g. the one-hot label) the built-in generators add a zero-initialised
linear map of it (per channel for images). The context is set on the net for each forward and
reaches every generator through one shared :class:`ContextSlot`.

>>> import torch
>>> gen = build_generator("linear", "conv1", [(3, 8, 8)], (16, 4, 4), ContextSlot(None), torch.float32)
>>> gen(torch.randn(5, 3 * 8 * 8)).shape
torch.Size([5, 256])
>>> type(gen.body.convs[0]).__name__, gen.body.convs[0].stride
('Conv2d', (2, 2))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..exceptions import CompileError, DimensionError

__all__ = ["GENERATOR_KINDS", "ContextSlot", "NoGenerator", "ShapedGenerator", "build_generator"]

#: Named generator kinds of :func:`build_generator`.
GENERATOR_KINDS = ("linear", "mlp", "none")

#: The most weights a dense built-in generator may hold before the node needs its own generator.
MAX_DENSE_WEIGHTS = 2 ** 26


class ContextSlot:
    """The context ``[B, k]`` the net's generators read (cDNI), shared by all of them.

    ``dim`` is ``k`` (None: the net takes no context).
    """

    def __init__(self, dim: int | None) -> None:
        self.dim = dim
        self.value: torch.Tensor | None = None

    def get(self, batch: int, node: str) -> torch.Tensor | None:
        if self.dim is None:
            return None
        c = self.value
        if c is None:
            raise DimensionError("this net's generators read a context, and none was given", node=node,
                                 fix="pass it with each forward, net(x, context=c), or net.set_context(c), "
                                     f"a tensor [B, {self.dim}]")
        if c.shape[0] != batch:
            raise DimensionError(f"the context has batch {c.shape[0]}, the inputs {batch}", node=node,
                                 fix="set the context of the same batch as the inputs")
        return c

    def __repr__(self) -> str:
        return f"ContextSlot(dim={self.dim})"


def _is_image(shape: tuple) -> bool:
    return len(shape) == 3


class _DenseBody(nn.Module):
    """``W z + c (+ U context)`` on the flattened parents, or through a hidden layer (``mlp``)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int | None, context_dim: int | None) -> None:
        super().__init__()
        first_out = hidden if hidden is not None else out_dim
        self.first = nn.Linear(in_dim, first_out)
        self.context = nn.Linear(context_dim, first_out, bias=False) if context_dim else None
        self.last = nn.Linear(hidden, out_dim) if hidden is not None else None
        zeroed = self.last if self.last is not None else self.first
        nn.init.zeros_(zeroed.weight)
        nn.init.zeros_(zeroed.bias)
        if self.context is not None and self.last is None:
            nn.init.zeros_(self.context.weight)

    def forward(self, z: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        y = self.first(z)
        if self.context is not None:
            y = y + self.context(context)
        if self.last is not None:
            y = self.last(torch.relu(y))
        return y


class _ConvBody(nn.Module):
    """Sum over parents of a 3×3 convolution onto the output's ``(C, H, W)`` (``mlp``: then ReLU and
    a second 3×3 convolution); a context adds a per-channel term."""

    def __init__(self, node: str, in_shapes: Sequence[tuple], shape: tuple, hidden: bool,
                 context_dim: int | None) -> None:
        super().__init__()
        c, h, w = shape
        convs = []
        for s in in_shapes:
            if not _is_image(s) or s[1] % h or s[2] % w or s[1] // h != s[2] // w:
                raise CompileError(f"the built-in generator cannot map a parent of shape {list(s)} onto the output "
                                   f"{list(shape)} with a convolution", node=node,
                                   fix="pass generators={node: callable} building a module for this node "
                                       "(called with the parents' tensors, returning the output's shape), or 'none'")
            stride = s[1] // h
            convs.append(nn.Conv2d(s[0], c, 3, stride=stride, padding=1, bias=False))
        self.convs = nn.ModuleList(convs)
        self.bias = nn.Parameter(torch.zeros(c, 1, 1))
        self.context = nn.Linear(context_dim, c, bias=False) if context_dim else None
        self.last = nn.Conv2d(c, c, 3, padding=1) if hidden else None
        zero = [self.last.weight, self.last.bias] if hidden else [conv.weight for conv in convs]
        if self.context is not None and not hidden:
            zero.append(self.context.weight)
        for p in zero:
            nn.init.zeros_(p)

    def forward(self, parts: Sequence[torch.Tensor], context: torch.Tensor | None) -> torch.Tensor:
        y = self.bias
        for conv, x in zip(self.convs, parts):
            y = y + conv(x)
        if self.context is not None:
            y = y + self.context(context)[:, :, None, None]
        if self.last is not None:
            y = self.last(torch.relu(y))
        return y


class ShapedGenerator(nn.Module):
    """A traced node's generator: ``z [B, Σ parent dims]`` (and ``aux``, unused) → ``[B, dim]``.

    Attributes
    ----------
    node : str
    in_shapes : list of tuple
        Per-sample shapes of the parents.
    shape : tuple
        Per-sample shape of the output.
    body : nn.Module
        A built-in body, or the user's module (``custom`` True).
    """

    def __init__(self, node: str, in_shapes: Sequence[tuple], shape: tuple, body: nn.Module, context: ContextSlot,
                 kind: str, custom: bool = False) -> None:
        super().__init__()
        self.node, self.kind, self.custom = node, kind, custom
        self.in_shapes = [tuple(s) for s in in_shapes]
        self.sizes = [math.prod(s) for s in self.in_shapes]
        self.shape = tuple(shape)
        self.dim = math.prod(self.shape)
        self.body = body
        self.context = context

    def _parts(self, z: torch.Tensor) -> list[torch.Tensor]:
        b = z.shape[0]
        chunks = [z] if len(self.sizes) == 1 else torch.split(z, self.sizes, dim=1)
        return [c.reshape(b, *s) for c, s in zip(chunks, self.in_shapes)]

    def forward(self, z: torch.Tensor, aux: dict | None = None) -> torch.Tensor:
        b = z.shape[0]
        if not z.is_floating_point() and not self.custom:  # token ids and other integer inputs, read as numbers
            z = z.to(next((p.dtype for p in self.body.parameters()), torch.get_default_dtype()))
        context = self.context.get(b, self.node)
        if isinstance(self.body, _DenseBody):
            out = self.body(z, context)
        elif isinstance(self.body, _ConvBody):
            out = self.body(self._parts(z), context)
        else:
            parts = self._parts(z)
            out = self.body(*parts, context) if context is not None else self.body(*parts)
            if not isinstance(out, torch.Tensor) or tuple(out.shape) != (b, *self.shape):
                got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise DimensionError(f"its generator returned {got}, expected {[b, *self.shape]}", node=self.node,
                                     fix="make the generator return the node's output shape, batch first")
        return out.reshape(b, self.dim)

    def extra_repr(self) -> str:
        return f"{self.node!r}, kind={self.kind!r}, {[list(s) for s in self.in_shapes]} -> {list(self.shape)}"


class NoGenerator(nn.Module):
    """``ĥ = 0``: a node without a learned generator (nothing to train; its ``observe`` ignores the target,
    so the generator loss leaves it out)."""

    def __init__(self, node: str, dim: int) -> None:
        super().__init__()
        self.node, self.dim = node, dim

    def forward(self, z: torch.Tensor, aux: dict | None = None) -> torch.Tensor:
        return z.new_zeros(1, 1).expand(z.shape[0], self.dim)  # no [B, dim] buffer to fill

    @torch.no_grad()
    def observe(self, z: torch.Tensor, target: torch.Tensor) -> None:
        """Learns nothing: the prediction stays 0."""

    def extra_repr(self) -> str:
        return f"{self.node!r}, dim={self.dim}"


def build_generator(spec: str | Callable | nn.Module, node: str, in_shapes: Sequence[tuple], shape: tuple,
                    context: ContextSlot, dtype: torch.dtype) -> nn.Module:
    """The generator of ``node`` per ``spec`` (see the module docstring); a module is used as given
    (called with the parents' tensors, as a callable's module is)."""
    in_shapes = [tuple(s) for s in in_shapes]
    shape = tuple(shape)
    dim = math.prod(shape)
    if isinstance(spec, str):
        if spec not in GENERATOR_KINDS:
            raise CompileError(f"unknown generator kind {spec!r}", node=node,
                               fix=f"use one of {', '.join(GENERATOR_KINDS)}, a callable "
                                   "(node_name, output_shape) -> nn.Module, or a dict of them per node")
        if spec == "none":
            return NoGenerator(node, dim)
        hidden = spec == "mlp"
        if _is_image(shape):
            body: nn.Module = _ConvBody(node, in_shapes, shape, hidden, context.dim)
        else:
            in_dim = sum(math.prod(s) for s in in_shapes)
            width = dim if hidden else None
            weights = in_dim * (width or dim) + (width or 0) * dim
            if weights > MAX_DENSE_WEIGHTS:
                raise CompileError(f"a dense {spec} generator would need {weights:,} weights ({in_dim:,} inputs, "
                                   f"output {list(shape)})", node=node,
                                   fix="pass generators={node: callable} with a smaller module for this node, "
                                       "or 'none'")
            body = _DenseBody(in_dim, dim, width, context.dim)
        return ShapedGenerator(node, in_shapes, shape, body.to(dtype), context, spec)
    if isinstance(spec, nn.Module):
        return ShapedGenerator(node, in_shapes, shape, spec, context, "module", custom=True)
    if callable(spec):
        module = spec(node, shape)
        if not isinstance(module, nn.Module):
            raise CompileError(f"the generator callable returned a {type(module).__name__} for this node, not an "
                               "nn.Module", node=node,
                               fix="return a torch.nn.Module from generators(node_name, output_shape)")
        return ShapedGenerator(node, in_shapes, shape, module, context, "custom", custom=True)
    raise CompileError(f"generator spec of type {type(spec).__name__}", node=node,
                       fix=f"use one of {', '.join(GENERATOR_KINDS)}, a callable (node_name, output_shape) -> "
                           "nn.Module, an nn.Module, or a dict of them per node")
