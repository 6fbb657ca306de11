"""The settings of the POPGym labyrinth study (Tables 2–3; torch-free to import, so that the command line
builds its flags without loading torch: :meth:`PopgymConfig.validate` loads what it checks against). The
experiment itself is :mod:`sggraph.experiments.popgym`.

>>> PopgymConfig().method, PopgymConfig(model="gru").method
('sgprop', 'backprop')
"""

from __future__ import annotations

from dataclasses import dataclass

from ..exceptions import ConfigError
from .settings import (
    MAX_RATE,
    MAX_STEPS,
    check_between,
    check_lambda_setting,
    check_positive,
    check_seed,
    check_sizes,
    check_types,
)

__all__ = ["METHODS", "MODELS", "PopgymConfig"]

#: The policies.
MODELS = ("sparsenet", "gru", "lstm")
METHODS = ("sgprop", "backprop")


@dataclass
class PopgymConfig:
    """Every setting of the POPGym study (Tables 2–3); defaults are the authors' experiment code
    (``main.py``, ``trainers.py``) and sweep scripts (``run_sweeps_*.sh``)."""

    env: str = "labyrinth_escape"  #: labyrinth_escape | labyrinth_explore
    model: str = "sparsenet"  #: sparsenet | gru | lstm
    method: str | None = None  #: sgprop | backprop (None: sgprop for sparsenet; gru and lstm: backprop only)
    num_envs: int = 20  #: parallel environments = episodes per gradient update
    lr: float = 1e-3  #: Adam learning rate of the policy (the paper sweeps 2e-4 … 4e-3)
    batches: int = 300  #: gradient updates
    seed: int = 0  #: seeds the mazes, the policy's initialisation and its sampled actions
    gamma: float = 0.95  #: discount factor
    entropy_coef: float = 0.01  #: weight of the entropy bonus in the loss
    clip_norm: float = 0.5  #: gradient-norm clip of the policy's parameters
    generator_lr: float = 1e-5  #: Adam learning rate of the synthetic-gradient generators
    lam_init: float = 1.0  #: initial per-neuron θ (sgprop)
    lam: str = "adaptive"  #: "adaptive" (eq. 18 + momentum) or a fixed θ in [0, 1] (sgprop)
    lam_momentum: float = 0.9  #: momentum μ of adaptive θ: θ ← μθ + (1 − μ)θ_batch
    lam_samples: int | None = None  #: adaptive θ from the samples of ⌈n/num_envs⌉ random steps (None: every valid sample)
    normalize: str = "feedback"  #: before eq. 18: feedback | gradient | none (sggraph.engine.lam)
    rho: float = 0.1  #: temporal-schedule coefficient
    schedule_anchor: str = "rollout"  #: base θ at the rollout's last step (rollout) or the batch's longest episode's (longest)
    generator_target: str = "mixed"  #: generators regress onto the mixed feedback (mixed) or the received one (received)
    generator_clip_norm: float = 0.5  #: gradient-norm clip of the generators (0: off)
    neuron_scale: str = "full"  #: 1/√d of every neuron: d = fan_in·q + embed (full) or its wired input size (wired)
    self_parents: bool = True  #: a neuron may be its own recurrent parent (randperm over all neurons)
    maze_size: int = 6  #: labyrinth side (even)
    episode_length: int | None = None  #: None: 80 (escape) / 40 (explore)
    explore_drop_prob: float = 0.75  #: explore: probability a step's reward becomes −1/episode_length
    neurons: int = 128  #: SparseNet neurons
    q: int = 6  #: neuron dimension
    slots: int = 6  #: slots per SparseNet neuron
    fan_in: int = 6  #: parents per neuron
    input_neurons: int = 16  #: neurons that read the embedding
    actor_slots: int = 6  #: slots of the actor's routing over the state
    embed: int = 128  #: embedding width
    hidden: int = 256  #: GRU / LSTM hidden size
    checkpoint_every: int = 25  #: batches between checkpoints

    def __post_init__(self) -> None:
        if self.method is None:
            self.method = "sgprop" if self.model == "sparsenet" else "backprop"
        if isinstance(self.normalize, bool):  # the former boolean setting: True meant per-sample gradients
            self.normalize = "gradient" if self.normalize else "none"

    def validate(self) -> None:
        """Raise :class:`~sggraph.ConfigError` naming the first invalid setting (types, finite numbers,
        ranges, seed, sizes)."""
        from ..engine import GENERATOR_TARGETS, NORMALIZATIONS
        from ..envs.popgym import ENVIRONMENTS
        from ..models.recurrent_sparsenet import SCALES

        check_types(self)
        check_seed(self)
        check_sizes(self, ("num_envs", "neurons", "q", "slots", "fan_in", "actor_slots", "embed", "hidden",
                           "maze_size", "episode_length", "lam_samples"))
        check_sizes(self, ("batches", "checkpoint_every"), largest=MAX_STEPS)
        check_positive(self, ("lr",), largest=MAX_RATE)
        check_positive(self, ("clip_norm",))
        check_positive(self, ("generator_lr",), zero=True, largest=MAX_RATE)
        check_positive(self, ("generator_clip_norm", "rho"), zero=True)
        if self.env not in ENVIRONMENTS:
            raise ConfigError(f"unknown env '{self.env}'", fix=f"use one of {', '.join(ENVIRONMENTS)}")
        if self.model not in MODELS:
            raise ConfigError(f"unknown model '{self.model}'", fix=f"use one of {', '.join(MODELS)}")
        if self.method not in METHODS:
            raise ConfigError(f"unknown method '{self.method}'", fix="use sgprop or backprop")
        if self.method == "sgprop" and self.model != "sparsenet":
            raise ConfigError(f"--method sgprop needs --model sparsenet (got {self.model})",
                              fix=f"use --model sparsenet, or --method backprop for {self.model}")
        check_lambda_setting(self.lam, "θ")
        check_between(self, ("lam_init", "gamma", "lam_momentum", "explore_drop_prob"))
        choices = {"normalize": NORMALIZATIONS, "schedule_anchor": ("rollout", "longest"),
                   "generator_target": GENERATOR_TARGETS, "neuron_scale": SCALES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"unknown {name} {getattr(self, name)!r}", fix=f"use one of {', '.join(allowed)}")
        if not 0 <= self.input_neurons <= self.neurons:
            raise ConfigError(f"input_neurons = {self.input_neurons} must be in 0..{self.neurons}",
                              fix="set input_neurons <= neurons")
        limit = self.neurons if self.self_parents else self.neurons - 1
        if self.fan_in > limit:
            raise ConfigError(f"fan_in = {self.fan_in} must be at most {limit} (neurons = {self.neurons}, "
                              f"self_parents = {self.self_parents})", fix="lower fan_in")


    def typical_op_elements(self) -> int:
        """Elements of a step's typical operation (the default thread count works from it): the
        SparseNet state's slot outputs ``num_envs × neurons × slots × q``, or a GRU/LSTM's gates
        ``num_envs × 4 × hidden``.

        >>> PopgymConfig().typical_op_elements(), PopgymConfig(model="gru").typical_op_elements()
        (92160, 20480)
        """
        if self.model == "sparsenet":
            return self.num_envs * self.neurons * self.slots * self.q
        return self.num_envs * 4 * self.hidden
