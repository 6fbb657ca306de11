"""Built-in node functions a YAML graph or cell names with ``fn:``.

Each takes ``z`` of shape ``[B, in_dim]`` (the parents' outputs concatenated in
declared order) and returns ``[B, dim]``:

* ``linear``, ``tanh`` (of a linear map), ``identity`` (a relay), ``dot`` (scaled keys, the
  SparseNet action head);
* ``embedding`` — Linear → LayerNorm → Linear → LeakyReLU, orthogonal (the POPGym observation
  embedding, :class:`ObservationEmbedding`);
* ``slot_actor`` — per output unit, 6 slots routed by keys (the POPGym actor, :class:`SlotActor`).

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

import math

import torch
from torch import nn

from ..core.nodes import NODE_FUNCTIONS
from ..exceptions import CompileError

__all__ = ["FUNCTIONS", "MAX_WEIGHTS", "Identity", "Linear", "ObservationEmbedding", "ScaledDot", "SlotActor",
           "TanhLinear", "make_function", "orthogonal_linear_"]

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


def orthogonal_linear_(layer: nn.Linear, gain: float = 1.0) -> nn.Linear:
    """Orthogonal weight (``gain``), zero bias: the authors' init of every POPGym linear layer
    but the GRU/LSTM actor's last one."""
    nn.init.orthogonal_(layer.weight, gain)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


class ObservationEmbedding(nn.Module):
    """``obs [R, obs_dim]`` → ``[R, width]``: Linear → LayerNorm (no affine) → Linear → LeakyReLU.

    Both linear layers orthogonal (gain 1), biases zero, as in the authors' POPGym code
    (``fn: embedding``).
    """

    def __init__(self, obs_dim: int, width: int = 128) -> None:
        super().__init__()
        self.first = orthogonal_linear_(nn.Linear(obs_dim, width))
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.second = orthogonal_linear_(nn.Linear(width, width))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return nn.functional.leaky_relu(self.second(self.norm(self.first(obs))))


class SlotActor(nn.Module):
    """Per action ``a``: ``logit_a = Σ_s α_{a,s} (w_{a,s}·x + c_{a,s})``, ``α_a = softmax_s(⟨x, k_{a,s}⟩/√D)``.

    Shapes: ``x [R, D]`` → ``[R, n_actions]``. Keys and slot weights ~ N(0, 1/D), biases zero
    (``fn: slot_actor``: 6 slots, the POPGym actor head).
    """

    def __init__(self, in_dim: int, n_actions: int, slots: int = 6) -> None:
        super().__init__()
        self.in_dim, self.n_actions, self.slots = in_dim, n_actions, slots
        std = 1.0 / math.sqrt(in_dim)
        # rows: all keys (A·S), then all slot weights (A·S): one matmul for both
        self.weight = nn.Parameter(torch.randn(2 * n_actions * slots, in_dim) * std)
        self.bias = nn.Parameter(torch.zeros(n_actions, slots))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, s = self.n_actions, self.slots
        keys, values = (x @ self.weight.T).view(-1, 2, a, s).unbind(1)
        alpha = torch.softmax(keys / math.sqrt(self.in_dim), dim=-1)
        return (alpha * (values + self.bias)).sum(-1)

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, n_actions={self.n_actions}, slots={self.slots}"


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


def _make_embedding(in_dim: int, dim: int, node: str | None, init_std: float | None) -> nn.Module:
    _weighted("embedding", in_dim, dim, node)
    _own_init("embedding", init_std, node)
    return ObservationEmbedding(in_dim, dim)


def _make_slot_actor(in_dim: int, dim: int, node: str | None, init_std: float | None) -> nn.Module:
    _weighted("slot_actor", in_dim, dim, node)
    _own_init("slot_actor", init_std, node)
    return SlotActor(in_dim, dim)


def _make_identity(in_dim: int, dim: int, node: str | None, init_std: float | None) -> nn.Module:
    if init_std is not None:
        raise CompileError("an identity node has no weights to initialise", node=node,
                           fix="remove init_std from this node")
    if in_dim != dim:
        raise CompileError(f"an identity node needs its parents' total dim ({in_dim}) to equal its dim ({dim})",
                           node=node, fix=f"set dim: {in_dim}, or use fn: linear")
    return Identity()


#: The built-in node functions by ``fn:`` name: ``(in_dim, dim, node, init_std) -> nn.Module``. Keyed by
#: the core's one list of names, :data:`sggraph.core.nodes.NODE_FUNCTIONS` (checked at import).
FUNCTIONS = {"linear": _make_linear, "tanh": _make_tanh, "identity": _make_identity, "dot": _make_dot,
             "embedding": _make_embedding, "slot_actor": _make_slot_actor}
assert tuple(FUNCTIONS) == NODE_FUNCTIONS, "the node-function registry must follow NODE_FUNCTIONS"


def make_function(name: str, in_dim: int, dim: int, node: str | None = None,
                  init_std: float | None = None) -> nn.Module:
    """Instantiate the built-in function ``name`` (one of :data:`FUNCTIONS`) for a node with the given dims
    (and weight init std).

    Raises :class:`~sggraph.CompileError` naming the node when the weights would exceed :data:`MAX_WEIGHTS`.
    """
    build = FUNCTIONS.get(name)
    if build is None:
        raise CompileError(f"unknown fn '{name}'", node=node, fix=f"use {', '.join(NODE_FUNCTIONS[:-1])} or "
                                                                   f"{NODE_FUNCTIONS[-1]}")
    return build(in_dim, dim, node, init_std)
