"""The gradient-estimator MSE experiment on a YAML graph (``sggraph mse``): a random linear teacher
with noisy feedback (A.1), generators fitted on their bootstrapped targets, then the profiler
(Lemma 1, λ*, the eq. 19 check) per node."""

from __future__ import annotations

import torch

from ..core.graph import Graph
from ..engine import NodeProfile, adam, profile
from ..engine import compile as compile_graph
from ..exceptions import ConfigError
from ..runtime.progress import Progress

__all__ = ["profile_yaml"]


def profile_yaml(file: str, *, n: int = 1, noise: float = 1.0, lam: float = 0.5, samples: int = 2048,
                 reference: int = 4096, repeats: int = 4, fit_steps: int = 200, generator_lr: float = 1e-2,
                 jacobian_bound: float | None = None, epsilon: float | None = None, seed: int = 0,
                 progress: bool = False) -> tuple[Graph, dict[str, NodeProfile]]:
    """Compile the graph of ``file`` (per-child λ = ``lam``), fit its generators for ``fit_steps`` and
    profile every node at ``n`` samples; returns the graph and the profiles. ``progress``: a progress
    bar on stderr over the fitting steps and the profile."""
    for flag, value in (("n", n), ("samples", samples), ("reference", reference), ("repeats", repeats)):
        if value < 1:
            raise ConfigError(f"--{flag} must be at least 1 (got {value})", fix=f"pass --{flag} 1 or more")
    if noise < 0:
        raise ConfigError(f"--noise must be non-negative (got {noise})", fix="pass a standard deviation >= 0")
    graph = Graph.from_yaml(file)
    torch.manual_seed(seed)
    net = compile_graph(graph, grouping="child").double()
    net.set_lambda(lam)
    sources = {name: (src.count, src.dim) for name, src in net.sources.items()}
    width = sum(d if c is None else c * d for c, d in sources.values())
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
