"""Gradient-estimator MSE profiler (paper §3–4: eq. 7, Lemma 1, eq. 18–20) and an empirical test of (B).

For a compiled graph and a *sampler*, :func:`profile` estimates per node, from per-sample
parameter gradients computed through the engine:

* ``delta2_backprop`` — Δ² of the n-sample backprop estimator, ``tr Cov(g^θ) / n``;
* ``delta2_mixture`` — Δ̃² of the current mixture (the net's λ), ``(ρ̃² + ν̃²)/n + b̃²`` (Lemma 1);
* ``rho2``, ``nu2`` (backprop) and ``rho2_mixture``, ``nu2_mixture`` — the split of the total
  variance into the expected conditional variance given ``z_v`` and the variance of the
  conditional mean, available when the sampler says which samples share ``z_v`` (groups);
* ``b2`` — the mixture's squared bias ``‖E g̃^θ − E g^θ‖²``;
* ``lambda_star`` — eq. 18 for the n-sample means of ``p̃`` (received feedback) and ``s̃``
  (synthetic), with ``E g^θ`` from the reference samples;
* ``theorem3_lhs`` — ``(tr Cov p̃ − tr Cov s̃)/n`` of eq. 19, and ``theorem3`` — whether eq. 19
  holds for the given ``jacobian_bound`` and ``epsilon`` (ε + ε′).

The "true" gradient ``E g^θ`` is the mean over ``reference_samples`` backprop samples; the
offsets from it (the bias ``b̃²`` and the terms of eq. 18) are estimated *paired* — the same
reference samples under backprop and under the mixture — which removes most of the noise.

A *sampler* is ``sampler(count, generator) -> (inputs, feedback, groups)``: source tensors for
``count`` samples, the terminal feedback per terminal (``[count, dim]``), and ``groups`` — an
int tensor ``[count]`` of group ids whose members share ``z_v`` at every node, or None.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence

import attrs
import torch

from ..exceptions import ConfigError
from .blocks import ArrayBlock
from .compile import CompiledGraph
from .lam.estimate import per_sample_param_grads

__all__ = ["ConditionBResult", "NodeProfile", "condition_b_test", "format_profile", "profile"]

Sampler = Callable[[int, torch.Generator], tuple]


@attrs.frozen
class NodeProfile:
    """The profiler's numbers for one node (see the module docstring)."""

    node: str
    n: int
    delta2_backprop: float
    delta2_mixture: float
    rho2: float | None
    nu2: float | None
    rho2_mixture: float | None
    nu2_mixture: float | None
    b2: float
    lambda_star: float
    theorem3_lhs: float
    theorem3: bool | None

    def to_dict(self) -> dict:
        return attrs.asdict(self)


@contextlib.contextmanager
def _recording(net: CompiledGraph, backprop: bool) -> Iterator[None]:
    """Run with the mixers on (so they record) and, for ``backprop``, every weight at 1;
    restore λ, ``synthetic`` and clear the parameter gradients afterwards."""
    saved = net.lambdas.snapshot()
    was = net.synthetic
    try:
        net.synthetic = True
        if backprop:
            net.set_lambda(1.0)
            net.set_self_lambda(1.0)
        yield
    finally:
        net.synthetic = was
        net.lambdas.restore(saved)
        for p in net.model_parameters():
            p.grad = None


def _backward(net: CompiledGraph, inputs, feedback) -> None:
    out = net(inputs)
    sum((out[k] * feedback[k]).sum() for k in feedback).backward()


def _per_sample(net: CompiledGraph, inputs, feedback, synthetic: bool,
                nodes: set[str] | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """Per-sample parameter gradients per node: ``p`` (received feedback), ``s`` (synthetic), ``g`` (mixed)."""
    result = {}
    with _recording(net, backprop=not synthetic):
        _backward(net, inputs, feedback)
        for name, block in net.blocks.items():
            if nodes is not None and name not in nodes:
                continue
            entry = net.trace.nodes.get(name)
            if entry is None or entry.received is None or entry.prediction is None:
                continue
            count = block.count if isinstance(block, ArrayBlock) else None
            p = per_sample_param_grads(block.function, entry.inputs, entry.received, count)  # [B, U, P]
            s = per_sample_param_grads(block.function, entry.inputs, entry.prediction.detach(), count)
            # parameter gradients are linear in the cotangent: J_θᵀ(λ g̃ + (1 − λ) ĥ) = λ p̃ + (1 − λ) s̃
            lam_self = block.lam_self.reshape(1, -1, 1).to(p.dtype)
            mixed = lam_self * p + (1 - lam_self) * s
            result[name] = {"p": p.flatten(1).double(), "s": s.flatten(1).double(), "g": mixed.flatten(1).double()}
    return result


def _tr_cov(x: torch.Tensor) -> float:
    return float(((x - x.mean(0)) ** 2).sum(1).sum() / (len(x) - 1))


def _split(x: torch.Tensor, groups: torch.Tensor | None) -> tuple[float | None, float | None]:
    """(expected conditional variance, variance of the conditional mean) with group means."""
    if groups is None:
        return None, None
    ids, inverse, counts = torch.unique(groups, return_inverse=True, return_counts=True)
    means = torch.zeros(len(ids), x.shape[1], dtype=x.dtype).index_add_(0, inverse, x) / counts.unsqueeze(1)
    within = x - means[inverse]
    rho2 = float((within ** 2).sum(1).sum() / (len(x) - len(ids)))  # unbiased pooled within-group variance
    total = _tr_cov(x)
    return rho2, max(total - rho2, 0.0)


def profile(net: CompiledGraph, sampler: Sampler, n: int, reference_samples: int = 4096, *,
            lambdas: float | Mapping[str, float] | None = None, samples: int = 2048, seed: int = 0,
            jacobian_bound: float | None = None, epsilon: float | None = None,
            child_constants: Mapping[str, list[float]] | None = None,
            nodes: Sequence[str] | None = None) -> dict[str, NodeProfile]:
    """Profile the gradient estimators of every node of ``net`` (see the module docstring).

    Parameters
    ----------
    net : CompiledGraph
        Its current λ define the mixture that is profiled.
    sampler : callable
        ``sampler(count, generator) -> (inputs, feedback, groups)``.
    n : int
        Samples per estimate (the ``n`` of eq. 7).
    lambdas : float or mapping, optional
        The mixture to profile: one λ for every edge, or ``{node: λ}`` set with
        ``net.set_lambda(λ, node=...)`` (per the net's grouping). Default: the net's current λ.
        The net's own λ are restored afterwards.
    reference_samples : int
        Samples that estimate ``E g^θ`` and, paired, the mixture's offsets from it.
    samples : int
        Samples that estimate the moments.
    seed : int
    jacobian_bound, epsilon : float, optional
        ``J`` and ``ε + ε′`` for the eq. 19 check (with ``child_constants``: ``c_{v⁺}`` of v's children,
        from :func:`sggraph.theorem3_constants`; default zeros).
    nodes : sequence of str, optional
        Profile only these nodes (per-sample gradients of a large array take ``samples × params``
        memory each; profiling one array at a time bounds it).

    Returns
    -------
    dict mapping node names to :class:`NodeProfile`.
    """
    if n < 1:
        raise ConfigError(f"n={n}: an estimate needs at least one sample", fix="use n >= 1")
    if lambdas is not None:
        saved = net.lambdas.snapshot()
        try:
            if isinstance(lambdas, Mapping):
                for node, value in lambdas.items():
                    net.set_lambda(value, node=node)
            else:
                net.set_lambda(lambdas)
            return profile(net, sampler, n, reference_samples, samples=samples, seed=seed,
                           jacobian_bound=jacobian_bound, epsilon=epsilon, child_constants=child_constants,
                           nodes=nodes)
        finally:
            net.lambdas.restore(saved)
    gen = torch.Generator().manual_seed(seed)
    only = None if nodes is None else set(nodes)
    ref_inputs, ref_feedback, _ = sampler(reference_samples, gen)
    ref_bp = _per_sample(net, ref_inputs, ref_feedback, synthetic=False, nodes=only)
    ref_mix = _per_sample(net, ref_inputs, ref_feedback, synthetic=True, nodes=only)
    inputs, feedback, groups = sampler(samples, gen)
    bp = _per_sample(net, inputs, feedback, synthetic=False, nodes=only)
    mix = _per_sample(net, inputs, feedback, synthetic=True, nodes=only)
    out = {}
    for name in ref_bp:
        # offsets from E g^θ are estimated paired: the same reference samples under backprop and the mixture
        truth = ref_bp[name]["p"]
        g_bp, g_mix = bp[name]["p"], mix[name]["g"]
        p_mix, s_mix = mix[name]["p"], mix[name]["s"]
        var_bp, var_mix = _tr_cov(g_bp), _tr_cov(g_mix)
        b2 = float(((ref_mix[name]["g"] - truth).mean(0) ** 2).sum())
        rho2, nu2 = _split(g_bp, groups)
        rho2_m, nu2_m = _split(g_mix, groups)
        # eq. 18 for n-sample means of p̃ and s̃
        dp, ds = (ref_mix[name]["p"] - truth).mean(0), (ref_mix[name]["s"] - truth).mean(0)
        cov_sp = float(((s_mix - s_mix.mean(0)) * (p_mix - p_mix.mean(0))).sum(1).sum() / (len(s_mix) - 1))
        e_ss = _tr_cov(s_mix) / n + float((ds ** 2).sum())
        e_sp = cov_sp / n + float((ds * dp).sum())
        e_diff = _tr_cov(s_mix - p_mix) / n + float(((ds - dp) ** 2).sum())
        lam_star = 0.0 if e_diff <= 0 else min(max((e_ss - e_sp) / e_diff, 0.0), 1.0)
        lhs = (_tr_cov(p_mix) - _tr_cov(s_mix)) / n
        holds = None
        if jacobian_bound is not None and epsilon is not None:
            from ..core.analysis import theorem3_condition

            consts = (child_constants or {}).get(name, [0.0])
            holds = theorem3_condition(_tr_cov(p_mix), _tr_cov(s_mix), n, jacobian_bound, epsilon, consts)
        out[name] = NodeProfile(name, n, var_bp / n, var_mix / n + b2, rho2, nu2, rho2_m, nu2_m, b2, lam_star, lhs,
                                holds)
    return out


def format_profile(profiles: Mapping[str, NodeProfile]) -> str:
    """A fixed-width table of :func:`profile`'s result."""

    def f(x) -> str:
        return "-" if x is None else (str(x) if isinstance(x, bool) else f"{x:.4g}")

    head = f"{'node':10s} {'Δ² backprop':>12s} {'Δ̃² mixture':>12s} {'ρ²':>10s} {'ν²':>10s} {'b̃²':>10s} " \
           f"{'λ*':>6s} {'eq.19 lhs':>10s} {'eq.19':>6s}"
    lines = [head, "-" * len(head)]
    for p in profiles.values():
        lines.append(f"{p.node:10s} {f(p.delta2_backprop):>12s} {f(p.delta2_mixture):>12s} {f(p.rho2):>10s} "
                     f"{f(p.nu2):>10s} {f(p.b2):>10s} {p.lambda_star:6.3f} {f(p.theorem3_lhs):>10s} "
                     f"{f(p.theorem3):>6s}")
    return "\n".join(lines)


@attrs.frozen
class ConditionBResult:
    """Held-out R² of the received gradient regressed on ``z_v`` alone and on ``z_v`` plus ``Z_U``.

    ``gain`` is the difference; ``margin`` twice its bootstrap standard error over held-out
    samples. (B) is *consistent with the data* when ``gain <= margin``.
    """

    node: str
    r2_local: float
    r2_extended: float
    gain: float
    margin: float

    @property
    def consistent(self) -> bool:
        return self.gain <= self.margin


def condition_b_test(net: CompiledGraph, sampler: Sampler, node: str, samples: int = 4096, seed: int = 0,
                     ridge: float = 1e-3) -> ConditionBResult:
    """Empirical check of (B) at ``node``: does ``Z_U`` (extended ancestors' inputs) predict ``g_v`` beyond ``z_v``?

    Ridge regressions (with intercept) of the backprop feedback ``g_v`` on ``z_v`` and on
    ``[z_v, Z_U]`` are fitted on half the samples and scored (R²) on the other half.
    Linear regression only sees linear dependence: a gain proves (B) fails for the
    conditional mean; no gain is evidence, not proof, that it holds.
    """
    from ..core.analysis import extended_ancestors

    if node not in net.blocks:
        raise ConfigError(f"'{node}' is not a compiled node", fix=f"use one of {', '.join(net.blocks)}")
    gen = torch.Generator().manual_seed(seed)
    inputs, feedback, _ = sampler(samples, gen)
    with _recording(net, backprop=True):
        _backward(net, inputs, feedback)

    def z_of(name: str) -> torch.Tensor:
        block = net.blocks[name]
        z = net.trace.nodes[name].inputs[0]
        return z.transpose(0, 1).flatten(1) if isinstance(block, ArrayBlock) else z

    target = net.trace.nodes[node].received
    target = target.transpose(0, 1).flatten(1) if isinstance(net.blocks[node], ArrayBlock) else target
    local = z_of(node)
    others = sorted({a.split("[", 1)[0] for a in extended_ancestors(net.graph, node)} - {node})
    extended = torch.cat([local] + [z_of(o) for o in others if o in net.blocks], dim=1)
    half = samples // 2

    def r2(x: torch.Tensor) -> tuple[float, torch.Tensor]:
        x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1).double()
        y = target.double()
        xt, yt, xv, yv = x[:half], y[:half], x[half:], y[half:]
        w = torch.linalg.solve(xt.T @ xt + ridge * torch.eye(x.shape[1], dtype=x.dtype), xt.T @ yt)
        resid = ((yv - xv @ w) ** 2).sum(1)
        total = ((yv - yv.mean(0)) ** 2).sum(1)
        return float(1 - resid.sum() / total.sum()), resid / total.mean()

    r_local, res_local = r2(local)
    r_ext, res_ext = r2(extended)
    diff = (res_local - res_ext).double()
    margin = float(2 * diff.std() / len(diff) ** 0.5)
    return ConditionBResult(node, r_local, r_ext, r_ext - r_local, margin)
