"""The gradient-estimator MSE experiment on a YAML graph (``sggraph mse``): a random linear teacher
with noisy feedback (A.1), generators fitted on their bootstrapped targets, then the profiler
(Lemma 1, λ*, the eq. 19 check) per node."""

from __future__ import annotations

import math

import torch

from ..core.graph import Graph
from ..engine import NodeProfile, adam, profile
from ..engine import compile as compile_graph
from ..exceptions import ConfigError
from ..runtime.progress import Progress
from .settings import MAX_SEED, MAX_STEPS

__all__ = ["MAX_PROFILE_BYTES", "MAX_SAMPLES", "check_memory", "check_mse_settings", "profile_yaml"]


#: Most samples a profile draws (``--samples``, ``--reference``).
MAX_SAMPLES = 10**7
#: Most bytes the profile's per-sample tensors may take (about samples × (parameters + inputs) × 8 bytes).
MAX_PROFILE_BYTES = 4 * 1024**3


def check_mse_settings(*, n: int, noise: float, lam: float, samples: int, reference: int, repeats: int,
                       fit_steps: int, generator_lr: float, jacobian_bound: float | None, epsilon: float | None,
                       seed: int) -> None:
    """Raise :class:`~sggraph.ConfigError` naming the first setting ``sggraph mse`` cannot use (before any work).

    >>> check_mse_settings(n=1, noise=float("nan"), lam=0.5, samples=8, reference=8, repeats=1, fit_steps=0,
    ...                    generator_lr=0.01, jacobian_bound=None, epsilon=None, seed=0)
    Traceback (most recent call last):
    ...
    sggraph.exceptions.ConfigError: --noise nan is not a finite non-negative number. Fix: pass a standard deviation such as --noise 1.0.
    """
    for flag, value, largest in (("n", n, MAX_SAMPLES), ("samples", samples, MAX_SAMPLES),
                                 ("reference", reference, MAX_SAMPLES), ("repeats", repeats, MAX_SAMPLES),
                                 ("fit-steps", fit_steps, MAX_STEPS), ("seed", seed, MAX_SEED)):
        smallest = 0 if flag in ("fit-steps", "seed") else 1
        if not smallest <= value <= largest:
            raise ConfigError(f"--{flag} {value} is outside {smallest}..{largest:,}",
                              fix=f"pass --{flag} between {smallest} and {largest:,}")
    for flag, value, example in (("noise", noise, "--noise 1.0"), ("generator-lr", generator_lr, "--generator-lr 0.01"),
                                 ("jacobian-bound", jacobian_bound, "--jacobian-bound 1.0"),
                                 ("epsilon", epsilon, "--epsilon 0.1")):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"--{flag} {value} is not a finite non-negative number",
                              fix=f"pass a {'standard deviation' if flag == 'noise' else 'value'} such as {example}")
    if not (math.isfinite(lam) and 0 <= lam <= 1):
        raise ConfigError(f"--lambda {lam} is outside [0, 1]", fix="pass a mixing weight such as --lambda 0.5")


def check_memory(net, samples: int, width: int) -> None:
    """Raise :class:`~sggraph.ConfigError` when the profile's per-sample tensors (``samples`` × (the net's
    parameters + ``width`` input values) × 8 bytes) would exceed :data:`MAX_PROFILE_BYTES`."""
    per_sample = sum(p.numel() for p in net.parameters()) + width
    need = samples * per_sample * 8
    if need > MAX_PROFILE_BYTES:
        most = max(1, MAX_PROFILE_BYTES // (per_sample * 8))
        raise ConfigError(f"{samples:,} samples of this graph ({per_sample:,} parameters and inputs each) would "
                          f"hold about {need / 1024**3:.0f} GB of per-sample values",
                          fix=f"pass --samples and --reference of at most {most:,}")


def profile_yaml(file: str, *, n: int = 1, noise: float = 1.0, lam: float = 0.5, samples: int = 2048,
                 reference: int = 4096, repeats: int = 4, fit_steps: int = 200, generator_lr: float = 1e-2,
                 jacobian_bound: float | None = None, epsilon: float | None = None, seed: int = 0,
                 progress: bool = False) -> tuple[Graph, dict[str, NodeProfile]]:
    """Compile the graph of ``file`` (per-child λ = ``lam``), fit its generators for ``fit_steps`` and
    profile every node at ``n`` samples; returns the graph and the profiles. ``progress``: a progress
    bar on stderr over the fitting steps and the profile."""
    check_mse_settings(n=n, noise=noise, lam=lam, samples=samples, reference=reference, repeats=repeats,
                       fit_steps=fit_steps, generator_lr=generator_lr, jacobian_bound=jacobian_bound,
                       epsilon=epsilon, seed=seed)
    graph = Graph.from_yaml(file)
    torch.manual_seed(seed)
    net = compile_graph(graph, grouping="child").double()
    net.set_lambda(lam)
    sources = {name: (src.count, src.dim) for name, src in net.sources.items()}
    width = sum(d if c is None else c * d for c, d in sources.values())
    check_memory(net, max(samples, reference), width)
    gen0 = torch.Generator().manual_seed(seed + 1)
    targets = {}
    with torch.no_grad():
        probe = net({k: torch.zeros((1, d) if c is None else (1, c, d), dtype=torch.float64)
                     for k, (c, d) in sources.items()})
    for name, out in probe.items():
        targets[name] = torch.randn(width, out[0].numel(), generator=gen0, dtype=torch.float64) / width ** 0.5

    def sampler(count: int, gen: torch.Generator):
        k = max(1, count // repeats)
        inputs = {name: torch.randn((k, d) if c is None else (k, c, d), generator=gen, dtype=torch.float64)
                  .repeat_interleave(repeats, 0)[:count] for name, (c, d) in sources.items()}
        flat = torch.cat([x.reshape(len(x), -1) for x in inputs.values()], dim=1)
        with torch.no_grad():
            out = net(inputs)
        feedback = {name: out[name] - (flat @ targets[name]).view_as(out[name])
                    + noise * torch.randn(out[name].shape, generator=gen, dtype=torch.float64) for name in out}
        groups = torch.arange(k).repeat_interleave(repeats)[:count]
        return inputs, feedback, groups

    gen = torch.Generator().manual_seed(seed + 2)
    opt = adam(net.generator_parameters(), lr=generator_lr)
    with Progress(fit_steps + 1, f"mse {graph.name}", unit="step", quiet=not progress) as bar:
        for _ in range(fit_steps):  # fit the generators on their bootstrapped targets
            inputs, feedback, _ = sampler(64, gen)
            out = net(inputs)
            sum((out[k] * feedback[k]).sum() for k in feedback).backward()
            loss = net.update_generators(opt)
            bar.update(1, stage="fit generators", generator_loss=loss)
        bar.set_metrics({"stage": "profile"})
        result = profile(net, sampler, n=n, reference_samples=reference, samples=samples,
                         seed=seed, jacobian_bound=jacobian_bound, epsilon=epsilon)
        bar.update(1)
    return graph, result
