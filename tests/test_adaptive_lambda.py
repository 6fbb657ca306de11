"""Adaptive λ (eq. 18 batch estimate with momentum, eq. 145)."""

from __future__ import annotations

import pytest
import torch
from lambda_regression import train_on_linear_feedback
from reference import direct_lambda

import sggraph
from sggraph import LambdaError
from sggraph.engine.lam import batch_lambda_from_vectors, node_lambda


@pytest.mark.parametrize("normalize", [True, False])
def test_batch_formula_matches_direct_implementation(normalize):
    gen = torch.Generator().manual_seed(0)
    p = torch.randn(20, 3, 7, generator=gen, dtype=torch.float64)
    s = 0.5 * p + torch.randn(20, 3, 7, generator=gen, dtype=torch.float64) + 0.3
    got = batch_lambda_from_vectors(p, s, normalize)
    for unit in range(3):
        want = direct_lambda(p[:, unit], s[:, unit], normalize)
        torch.testing.assert_close(got[unit], want, rtol=1e-10, atol=1e-12)


def _array_net(seed=0):
    torch.manual_seed(seed)
    g = sggraph.Graph()
    g.add_array("x", 12, 1)
    g.add_array("h1", 6, 3, parents="x", fan_in=4, slots=3)
    g.add_array("h2", 6, 3, parents="h1", fan_in=2, residual=True, slots=2, seed=3)
    g.add_node("y", 2, ["h2"], fn="tanh")
    net = sggraph.compile(g, grouping="child").double()
    net.set_lambda(0.7)
    for p in net.generator_parameters():
        torch.nn.init.normal_(p, std=0.3)
    return net


def _node_lambda(net, name, normalize, fast):
    return node_lambda(net.blocks[name], net.trace.nodes[name], normalize, fast)


def _backward(net, batch, seed=1):
    gen = torch.Generator().manual_seed(seed)
    out = net({"x": torch.randn(batch, 12, generator=gen, dtype=torch.float64)})
    (out["y"] * torch.randn(batch, 2, generator=gen, dtype=torch.float64)).sum().backward()


@pytest.mark.parametrize("normalize", [True, False, "feedback"])
def test_fast_slot_path_equals_generic_torch_func_path(normalize):
    net = _array_net()
    _backward(net, 16)
    for name in ("h1", "h2"):
        fast = _node_lambda(net, name, normalize, fast=True)
        generic = _node_lambda(net, name, normalize, fast=False)
        torch.testing.assert_close(fast, generic, rtol=1e-5, atol=1e-8)


def test_lambda_stays_in_unit_interval_and_batch_of_one_is_a_no_op():
    net = _array_net()
    for seed in range(5):
        _backward(net, 8, seed)
        net.adapt_lambda(momentum=0.0)
        for block in net.blocks.values():
            assert bool(((block.lam_self >= 0) & (block.lam_self <= 1)).all())
            assert torch.equal(block.lam, block.lam_self.unsqueeze(-1).expand_as(block.lam)
                               if block.lam.dim() == 2 else block.lam_self.expand_as(block.lam))
    before = {n: b.lam_self.clone() for n, b in net.blocks.items()}
    _backward(net, 1)
    net.adapt_lambda(momentum=0.5)
    for n, b in net.blocks.items():
        assert torch.equal(before[n], b.lam_self)


def _regression_node(noise: float, generator_bias: float, steps: int = 30, normalize: bool = False):
    """A terminal linear node fed g_b = A z_b + noise·ε; its generator is A z (+ a bias)."""
    torch.manual_seed(0)
    g = sggraph.Graph()
    g.add_node("z", 4)
    g.add_node("y", 3, ["z"], fn="linear")
    net = sggraph.compile(g, grouping="child")
    net.set_lambda(0.5)
    train_on_linear_feedback(net, "z", noise, generator_bias, steps, normalize)
    return net.get_self_lambda("y")


def test_noisy_feedback_with_exact_generator_moves_lambda_towards_zero():
    assert _regression_node(noise=10.0, generator_bias=0.0) < 0.15  # from 0.5; the b² = max(·, 0) estimate keeps a small floor


@pytest.mark.parametrize("normalize", [False, True])
def test_noiseless_feedback_with_biased_generator_moves_lambda_towards_one(normalize):
    assert _regression_node(noise=0.0, generator_bias=1.0, normalize=normalize) > 0.9


def test_each_rule_checks_its_grouping_and_momentum():
    from sggraph.engine.lam import ChildRule, ParentRule

    g = sggraph.Graph()
    g.add_node("z", 2)
    g.add_node("y", 1, ["z"], fn="linear")
    with pytest.raises(LambdaError, match="'child' grouping"):
        ChildRule().check(sggraph.compile(g).grouping)
    with pytest.raises(LambdaError, match="'parent' and 'edge'"):
        ParentRule().check(sggraph.compile(g, grouping="child").grouping)
    with pytest.raises(LambdaError, match="momentum"):
        sggraph.compile(g, grouping="child").adapt_lambda(momentum=2.0)
    with pytest.raises(LambdaError, match="backward"):  # every grouping adapts; none without feedback
        sggraph.compile(g).adapt_lambda()


def _authors_feedback_lambda(net, name):
    """The authors' estimator written out per neuron and sample: the feedback on h̄ (for a residual
    neuron ``g ⊙ (1 − tanh² h̄)``) scaled to unit norm, mapped to the neuron's parameter gradient by
    autograd one sample at a time, then eq. 18 on the explicit vectors."""
    block, entry = net.blocks[name], net.trace.nodes[name]
    arr = block.function
    u, r = entry.inputs
    g, hat = entry.received, entry.prediction.detach()
    lam = []
    for i in range(arr.count):
        p_rows, s_rows = [], []
        for b in range(u.shape[1]):
            proj = arr.proj[i].detach().clone().requires_grad_(True)
            bias = arr.bias[i].detach().clone().requires_grad_(True)
            ui = u[i, b]
            alpha = torch.softmax(proj[: arr.slots] @ ui / ui.numel() ** 0.5, -1)
            y = torch.tanh(proj[arr.slots:] @ ui + bias).view(arr.slots, arr.dim)
            hbar = alpha @ y
            gain = 1 - torch.tanh(hbar.detach()) ** 2 if arr.residual else torch.ones_like(hbar)
            rows = []
            for cot in (g[i, b], hat[i, b]):
                d = cot * gain
                d = d / d.norm().clamp_min(1e-12)
                gp, gb = torch.autograd.grad(hbar, (proj, bias), d, retain_graph=True)
                rows.append(torch.cat([gp.flatten(), gb.flatten()]))
            p_rows.append(rows[0])
            s_rows.append(rows[1])
        lam.append(direct_lambda(torch.stack(p_rows), torch.stack(s_rows), normalize=False))
    return torch.stack(lam)


def test_feedback_normalisation_equals_the_authors_estimator_written_out():
    net = _array_net()
    _backward(net, 9)
    for name in ("h1", "h2"):  # h2 is residual: the feedback is taken on h̄ (after 1 − tanh²)
        want = _authors_feedback_lambda(net, name)
        got = _node_lambda(net, name, "feedback", fast=True)
        torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-9)
    # and it is not the per-sample-gradient normalisation
    assert not torch.allclose(_node_lambda(net, "h2", "gradient", fast=True),
                              _node_lambda(net, "h2", "feedback", fast=True))


def test_unknown_normalisation_is_a_lambda_error():
    net = _array_net()
    _backward(net, 4)
    with pytest.raises(LambdaError, match="feedback"):
        net.adapt_lambda(normalize="unit")


@pytest.mark.parametrize("dim", [0, 1, 2, -1])
def test_unit_feedback_normalises_over_the_given_dim(dim):
    """unit_feedback over any dim (sample-last layouts normalise across rows) is the last-dim one moved
    there, with and without a gain; the gained feedback has unit norm."""
    from sggraph.engine.lam import unit_feedback

    gen = torch.Generator().manual_seed(3)
    cot = torch.randn(3, 4, 5, generator=gen, dtype=torch.float64)
    cot.select(dim, 1).zero_()
    gain = torch.rand(3, 4, 5, generator=gen, dtype=torch.float64)
    for g in (None, gain):
        want = unit_feedback(cot.movedim(dim, -1), None if g is None else g.movedim(dim, -1)).movedim(-1, dim)
        torch.testing.assert_close(unit_feedback(cot, g, dim=dim), want, rtol=1e-12, atol=0)
    eff = unit_feedback(cot, gain, dim=dim) * gain
    norms = eff.norm(dim=dim)
    torch.testing.assert_close(norms[norms > 0], torch.ones_like(norms[norms > 0]))
