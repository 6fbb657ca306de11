"""Built-in node functions a YAML graph names with ``fn:``.

Each takes ``z`` of shape ``[B, in_dim]`` (the parents' outputs concatenated in
declared order) and returns ``[B, dim]``.

>>> import torch
>>> f = make_function("tanh", in_dim=3, dim=2)
>>> f(torch.zeros(5, 3)).shape
torch.Size([5, 2])
"""

from __future__ import annotations

import torch
from torch import nn

from .exceptions import CompileError

__all__ = ["Identity", "Linear", "ScaledDot", "TanhLinear", "make_function"]


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
    """``x = z Kᵀ / √in_dim`` with keys ``K [dim, in_dim] ~ N(0, 1)`` — the SparseNet action head.

    Shapes: ``z [B, in_dim] -> x [B, dim]``.
    """

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.keys = nn.Parameter(torch.randn(dim, in_dim))
        self.scale = in_dim ** -0.5

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (z @ self.keys.T) * self.scale

    def __repr__(self) -> str:
        return f"ScaledDot({self.keys.shape[1]} -> {self.keys.shape[0]})"


def make_function(name: str, in_dim: int, dim: int, node: str | None = None) -> nn.Module:
    """Instantiate the built-in function ``name`` for a node with the given dims."""
    if name == "linear":
        return Linear(in_dim, dim)
    if name == "tanh":
        return TanhLinear(in_dim, dim)
    if name == "dot":
        return ScaledDot(in_dim, dim)
    if name == "identity":
        if in_dim != dim:
            raise CompileError(f"an identity node needs its parents' total dim ({in_dim}) to equal its dim ({dim})",
                               node=node, fix=f"set dim: {in_dim}, or use fn: linear")
        return Identity()
    raise CompileError(f"unknown fn '{name}'", node=node, fix="use linear, tanh, identity or dot")
