"""Built-in node functions a YAML graph or cell names with ``fn:``.

Each takes ``z`` of shape ``[B, in_dim]`` (the parents' outputs concatenated in
declared order) and returns ``[B, dim]``:

* ``linear``, ``tanh`` (of a linear map), ``identity`` (a relay), ``dot`` (scaled keys, the
  SparseNet action head);
* ``embedding``, ``slot_actor`` — the POPGym observation embedding and actor, registered by
  :mod:`sggraph.models.popgym_layers` (:func:`register_function`).

A node's ``init_std`` (YAML key ``init_std``) sets the standard deviation of its normal weight
init: ``dot`` keys ``N(0, init_std²)`` (default 1); ``linear`` / ``tanh`` weights
``N(0, init_std²)`` with zero biases (default: PyTorch's ``nn.Linear`` init). ``embedding`` and
``slot_actor`` keep their own init.

>>> import torch
>>> f = make_function("tanh", in_dim=3, dim=2)
>>> f(torch.zeros(5, 3)).shape
torch.Size([5, 2])
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.nodes import NODE_FUNCTIONS
from ..exceptions import CompileError

__all__ = ["FUNCTIONS", "MAX_WEIGHTS", "PROVIDERS", "Identity", "Linear", "ScaledDot", "TanhLinear", "make_function",
           "register_function"]

#: The most weights one built-in node function may hold (2^28 floats: 1 GiB).
MAX_WEIGHTS = 2**28


def _normal_init(layer: nn.Linear, init_std: float | None) -> None:
    if init_std is not None:
        with torch.no_grad():
            layer.weight.normal_(0.0, init_std)
            layer.bias.zero_()


class Linear(nn.Linear):
    """``x = W z + b``. Shapes: ``z [B, in_dim] -> x [B, dim]``."""

    def __repr__(self) -> str:
        return f"Linear({self.in_features} -> {self.out_features})"


class TanhLinear(nn.Linear):
    """``x = tanh(W z + b)``. Shapes: ``z [B, in_dim] -> x [B, dim]``."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(super().forward(z))

    def __repr__(self) -> str:
        return f"TanhLinear({self.in_features} -> {self.out_features})"


class Identity(nn.Module):
    """``x = z`` (a relay node). Needs ``in_dim == dim``."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def __repr__(self) -> str:
        return "Identity()"


class ScaledDot(nn.Module):
    """``x = z Kᵀ / √in_dim`` with keys ``K [dim, in_dim] ~ N(0, init_std²)`` — the SparseNet action head.

    Shapes: ``z [B, in_dim] -> x [B, dim]``. ``init_std`` defaults to 1; the paper's SparseNet
    uses ``1/√(q · n_parents)``, the std of its hidden keys.

    >>> head = ScaledDot(2000, 10, init_std=50 ** -0.5)
    >>> round(float(head.keys.detach().std()), 2)
    0.14
    """

    def __init__(self, in_dim: int, dim: int, init_std: float | None = None) -> None:
        super().__init__()
        std = 1.0 if init_std is None else float(init_std)
        self.keys = nn.Parameter(torch.randn(dim, in_dim) * std)
        self.scale = in_dim ** -0.5

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (z @ self.keys.T) * self.scale

    def __repr__(self) -> str:
        return f"ScaledDot({self.keys.shape[1]} -> {self.keys.shape[0]})"


def _weighted(name: str, in_dim: int, dim: int, node: str | None) -> None:
    if in_dim * dim > MAX_WEIGHTS:
        raise CompileError(f"fn {name} would need {in_dim:,} x {dim:,} weights, more than the {MAX_WEIGHTS:,} "
                           "one node may hold", node=node, fix="lower the node's dim or its parents' dims")


def _own_init(name: str, init_std: float | None, node: str | None) -> None:
    if init_std is not None:
        raise CompileError(f"fn '{name}' keeps its own init; init_std does not apply", node=node,
                           fix="remove init_std from this node")


def _make_linear(in_dim: int, dim: int, node: str | None, init_std: float | None) -> nn.Module:
    _weighted("linear", in_dim, dim, node)
    layer = Linear(in_dim, dim)
    _normal_init(layer, init_std)
    return layer


def _make_tanh(in_dim: int, dim: int, node: str | None, init_std: float | None) -> nn.Module:
    _weighted("tanh", in_dim, dim, node)
    layer = TanhLinear(in_dim, dim)
    _normal_init(layer, init_std)
    return layer


def _make_dot(in_dim: int, dim: int, node: str | None, init_std: float | None) -> nn.Module:
    _weighted("dot", in_dim, dim, node)
    return ScaledDot(in_dim, dim, init_std)


def _make_identity(in_dim: int, dim: int, node: str | None, init_std: float | None) -> nn.Module:
    if init_std is not None:
        raise CompileError("an identity node has no weights to initialise", node=node,
                           fix="remove init_std from this node")
    if in_dim != dim:
        raise CompileError(f"an identity node needs its parents' total dim ({in_dim}) to equal its dim ({dim})",
                           node=node, fix=f"set dim: {in_dim}, or use fn: linear")
    return Identity()


#: The node functions by ``fn:`` name: ``(in_dim, dim, node, init_std) -> nn.Module``. Keyed by the core's
#: one list of names, :data:`sggraph.core.nodes.NODE_FUNCTIONS`: the engine's own four here, the POPGym
#: layers (``embedding``, ``slot_actor``) added by :mod:`sggraph.models` with :func:`register_function`.
FUNCTIONS = {"linear": _make_linear, "tanh": _make_tanh, "identity": _make_identity, "dot": _make_dot}
#: Where the names this module does not build are registered.
PROVIDERS = {"embedding": "sggraph.models", "slot_actor": "sggraph.models"}
assert set(FUNCTIONS) | set(PROVIDERS) == set(NODE_FUNCTIONS), "the registry must follow NODE_FUNCTIONS"


def register_function(name: str, build, *, own_init: bool = False) -> None:
    """Make ``fn: name`` build ``build(in_dim, dim) -> nn.Module`` (``[B, in_dim] -> [B, dim]``).

    ``name`` must be one of :data:`~sggraph.core.nodes.NODE_FUNCTIONS` (the names a YAML file may use).
    The engine checks the weight budget (:data:`MAX_WEIGHTS`) before calling ``build``; ``own_init``: the
    module keeps its own init, and a node's ``init_std`` is refused.
    """
    if name not in NODE_FUNCTIONS:
        raise CompileError(f"fn '{name}' is not a node-function name",
                           fix=f"add it to sggraph.core.nodes.NODE_FUNCTIONS, or use one of {', '.join(NODE_FUNCTIONS)}")

    def make(in_dim: int, dim: int, node: str | None, init_std: float | None) -> nn.Module:
        _weighted(name, in_dim, dim, node)
        if own_init:
            _own_init(name, init_std, node)
        return build(in_dim, dim)

    FUNCTIONS[name] = make


def make_function(name: str, in_dim: int, dim: int, node: str | None = None,
                  init_std: float | None = None) -> nn.Module:
    """Instantiate the built-in function ``name`` (one of :data:`FUNCTIONS`) for a node with the given dims
    (and weight init std).

    Raises :class:`~sggraph.CompileError` naming the node when the weights would exceed :data:`MAX_WEIGHTS`.
    """
    build = FUNCTIONS.get(name)
    if build is None and name in PROVIDERS:
        raise CompileError(f"fn '{name}' is provided by {PROVIDERS[name]}, which is not imported", node=node,
                           fix=f"import {PROVIDERS[name]} first (sggraph.compile and sggraph.compile_cell do)")
    if build is None:
        raise CompileError(f"unknown fn '{name}'", node=node, fix=f"use {', '.join(NODE_FUNCTIONS[:-1])} or "
                                                                   f"{NODE_FUNCTIONS[-1]}")
    return build(in_dim, dim, node, init_std)
