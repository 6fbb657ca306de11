"""The settings of the MNIST contextual bandit (Table 1; torch-free, so that the command line builds its flags
without loading torch). The experiment itself is :mod:`sggraph.experiments.mnist_bandit`.

>>> BanditConfig().policy_lr, BanditConfig(method="mlp").policy_lr
(0.005, 2e-05)
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

__all__ = ["AUTHORS_CLASSES", "PAPER_EVALUATIONS", "PAPER_EVAL_IMAGES", "PAPER_LR", "PAPER_STEPS", "UPDATE_ORDERS",
           "BanditConfig"]

#: Table 1's learning rates per method.
PAPER_LR = {"sgprop": 0.005, "backprop": 0.001, "mlp": 2e-5}
#: The classes (actions) of the authors' sweep scripts: every digit but 2.
AUTHORS_CLASSES = (0, 1, 3, 4, 5, 6, 7, 8, 9)
#: When the generators learn from a batch: before the policy's backward (the authors') or after it.
UPDATE_ORDERS = ("generator-first", "single-pass")
#: The paper's run: 1,500 steps with 20 evaluations of 4,000 images (shorter runs scale the evaluations down).
PAPER_STEPS, PAPER_EVALUATIONS, PAPER_EVAL_IMAGES = 1500, 20, 4000


@dataclass
class BanditConfig:
    """Every Table 1 setting; defaults are the paper's."""

    method: str = "sgprop"  #: sgprop | backprop | mlp
    lam: str = "adaptive"  #: "adaptive" (eq. 18 + momentum) or a fixed λ in [0, 1]
    steps: int = 1500  #: training steps
    seed: int = 0  #: seeds the data order, the policy's initialisation and its sampled actions
    batch: int = 64  #: training batch
    eval_batch: int | None = None  #: images per evaluation (None: 4000, the paper's; fewer for runs < 1500 steps)
    evaluations: int | None = None  #: evaluations along training (None: 20, the paper's; fewer for runs < 1500 steps)
    p_flip: float = 0.4  #: training reward flip probability
    classes: tuple[int, ...] = AUTHORS_CLASSES  #: the actions: the authors' sweeps' 9 digits (the paper says 10)
    width: int = 200  #: neurons per SparseNet layer
    layers: int = 5  #: SparseNet layers (MLP: hidden layers)
    q: int = 10  #: neuron dimension
    slots: int = 5  #: slots per SparseNet neuron
    n_parents: int = 5  #: parents per SparseNet neuron (fan-in)
    lr: float | None = None  #: policy learning rate (None: Table 1's, 0.005 sgprop, 0.001 backprop, 2e-5 mlp)
    generator_lr: float = 0.005  #: Adam learning rate of the synthetic-gradient generators (0: frozen)
    lam_init: float = 0.9  #: initial per-neuron λ
    lam_momentum: float = 0.9  #: momentum μ of adaptive λ: λ ← μλ + (1 − μ)λ_batch
    normalize: str = "feedback"  #: unit-norm before eq. 18: feedback (the authors') | gradient | none
    generator_init: str = "normal"  #: normal: N(0, 1/d) like the authors' bandit generators | zero
    update_order: str = "generator-first"  #: generator-first (the authors') | single-pass
    mlp_width: int = 745  #: hidden width of the MLP baseline
    mlp_residual: bool = False  #: the authors' runs use the plain MLP (--no_residual)
    data_dir: str | None = None  #: MNIST IDX directory (default: $SGGRAPH_DATA or the embedded 10k digits)
    eval_size: int = 2000  #: held-out evaluation images (the last ones of the shuffled file)
    checkpoint_every: int = 100  #: steps between resume checkpoints
    snapshots: int = 0  #: keep this many model snapshots, evenly spaced from step 0 to the end (snapshot-stepN.pt)

    def validate(self) -> None:
        """Raise :class:`~sggraph.ConfigError` naming the first invalid setting (types, finite numbers,
        ranges, seed, sizes)."""
        check_types(self)
        if self.method not in PAPER_LR:
            raise ConfigError(f"unknown method '{self.method}'", fix="use sgprop, backprop or mlp")
        check_lambda_setting(self.lam)
        check_seed(self)
        check_sizes(self, ("batch", "eval_batch", "width", "layers", "q", "slots", "n_parents", "mlp_width",
                           "eval_size"))
        check_sizes(self, ("steps", "evaluations", "checkpoint_every"), largest=MAX_STEPS)
        check_sizes(self, ("snapshots",), largest=MAX_STEPS, smallest=0)
        check_between(self, ("p_flip", "lam_init", "lam_momentum"))
        check_positive(self, ("lr",), largest=MAX_RATE)
        check_positive(self, ("generator_lr",), zero=True, largest=MAX_RATE)
        if not self.classes or any(not 0 <= c <= 9 for c in self.classes) or len(set(self.classes)) < len(
                self.classes):
            raise ConfigError(f"classes = {' '.join(map(str, self.classes)) or '(none)'} must be distinct digits 0..9",
                              fix="list each action's digit once, e.g. --classes 0 1 3 4 5 6 7 8 9")
        choices = {"normalize": ("feedback", "gradient", "none"), "generator_init": ("normal", "zero"),
                   "update_order": UPDATE_ORDERS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} = {getattr(self, name)!r} is not one of {', '.join(allowed)}",
                                  fix=f"use --{name.replace('_', '-')} {allowed[0]}")

    def evaluation_plan(self) -> tuple[int, int]:
        """``(evaluations, images per evaluation)`` of the run: the settings when given, else the paper's 20
        evaluations of 4,000 images for a run of 1,500 steps or more, scaled by ``steps / 1500`` for a shorter
        one (at least 2 evaluations of 500 images), so that a quick run is not mostly evaluation.

        >>> BanditConfig().evaluation_plan(), BanditConfig(steps=50).evaluation_plan()
        ((20, 4000), (2, 500))
        >>> BanditConfig(steps=750).evaluation_plan(), BanditConfig(steps=50, evaluations=5).evaluation_plan()
        ((10, 2000), (5, 500))
        """
        scale = min(1.0, self.steps / PAPER_STEPS)
        evaluations = self.evaluations if self.evaluations is not None else \
            max(2, round(PAPER_EVALUATIONS * scale))
        images = self.eval_batch if self.eval_batch is not None else max(500, round(PAPER_EVAL_IMAGES * scale))
        return evaluations, images

    @property
    def policy_lr(self) -> float:
        return self.lr if self.lr is not None else PAPER_LR[self.method]

    def typical_op_elements(self) -> int:
        """Elements of a training step's typical operation (the default thread count works from it):
        a SparseNet layer's slot outputs ``batch × width × slots × q``, or an MLP layer's ``batch × mlp_width``.

        >>> BanditConfig().typical_op_elements(), BanditConfig(method="mlp").typical_op_elements()
        (640000, 47680)
        """
        if self.method == "mlp":
            return self.batch * self.mlp_width
        return self.batch * self.width * self.slots * self.q
