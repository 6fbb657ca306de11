"""The MSE profiler: Lemma 1, λ* (eq. 18) against a grid, Theorem 1's ρ² = 0, the (B) test."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sggraph
from sggraph.engine.diagnostics import condition_b_test, format_profile, profile

A = torch.tensor([1.0, -0.5], dtype=torch.float64)
SIGMA = 0.7


def linear_net(gen_weight=(0.8, -0.4), gen_bias=0.3, lam=0.5):
    g = sggraph.Graph("linear")
    g.add_node("z", 2)
    g.add_node("y", 1, ["z"], fn="linear")
    g.set_feedback("y", "stochastic")
    net = sggraph.compile(g, grouping="child").double()
    with torch.no_grad():
        net.blocks["y"].generator.linear.weight.copy_(torch.tensor([gen_weight], dtype=torch.float64))
        net.blocks["y"].generator.linear.bias.fill_(gen_bias)
    net.set_lambda(lam)
    return net


def linear_sampler(contexts_per_group=1):
    """z ~ N(0, I); feedback g = a·z + σ ε. Groups: each z repeated with fresh noise."""

    def sample(count, gen):
        k = count // contexts_per_group
        z = torch.randn(k, 2, generator=gen, dtype=torch.float64).repeat_interleave(contexts_per_group, 0)
        g = z @ A + SIGMA * torch.randn(len(z), generator=gen, dtype=torch.float64)
        groups = torch.arange(k).repeat_interleave(contexts_per_group)
        return {"z": z}, {"y": g.unsqueeze(1)}, groups

    return sample


def test_lemma1_with_known_moments():
    net = linear_net()
    n = 3
    prof = profile(net, linear_sampler(contexts_per_group=8), n=n, reference_samples=40000, samples=40000)["y"]
    # backprop: ρ² = σ² E‖[z, 1]‖² = 3σ², ν² = Var((a·z)[z, 1]) = 4‖a‖² for z ~ N(0, I₂)
    assert prof.rho2 == pytest.approx(3 * SIGMA ** 2, rel=0.05)
    assert prof.nu2 == pytest.approx(4 * float(A @ A), rel=0.08)
    assert prof.delta2_backprop == pytest.approx((prof.rho2 + prof.nu2) / n, rel=1e-6)
    # Lemma 1 for the biased mixture, against a Monte Carlo of the n-sample estimator itself
    gen = torch.Generator().manual_seed(5)
    trials = 20000
    z = torch.randn(trials, n, 2, generator=gen, dtype=torch.float64)
    g = z @ A + SIGMA * torch.randn(trials, n, generator=gen, dtype=torch.float64)
    h = z @ torch.tensor([0.8, -0.4], dtype=torch.float64) + 0.3
    mixed = 0.5 * g + 0.5 * h
    feat = torch.cat([z, torch.ones(trials, n, 1, dtype=torch.float64)], dim=2)
    est = (mixed.unsqueeze(2) * feat).mean(1)  # [trials, 3]: weight (2) and bias
    truth = torch.cat([A, torch.zeros(1, dtype=torch.float64)])
    mc = float(((est - truth) ** 2).sum(1).mean())
    assert prof.delta2_mixture == pytest.approx(mc, rel=0.06)
    assert prof.b2 == pytest.approx(float(((0.5 * A + 0.5 * torch.tensor([0.8, -0.4], dtype=torch.float64)
                                             - A) ** 2).sum() + 0.15 ** 2), rel=0.1)


@pytest.mark.parametrize("n", [4, 16])
def test_lambda_star_matches_grid_minimisation(n):
    net = linear_net(gen_weight=(0.3, -0.15), gen_bias=0.5)
    prof = profile(net, linear_sampler(), n=n, reference_samples=40000, samples=40000)["y"]
    gen = torch.Generator().manual_seed(9)
    trials = 40000
    z = torch.randn(trials, n, 2, generator=gen, dtype=torch.float64)
    g = z @ A + SIGMA * torch.randn(trials, n, generator=gen, dtype=torch.float64)
    h = z @ torch.tensor([0.3, -0.15], dtype=torch.float64) + 0.5
    feat = torch.cat([z, torch.ones(trials, n, 1, dtype=torch.float64)], dim=2)
    p_hat, s_hat = (g.unsqueeze(2) * feat).mean(1), (h.unsqueeze(2) * feat).mean(1)
    truth = torch.cat([A, torch.zeros(1, dtype=torch.float64)])
    grid = np.linspace(0, 1, 201)
    mse = [float(((lam * p_hat + (1 - lam) * s_hat - truth) ** 2).sum(1).mean()) for lam in grid]
    best = grid[int(np.argmin(mse))]
    assert 0.0 < best < 1.0  # a real trade-off
    assert prof.lambda_star == pytest.approx(best, abs=0.05)


def test_theorem1_regime_backprop_has_no_conditional_variance():
    g = sggraph.Graph.from_yaml("examples/dense-deterministic.yaml")
    report = sggraph.check_conditions(g)
    assert not report.a
    torch.manual_seed(0)
    net = sggraph.compile(g).double()
    w = torch.tensor([[0.7]], dtype=torch.float64)

    def sampler(count, gen):  # deterministic loss: g = y - t(x); each context repeated 4 times
        x1 = torch.randn(count // 4, 2, generator=gen, dtype=torch.float64).repeat_interleave(4, 0)
        x2 = torch.randn(count // 4, 2, generator=gen, dtype=torch.float64).repeat_interleave(4, 0)
        with torch.no_grad():
            y = net({"x1": x1, "x2": x2})["y"]
        return {"x1": x1, "x2": x2}, {"y": y - x1[:, :1] @ w}, torch.arange(count // 4).repeat_interleave(4)

    prof = profile(net, sampler, n=2, reference_samples=400, samples=400)
    for name in ("h1", "h2", "y"):
        assert prof[name].rho2 == pytest.approx(0.0, abs=1e-20)
        assert prof[name].nu2 > 0
    assert "Δ² backprop" in format_profile(prof)
    only = profile(net, sampler, n=2, reference_samples=400, samples=400, nodes=["h2"])
    assert list(only) == ["h2"] and only["h2"] == prof["h2"]  # the same numbers, one node's memory


def test_condition_b_test_detects_a_hidden_dependence():
    # y reads only h1; the feedback depends on x2, which h1 never sees but its sibling... is absent:
    # g = x2 is independent of z_y given nothing -> regression on z_y explains nothing, on ancestors' inputs all.
    g = sggraph.Graph("b")
    g.add_node("x1", 2)
    g.add_node("x2", 2)
    g.add_node("h1", 3, ["x1"], fn="tanh")
    g.add_node("h2", 3, ["x1", "x2"], fn="tanh")
    g.add_node("y", 1, ["h1"], fn="linear")
    g.add_node("w", 1, ["h2"], fn="linear")
    g.set_feedback("y", "contextual")
    torch.manual_seed(1)
    net = sggraph.compile(g).double()

    def sampler(count, gen):
        x1 = torch.randn(count, 2, generator=gen, dtype=torch.float64)
        x2 = torch.randn(count, 2, generator=gen, dtype=torch.float64)
        return {"x1": x1, "x2": x2}, {"y": x2[:, :1], "w": torch.tanh(x2[:, 1:])}, None

    res = condition_b_test(net, sampler, "h1", samples=4000)
    assert res.r2_extended > res.r2_local + 0.5
    assert not res.consistent
    clean = condition_b_test(net, sampler, "h2", samples=4000)  # h2 sees x2 itself
    assert clean.r2_local > 0.5


def test_mse_cli_json_and_bad_input(capsys):
    import json

    from sggraph.cli import main

    assert main(["mse", "examples/regression-dag.yaml", "--n", "2", "--samples", "256", "--reference", "256",
                 "--fit-steps", "5", "--json", "--jacobian-bound", "1.0", "--epsilon", "0.1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"h1", "h2", "h3", "y"}
    assert {"delta2_backprop", "delta2_mixture", "rho2", "nu2", "b2", "lambda_star", "theorem3"} <= set(data["y"])
    assert main(["mse", "examples/regression-dag.yaml", "--noise", "-1"]) == 2
    assert "non-negative" in capsys.readouterr().err


def test_profile_lambdas_argument_sets_and_restores():
    net = linear_net(lam=0.5)
    sampler = linear_sampler()
    at_one = profile(net, sampler, n=2, reference_samples=2000, samples=2000, lambdas=1.0)["y"]
    assert float(net.blocks["y"].lam_self) == 0.5  # restored
    assert at_one.b2 == pytest.approx(0.0, abs=1e-12)  # λ = 1 is backprop: no bias
    assert at_one.delta2_mixture == pytest.approx(at_one.delta2_backprop, rel=1e-9)
    mixed = profile(net, sampler, n=2, reference_samples=2000, samples=2000, lambdas={"y": 0.2})["y"]
    assert mixed.b2 > 0.01
