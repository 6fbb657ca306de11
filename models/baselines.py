"""Dense baselines (plain PyTorch, trained by backprop).

>>> mlp = ResidualMLP(784, 10, width=745, layers=5)
>>> mlp.parameter_count()
2815365
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ResidualMLP"]


class ResidualMLP(nn.Module):
    """``layers`` tanh layers of ``width`` (residual after the first) and a linear action head.

    ``h_1 = tanh(W_1 x)``, ``h_l = h_{l−1} + tanh(W_l h_{l−1})``, ``logits = W_out h_L``;
    Xavier-uniform weights, zero biases. Shapes: ``x [B, in_dim] -> [B, out_dim]``.
    """

    def __init__(self, in_dim: int, out_dim: int, width: int = 745, layers: int = 5) -> None:
        super().__init__()
        self.first = nn.Linear(in_dim, width)
        self.hidden = nn.ModuleList(nn.Linear(width, width) for _ in range(layers - 1))
        self.head = nn.Linear(width, out_dim)
        for layer in [self.first, *self.hidden, self.head]:
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.first(x))
        for layer in self.hidden:
            h = h + torch.tanh(layer(h))
        return self.head(h)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
