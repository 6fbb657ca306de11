"""The recurrent SparseNet policy of the paper's POPGym study (App. H.4, Table 2), as an sggraph cell.

One step of the cell::

    obs ──► emb = LeakyReLU(Linear(LayerNorm₀(Linear(obs))))        (pre node, 128 wide)
    h@t[i] = Σ_s α_{i,s} tanh(A_{i,s} [h@t−1[parents(i)], emb] + b_{i,s})
                                                                     (128 slot neurons, q = 6,
                                                                      6 random parents, 6 slots;
                                                                      neurons 0–15 also read emb)
    act = SlotActor(flatten(h@t))                                    (post node, one logit per action)

The state starts at zero at every episode start. ``sgprop`` mixes synthetic gradients into
BPTT on the state neurons only (per-neuron θ, ``child`` grouping, temporal schedule); the
embedding and the actor run plain backprop (``λ = 1``, no generator).

Defaults follow the authors' experiment code (``sparsenet.py``): parents are a random subset
of all 128 neurons, so a neuron may read its own previous state (``self_parents``); every
neuron's routing temperature and init std use ``d = F·q + embed = 164``, as if each neuron
read ``[parents, embedding]`` with the embedding masked to zero outside the 16 input
neurons (``scale="full"``; only the wired 16 × 128 embedding weights exist and are
computed); keys, slot maps and biases ~ N(0, 1/d); the embedding's linear layers are
orthogonal with zero biases; actor keys and slot weights ~ N(0, 1/(N q)), actor biases zero;
the state's generator is zero-initialised and regresses onto the mixed feedback
``θ_t g̃ + (1 − θ_t) ĥ`` it passed on (``generator_target="mixed"``).

>>> import torch
>>> policy = RecurrentSparseNetPolicy(obs_dim=56, n_actions=4, seed=0)
>>> logits = policy(torch.zeros(5, 3, 56))              # [T, B, obs] -> [T, B, actions]
>>> logits.shape
torch.Size([5, 3, 4])
>>> step_logits, state = policy.step(torch.zeros(3, 56), policy.initial_state(3))
>>> step_logits.shape, state.shape
(torch.Size([3, 4]), torch.Size([3, 128, 6]))
"""

from __future__ import annotations

import torch
from torch import nn

from sggraph.core.unroll import Cell
from sggraph.engine import CompiledCell, RecurrentSlotArray, compile_cell

from .popgym_layers import ObservationEmbedding, SlotActor, orthogonal_linear_

__all__ = ["ObservationEmbedding", "RecurrentSparseNetPolicy", "SlotActor", "orthogonal_linear_",
           "recurrent_sparsenet_cell"]


SCALES = ("full", "wired")


def recurrent_sparsenet_cell(obs_dim: int, n_actions: int, neurons: int = 128, q: int = 6, slots: int = 6,
                             fan_in: int = 6, input_neurons: int = 16, embed: int = 128, seed: int = 0,
                             self_parents: bool = True, scale: str = "full") -> Cell:
    """The cell graph: input ``obs``, pre node ``emb``, state ``h``, post node ``act``.

    ``examples/popgym-sparsenet-cell.yaml`` declares the same cell (``obs_dim = 56``,
    ``n_actions = 4``, the defaults here); a test holds the two equal.

    >>> cell = recurrent_sparsenet_cell(56, 4)
    >>> cell.state.count, cell.state.dim, cell.state.fan_in, cell.state.input_neurons, cell.state.self_parents
    (128, 6, 6, 16, True)
    >>> cell.state.scale_dim, cell.nodes["emb"].fn, cell.nodes["act"].fn, cell.feedback
    (164, 'embedding', 'slot_actor', {'act': 'contextual'})
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    cell = Cell("popgym-sparsenet")
    cell.add_input("obs", obs_dim)
    cell.add_node("emb", embed, ["obs"], fn="embedding")
    cell.set_state("h", count=neurons, dim=q, fan_in=fan_in, slots=slots, seed=seed, input="emb",
                   input_neurons=input_neurons, self_parents=self_parents,
                   scale_dim=fan_in * q + embed if scale == "full" else None)
    cell.add_node("act", n_actions, ["h"], fn="slot_actor")
    cell.set_feedback("act", "contextual")  # the policy-gradient feedback depends on the reward: the context
    return cell


class RecurrentSparseNetPolicy(nn.Module):
    """The compiled recurrent SparseNet with the rollout / training interface of the POPGym trainer.

    Parameters
    ----------
    obs_dim, n_actions : int
    neurons, q, slots, fan_in, input_neurons, embed, actor_slots : int
        Table 2's dimensions by default.
    seed : int
        Seeds the wiring and the initial weights.
    rho : float
        Temporal-schedule coefficient (App. H.4).
    scale : {'full', 'wired'}
        ``d`` of every neuron's routing temperature ``1/√d`` and init std: ``full`` (default,
        the authors'): ``fan_in·q + embed`` for all; ``wired``: each neuron's wired input size
        (``fan_in·q``, plus ``embed`` for the input neurons).
    self_parents : bool
        A neuron may be its own parent (default, the authors' ``randperm`` draw).
    generator_target : {'mixed', 'received'}
        The state generator's regression target (default ``mixed``, the authors').

    Attributes
    ----------
    net : CompiledCell
    """

    def __init__(self, obs_dim: int, n_actions: int, neurons: int = 128, q: int = 6, slots: int = 6,
                 fan_in: int = 6, input_neurons: int = 16, embed: int = 128, actor_slots: int = 6,
                 seed: int = 0, rho: float = 0.1, scale: str = "full", self_parents: bool = True,
                 generator_target: str = "mixed") -> None:
        super().__init__()
        cell = recurrent_sparsenet_cell(obs_dim, n_actions, neurons, q, slots, fan_in, input_neurons, embed, seed,
                                        self_parents, scale)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            state = RecurrentSlotArray(neurons, fan_in * q, q, slots, input_neurons, embed,
                                       scale_dim=cell.state.scale_dim)
            functions = {"emb": ObservationEmbedding(obs_dim, embed), "h": state,
                         "act": SlotActor(neurons * q, n_actions, actor_slots)}
            self.net: CompiledCell = compile_cell(cell, functions, grouping="child", rho=rho,
                                                  generator_target=generator_target)
        self.net.plain_nodes = {"emb", "act"}  # mixing on the state only
        self.neurons, self.q = neurons, q

    @property
    def synthetic(self) -> bool:
        return self.net.synthetic

    @synthetic.setter
    def synthetic(self, value: bool) -> None:
        self.net.synthetic = bool(value)

    def initial_state(self, batch: int) -> torch.Tensor:
        """Zero state ``[B, N, q]``."""
        return torch.zeros(batch, self.neurons, self.q)

    def step(self, obs: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: ``obs [B, obs_dim]``, ``state [B, N, q]`` → ``logits [B, A]``, next state."""
        out = self.net({"obs": obs.unsqueeze(0)}, state=state)["act"][0]
        return out, self.net.final_state

    def forward(self, obs: torch.Tensor, valid: torch.Tensor | None = None,
                horizon: int | None = None) -> torch.Tensor:
        """A whole sequence from the zero state: ``obs [T, B, obs_dim]`` → ``logits [T, B, A]``.

        ``valid [T, B]`` (bool) marks the steps inside episodes: padding steps get no synthetic
        feedback. ``horizon`` anchors the temporal θ schedule (the rollout length; default ``T``).
        """
        return self.net({"obs": obs}, valid=valid, horizon=horizon)["act"]

    def model_parameters(self):
        return self.net.model_parameters()

    def generator_parameters(self):
        return self.net.generator_parameters()

    def lambda_mean(self) -> float:
        """Mean base θ of the state neurons."""
        return float(self.net.self_lambdas()[self.net.cell.state.name].mean())
