"""The finite-partition expert network of the paper's §5 (App. F, H.1), run through the engine.

A source ``z`` (the partition's representative, encoded as its Boolean state) feeds the
target node ``x`` with piecewise parameters ``θ_1 … θ_R`` (``R = 2^d``): on partition ``r``
its output is the Boolean state ``x_r ∈ {±1}^d`` and its Jacobian to ``θ_r`` is ``A_r ~ N(0, I/d)``.
``m`` expert nodes read ``k`` coordinates each, ``y_j = a_jᵀ u_j + b_j``, with squared loss to
``t_j(u) = β_jᵀ u + γ_j``: clean feedback ``g_{j,r} = y_j − t_j``. Feedback cases:

* ``noisy``: ``ĝ = g + N(0, σ²)``;
* ``activation``: ``ĝ = η g / p``, ``η ~ Bernoulli(p)``;
* ``partial``: ``ĝ = g + α_j q``, ``q ~ N(0, τ²)``, ``α_j ~ N(0, 1)`` fixed per expert.

Backprop (λ = 1) averages the ``n`` samples of each partition; synthetic propagation (λ = 0 on
the edges ``x → e_j``) uses each expert's tabular generator, the conditional mean of its
feedback over all partitions sharing its projected input. Theorem 5: ``Δ²/Δ̃² = 2^{d−k}``.

>>> import numpy as np
>>> prob = make_problem(d=4, k=2, m=3, case="noisy", rng=np.random.default_rng(0))
>>> ghat = sample_feedback(prob, n=2, rng=np.random.default_rng(1))
>>> bp, sg = engine_estimates(prob, ghat)
>>> nbp, nsg = numpy_estimates(prob, ghat)
>>> bool(np.allclose(bp, nbp) and np.allclose(sg, nsg))
True
"""

from __future__ import annotations

import attrs
import numpy as np
import torch
from torch import nn

import sggraph
from sggraph.engine import TabularGenerator
from sggraph.exceptions import ConfigError

__all__ = [
    "CASES",
    "ExpertProblem",
    "ExpertSimulator",
    "check_settings",
    "clean_feedback",
    "engine_estimates",
    "exact_gradient",
    "expert_graph",
    "make_problem",
    "numpy_estimates",
    "sample_feedback",
]

CASES = ("noisy", "activation", "partial")


@attrs.frozen(eq=False)
class ExpertProblem:
    """One random instance (one Monte Carlo trial).

    Attributes
    ----------
    d, k, m : int
    case : str
    states : ``[R, d]`` ±1 Boolean states (partition ``r`` has the bits of ``r``)
    jacobians : ``[R, d, d]`` ``A_r``
    coords : ``[m, k]`` each expert's coordinates ``P_j``
    a, beta : ``[m, k]``; b, gamma, alpha : ``[m]``
    sigma, p, tau : float
    """

    d: int
    k: int
    m: int
    case: str
    states: np.ndarray
    jacobians: np.ndarray
    coords: np.ndarray
    a: np.ndarray
    b: np.ndarray
    beta: np.ndarray
    gamma: np.ndarray
    alpha: np.ndarray
    sigma: float = 0.5
    p: float = 0.5
    tau: float = 0.5


def check_settings(d: int, k: int, n: int, case: str, m: int = 5) -> None:
    """Raise :class:`~sggraph.ConfigError` for settings the construction does not allow."""
    if case not in CASES:
        raise ConfigError(f"unknown case '{case}'", fix=f"use one of {', '.join(CASES)}")
    if d < 1 or k < 1:
        raise ConfigError(f"d and k must be positive (got d={d}, k={k})", fix="use d >= k >= 1")
    if k > d:
        raise ConfigError(f"k={k} is larger than d={d}: an expert reads k of the d coordinates",
                          fix="use k <= d")
    if n < 1:
        raise ConfigError(f"n={n}: each partition needs at least one sample", fix="use n >= 1")
    if m < 1:
        raise ConfigError(f"m={m}: at least one expert", fix="use m >= 1")


def states_of(d: int) -> np.ndarray:
    """``[2^d, d]``: row ``r`` holds the bits of ``r`` as ±1."""
    r = np.arange(2 ** d)[:, None]
    return np.where((r >> np.arange(d)) & 1, 1.0, -1.0)


def make_problem(d: int, k: int, m: int, case: str, rng: np.random.Generator, sigma: float = 0.5,
                 p: float = 0.5, tau: float = 0.5) -> ExpertProblem:
    """Draw one instance: ``A_r``, the experts' coordinates and linear maps, the targets."""
    check_settings(d, k, 1, case, m)
    big_r = 2 ** d
    return ExpertProblem(
        d, k, m, case, states_of(d), rng.normal(0.0, 1.0 / np.sqrt(d), size=(big_r, d, d)),
        np.stack([rng.choice(d, size=k, replace=False) for _ in range(m)]),
        rng.normal(size=(m, k)), rng.normal(size=m), rng.normal(size=(m, k)), rng.normal(size=m),
        rng.normal(size=m), sigma, p, tau)


def clean_feedback(prob: ExpertProblem) -> np.ndarray:
    """``g_{j,r} = y_{j,r} − t_j(u_{j,r})``, shape ``[R, m]``."""
    u = prob.states[:, prob.coords]  # [R, m, k]
    return np.einsum("rmk,mk->rm", u, prob.a - prob.beta) + (prob.b - prob.gamma)


def sample_feedback(prob: ExpertProblem, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` noisy feedback samples per partition and expert, shape ``[R, n, m]``."""
    g = clean_feedback(prob)[:, None, :]
    shape = (g.shape[0], n, prob.m)
    if prob.case == "noisy":
        return g + rng.normal(0.0, prob.sigma, size=shape)
    if prob.case == "activation":
        return g * (rng.random(shape) < prob.p) / prob.p
    return g + prob.alpha * rng.normal(0.0, prob.tau, size=shape)


def _pullback(prob: ExpertProblem) -> np.ndarray:
    """``J_θᵀ J_jᵀ`` per partition and expert: ``[R, m, d]`` (``A_rᵀ P_jᵀ a_j``)."""
    scatter = np.zeros((prob.m, prob.d))
    for j in range(prob.m):
        scatter[j, prob.coords[j]] = prob.a[j]
    return np.einsum("rij,mi->rmj", prob.jacobians, scatter)


def exact_gradient(prob: ExpertProblem) -> np.ndarray:
    """The population gradient ``E g^θ = (1/R)(g^{θ_1}, …, g^{θ_R})`` by enumeration, ``[R, d]``."""
    return np.einsum("rmj,rm->rj", _pullback(prob), clean_feedback(prob)) / len(prob.states)


def numpy_estimates(prob: ExpertProblem, ghat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Backprop (eq. 108) and tabular synthetic (eq. 109–110) estimates, written directly."""
    big_r = len(prob.states)
    pull = _pullback(prob)
    backprop = np.einsum("rmj,rm->rj", pull, ghat.mean(axis=1)) / big_r
    pooled = np.empty((big_r, prob.m))
    for j in range(prob.m):
        key = ((prob.states[:, prob.coords[j]] > 0) * (2 ** np.arange(prob.k))).sum(1)
        sums = np.bincount(key, weights=ghat[:, :, j].sum(1), minlength=2 ** prob.k)
        counts = np.bincount(key, minlength=2 ** prob.k) * ghat.shape[1]
        pooled[:, j] = sums[key] / counts[key]
    return backprop, np.einsum("rmj,rm->rj", pull, pooled) / big_r


class PiecewiseTarget(nn.Module):
    """The target node: value ``x_r`` (the Boolean state), Jacobian ``A_r`` to ``θ_r``.

    ``z [B, d]`` (±1) → ``x [B, d]``; parameters ``theta [R, d]``.
    """

    def __init__(self, d: int) -> None:
        super().__init__()
        self.d = d
        self.theta = nn.Parameter(torch.zeros(2 ** d, d, dtype=torch.float64))
        self.register_buffer("jacobians", torch.zeros(2 ** d, d, d, dtype=torch.float64))
        self.register_buffer("powers", 2 ** torch.arange(d))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        r = ((z > 0).long() * self.powers).sum(1)
        theta = self.theta[r]
        return z + torch.einsum("bij,bj->bi", self.jacobians[r], theta - theta.detach())


class ExpertHead(nn.Module):
    """Expert ``j``: ``y = a_jᵀ x[P_j] + b_j``; ``x [B, d]`` → ``[B, 1]``."""

    def __init__(self, d: int, k: int) -> None:
        super().__init__()
        self.register_buffer("coords", torch.zeros(k, dtype=torch.long))
        self.weight = nn.Parameter(torch.zeros(k, dtype=torch.float64))
        self.bias = nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, self.coords] @ self.weight + self.bias).unsqueeze(1)


def expert_graph(d: int, m: int = 5) -> sggraph.Graph:
    """The expert network as a graph: ``z → x → e_1 … e_m`` with stochastic feedback."""
    g = sggraph.Graph(f"expert-net-d{d}-m{m}")
    g.add_node("z", d)
    g.add_node("x", d, ["z"])
    for j in range(m):
        g.add_node(f"e{j + 1}", 1, ["x"])
        g.set_feedback(f"e{j + 1}", "stochastic")
    return g


class ExpertSimulator:
    """A compiled expert network, reloaded with each trial's problem.

    Parameters
    ----------
    d, k, m : int
    """

    def __init__(self, d: int, k: int, m: int = 5) -> None:
        self.d, self.k, self.m = d, k, m
        self.target = PiecewiseTarget(d)
        self.heads = [ExpertHead(d, k) for _ in range(m)]
        self.tables = [TabularGenerator(1) for _ in range(m)]
        functions = {"x": self.target, **{f"e{j + 1}": h for j, h in enumerate(self.heads)}}
        generators = {f"e{j + 1}": t for j, t in enumerate(self.tables)}
        self.net = sggraph.compile(expert_graph(d, m), functions, generators).to(torch.float64)
        self.net.check_finite = False

    def load(self, prob: ExpertProblem) -> None:
        with torch.no_grad():
            self.target.jacobians.copy_(torch.from_numpy(prob.jacobians))
            for j, head in enumerate(self.heads):
                head.coords.copy_(torch.from_numpy(prob.coords[j]))
                head.weight.copy_(torch.from_numpy(prob.a[j]))
                head.bias.fill_(float(prob.b[j]))
                self.tables[j].columns = [int(c) for c in prob.coords[j]]
                self.tables[j].reset()

    def _theta_grad(self, z: torch.Tensor, feedback: torch.Tensor) -> np.ndarray:
        self.target.theta.grad = None
        out = self.net({"z": z})
        loss = sum((out[f"e{j + 1}"][:, 0] * feedback[:, j]).sum() for j in range(self.m))
        loss.backward()
        return self.target.theta.grad.detach().numpy().copy()

    def estimates(self, prob: ExpertProblem, ghat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Backprop and synthetic estimates of ``E g^θ`` from the samples ``ghat [R, n, m]``."""
        self.load(prob)
        big_r, n, _ = ghat.shape
        z = torch.from_numpy(np.repeat(prob.states, n, axis=0))
        feedback = torch.from_numpy(ghat.reshape(big_r * n, self.m)) / (big_r * n)
        # pass 1: backprop (λ = 1); the mixers record each expert's received feedback
        self.net.set_lambda(1.0)
        backprop = self._theta_grad(z, feedback)
        self.net.update_generators()  # the tabular generators observe (x, ĝ)
        # pass 2: fully synthetic into x (λ = 0 on x → e_j; x's own λ^self stays 1)
        for j in range(self.m):
            self.net.set_lambda(0.0, edge=("x", f"e{j + 1}"))
        synthetic = self._theta_grad(z, feedback)
        return backprop, synthetic


def engine_estimates(prob: ExpertProblem, ghat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`ExpertSimulator.estimates` with a fresh simulator."""
    return ExpertSimulator(prob.d, prob.k, prob.m).estimates(prob, ghat)
