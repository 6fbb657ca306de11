"""``torch.compile`` around a compiled graph and a compiled cell: whole sgprop training steps
(forward, mixed backward, adaptive λ, generator update) match the eager module.

The backend is ``aot_eager``: Dynamo captures the forward and AOTAutograd builds the joint
forward/backward graph (where the mixing operations, their records and the generators'
separate autograd graph have to survive), without inductor's C++ code generation, which
takes minutes on a small shared machine. The default backend (inductor) was checked by hand
on the same cases: gradients within 1e-6 of eager.
"""

from __future__ import annotations

import pytest
import torch
from test_recurrent import make_cell, random_generators

import sggraph
from sggraph.engine.recurrent import compile_cell

BACKEND = "aot_eager"


def _graph() -> sggraph.Graph:
    g = sggraph.Graph("compiled")
    g.add_node("z", 3)
    g.add_node("h", 6, ["z"], fn="tanh")
    g.add_node("y", 2, ["h"], fn="linear")
    g.add_array("px", count=6, dim=1)
    g.add_array("h1", count=4, dim=2, parents="px", fan_in=3, seed=0, slots=3)
    g.add_node("o", 2, ["h1"], fn="linear")
    return g


def _graph_net(grouping: str):
    torch.manual_seed(0)
    net = sggraph.compile(_graph(), grouping=grouping)
    net.set_lambda(0.7)
    if grouping == "edge":
        net.set_lambda(0.4, ("z", "h"))
    with torch.no_grad():
        for p in net.generator_parameters():
            p.normal_(generator=torch.Generator().manual_seed(p.numel()))
    return net


def _cell_net():
    torch.manual_seed(0)
    net = compile_cell(make_cell(), grouping="child")
    net.set_lambda(0.6, node="h")
    random_generators(net, torch.Generator().manual_seed(1))
    return net


def _training_step(net, module, inputs, loss_of):
    """One sgprop step through ``module`` (the net itself or torch.compile of it): its gradients,
    the λ it adapted and the generator loss it stepped on."""
    net.zero_grad(set_to_none=True)
    loss_of(module(inputs)).backward()
    if net.grouping == "child":  # adaptive λ is defined for the per-child grouping
        net.adapt_lambda(momentum=0.9)
    grads = [p.grad.clone() for p in net.model_parameters() if p.grad is not None]
    generator_loss = net.update_generators(torch.optim.SGD(net.generator_parameters(), lr=0.1))
    return grads, {k: v.clone() for k, v in net.self_lambdas().items()}, generator_loss


def _assert_steps_match(eager, twin, inputs, loss_of, steps=2):
    compiled = torch.compile(twin, backend=BACKEND)  # compiled before any eager call
    for _ in range(steps):
        g_c, lam_c, loss_c = _training_step(twin, compiled, inputs, loss_of)
        g_e, lam_e, loss_e = _training_step(eager, eager, inputs, loss_of)
        assert len(g_c) == len(g_e) > 0
        for a, b in zip(g_e, g_c):
            torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
        for name in lam_e:
            torch.testing.assert_close(lam_c[name], lam_e[name], rtol=0, atol=1e-5)
        assert loss_c == pytest.approx(loss_e, abs=1e-5)
    for a, b in zip(eager.generator_parameters(), twin.generator_parameters()):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5)


@pytest.mark.parametrize("grouping", ["child", "edge"])
def test_torch_compile_of_a_compiled_graph_trains_like_eager(grouping):
    gen = torch.Generator().manual_seed(3)
    inputs = {"z": torch.randn(5, 3, generator=gen), "px": torch.randn(5, 6, 1, generator=gen)}
    _assert_steps_match(_graph_net(grouping), _graph_net(grouping), inputs,
                        lambda out: out["y"].pow(2).sum() + out["o"].sum())


def test_torch_compile_of_a_compiled_cell_trains_like_eager():
    gen = torch.Generator().manual_seed(4)
    obs, feedback = torch.randn(4, 3, 3, generator=gen), torch.randn(4, 3, 3, generator=gen)
    _assert_steps_match(_cell_net(), _cell_net(), {"obs": obs}, lambda out: (out["act"] * feedback).sum())
