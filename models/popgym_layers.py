"""The POPGym layers of the recurrent SparseNet and its GRU/LSTM baselines, as the authors built them.

:class:`ObservationEmbedding` (``fn: embedding``) and :class:`SlotActor` (``fn: slot_actor``) are
registered as node functions on import, so a cell YAML can name them (``sggraph.compile`` imports
this package first). :func:`orthogonal_linear_` is the authors' init of every POPGym linear layer.

>>> import torch
>>> SlotActor(12, 4)(torch.zeros(3, 12)).shape
torch.Size([3, 4])
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sggraph.engine import register_function

__all__ = ["ObservationEmbedding", "SlotActor", "orthogonal_linear_"]


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


register_function("embedding", ObservationEmbedding, own_init=True)
register_function("slot_actor", SlotActor, own_init=True)
