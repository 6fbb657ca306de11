"""Baselines (plain PyTorch, trained by backprop): the bandit's dense MLP and POPGym's GRU / LSTM.

>>> mlp = MLP(784, 10, width=745, layers=5)
>>> mlp.parameter_count()
2815365
>>> gru = RecurrentPolicy(56, 4, kind="gru")
>>> gru(torch.zeros(5, 3, 56)).shape                 # [T, B, obs] -> [T, B, actions]
torch.Size([5, 3, 4])
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MLP", "RecurrentPolicy"]


class MLP(nn.Module):
    """The bandit's dense baseline: ``layers`` tanh layers of ``width`` and a linear action head.

    Plain (the authors' runs): ``h_l = tanh(W_l h_{l−1} + b_l)``; with ``residual=True`` the layers
    after the first add their input, ``h_l = h_{l−1} + tanh(W_l h_{l−1} + b_l)``. ``logits = W_out h_L + b_out``.
    Xavier-normal weights, zero biases. Shapes: ``x [B, in_dim] -> [B, out_dim]``.
    Width 745 matches the default SparseNet's parameter count within 0.2 %.
    """

    def __init__(self, in_dim: int, out_dim: int, width: int = 745, layers: int = 5, residual: bool = False) -> None:
        super().__init__()
        self.residual = residual
        self.first = nn.Linear(in_dim, width)
        self.hidden = nn.ModuleList(nn.Linear(width, width) for _ in range(layers - 1))
        self.head = nn.Linear(width, out_dim)
        for layer in [self.first, *self.hidden, self.head]:
            nn.init.xavier_normal_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.first(x))
        for layer in self.hidden:
            h = h + torch.tanh(layer(h)) if self.residual else torch.tanh(layer(h))
        return self.head(h)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return f"residual={self.residual}"


class RecurrentPolicy(nn.Module):
    """POPGym's GRU / LSTM baseline (Table 2): the SparseNet's observation embedding, one recurrent
    layer of ``hidden`` units, and an actor MLP ``hidden → 128 → 128 → actions`` (LeakyReLU).

    Shapes: ``forward(obs [T, B, obs_dim])`` → ``[T, B, A]`` from the zero state;
    ``step(obs [B, obs_dim], state)`` → ``logits [B, A]``, next state.

    Init as the authors' ``gru.py`` / ``lstm.py``: embedding, recurrent weights (each whole
    ``weight_ih`` / ``weight_hh`` matrix) and actor body orthogonal (gain 1), all biases zero,
    the actor's last layer ~ N(0, 0.01²).
    """

    def __init__(self, obs_dim: int, n_actions: int, kind: str = "gru", hidden: int = 256, embed: int = 128,
                 actor_hidden: int = 128, seed: int = 0) -> None:
        from .recurrent_sparsenet import ObservationEmbedding, orthogonal_linear_

        super().__init__()
        if kind not in ("gru", "lstm"):
            raise ValueError(f"kind must be 'gru' or 'lstm', got {kind!r}")
        self.kind, self.hidden = kind, hidden
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.embedding = ObservationEmbedding(obs_dim, embed)
            self.rnn = (nn.GRU if kind == "gru" else nn.LSTM)(embed, hidden)
            self.actor = nn.Sequential(nn.Linear(hidden, actor_hidden), nn.LeakyReLU(),
                                       nn.Linear(actor_hidden, actor_hidden), nn.LeakyReLU(),
                                       nn.Linear(actor_hidden, n_actions))
            for name, p in self.rnn.named_parameters():
                (nn.init.orthogonal_ if name.startswith("weight") else nn.init.zeros_)(p)
            for layer in list(self.actor)[:-1]:
                if isinstance(layer, nn.Linear):
                    orthogonal_linear_(layer)
            nn.init.normal_(self.actor[-1].weight, std=0.01)
            nn.init.zeros_(self.actor[-1].bias)
        self.synthetic = False

    def initial_state(self, batch: int):
        zero = torch.zeros(1, batch, self.hidden)
        return zero if self.kind == "gru" else (zero, zero.clone())

    def step(self, obs: torch.Tensor, state):
        out, state = self.rnn(self.embedding(obs).unsqueeze(0), state)
        return self.actor(out[0]), state

    def forward(self, obs: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        out, _ = self.rnn(self.embedding(obs))
        return self.actor(out)

    def model_parameters(self):
        return self.parameters()

    def generator_parameters(self):
        return iter(())

    def lambda_mean(self) -> float | None:
        return None
