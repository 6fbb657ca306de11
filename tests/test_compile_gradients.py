"""The compiled backward against an independent explicit-Jacobian implementation of eq. 5–6."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from reference import reference_gradients
from torch import nn

import sggraph
from sggraph.engine.generators import SlotGenerator
from sggraph.engine.neuron import (
    SlotNeuronArray,
    gather_by_table,
    is_batch_last,
    slot_neuron_reference,
    slot_routing,
    tanh_,
)


class NoisyTanh(nn.Module):
    """A stochastic node: ``tanh(W z) * (1 + ξ)`` with ξ drawn once from a seeded generator."""

    def __init__(self, in_dim: int, dim: int, batch: int, seed: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, dim)
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("noise", 0.3 * torch.randn(batch, dim, generator=gen))

    def forward(self, z):
        return torch.tanh(self.linear(z)) * (1 + self.noise[: z.shape[0]])


def random_graph(seed: int, batch: int):
    """A random layered DAG: plain nodes of mixed dims (tanh/linear, one stochastic node),
    and a sparse two-layer neuron array, plus a plain node reading one neuron."""
    rng = random.Random(seed)
    g = sggraph.Graph(f"random-{seed}")
    functions = {}
    layers = [[]]
    for s in range(rng.randint(1, 2)):
        name = f"s{s}"
        g.add_node(name, rng.randint(1, 3))
        layers[0].append(name)
    dims = {n: g.node(n).dim for n in layers[0]}
    stochastic_done = False
    for depth in range(1, rng.randint(3, 4)):
        layer = []
        for k in range(rng.randint(1, 3)):
            name = f"n{depth}_{k}"
            parents = rng.sample(layers[-1], rng.randint(1, len(layers[-1])))
            dim = rng.randint(1, 3)
            in_dim = sum(dims[p] for p in parents)
            if not stochastic_done and depth >= 2:
                g.add_node(name, dim, parents, stochastic=True)
                functions[name] = NoisyTanh(in_dim, dim, batch, seed)
                stochastic_done = True
            else:
                g.add_node(name, dim, parents, fn=rng.choice(["tanh", "linear"]))
            dims[name] = dim
            layer.append(name)
        layers.append(layer)
    g.add_array("px", count=6, dim=1)
    g.add_array("h1", count=4, dim=2, parents="px", fan_in=3, seed=seed, slots=3)
    g.add_array("h2", count=4, dim=2, parents="h1", fan_in=2, seed=seed + 1, residual=True, slots=2)
    g.add_node("readout", 2, ["h2[1]"], fn="tanh")
    g.add_node("pool", 3, ["h2"], fn="linear")  # reads the whole array, flattened
    return g, functions


def _randomise(net, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.generator_parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        for block in net.blocks.values():
            block.lam.copy_(torch.rand(block.lam.shape, generator=gen, dtype=block.lam.dtype))
            block.lam_self.copy_(torch.rand(block.lam_self.shape, generator=gen, dtype=block.lam.dtype))


def _inputs(net, batch, seed):
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, src in net.sources.items():
        shape = (batch, src.dim) if src.count is None else (batch, src.count, src.dim)
        out[name] = torch.randn(shape, generator=gen, dtype=torch.float64)
    return out


def _feedback(net, outputs, seed):
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in outputs.items()}


def _grads(net, inputs, feedback):
    for p in net.model_parameters():
        p.grad = None
    out = net(inputs)
    loss = sum((out[k] * feedback[k]).sum() for k in out)
    loss.backward()
    return {id(p): p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in net.model_parameters()}


def _build(seed, batch=5):
    torch.manual_seed(seed)
    g, functions = random_graph(seed, batch)
    net = sggraph.compile(g, functions=functions).double()
    return net


@pytest.mark.parametrize("seed", range(6))
def test_random_lambda_matches_explicit_jacobians(seed):
    batch = 5
    net = _build(seed, batch)
    _randomise(net, 100 + seed)
    inputs = _inputs(net, batch, seed)
    out = net(inputs)
    fb = _feedback(net, out, seed)
    got = _grads(net, inputs, fb)
    want = reference_gradients(net, inputs, fb)
    assert "general" in net.paths().values()
    for p in net.model_parameters():
        torch.testing.assert_close(got[id(p)], want[id(p)], rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_child_grouping_matches_explicit_jacobians(seed):
    """Tied weights λ^self_v = λ_{·→v} = θ_v take the one-mixer path; same rule."""
    batch = 4
    torch.manual_seed(seed)
    g, functions = random_graph(seed, batch)
    net = sggraph.compile(g, functions=functions, grouping="child").double()
    gen = torch.Generator().manual_seed(seed)
    for name, block in net.blocks.items():
        theta = torch.rand(block.lam_self.shape, generator=gen, dtype=torch.float64)
        net.set_lambda(theta if theta.dim() else float(theta), node=name)
        with torch.no_grad():
            for p in block.generator.parameters():
                p.copy_(0.5 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    inputs = _inputs(net, batch, seed)
    out = net(inputs)
    fb = _feedback(net, out, seed)
    got = _grads(net, inputs, fb)
    assert set(net.paths().values()) == {"child"}
    want = reference_gradients(net, inputs, fb)
    for p in net.model_parameters():
        torch.testing.assert_close(got[id(p)], want[id(p)], rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("grouping", ["edge", "child"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lambda_one_is_autograd_bit_for_bit(grouping, dtype):
    batch = 6
    net = _build(3, batch).to(dtype)
    net.grouping = grouping
    with torch.no_grad():
        for p in net.generator_parameters():
            p.normal_()
    inputs = {k: v.to(dtype) for k, v in _inputs(net, batch, 3).items()}
    net.synthetic = False
    out = net(inputs)
    fb = _feedback(net, out, 1)
    plain = _grads(net, inputs, fb)
    net.synthetic = True
    mixed = _grads(net, inputs, fb)
    assert set(net.paths().values()) == {"child"}  # the mixer ran, at λ = 1
    for p in net.model_parameters():
        assert torch.equal(plain[id(p)], mixed[id(p)])
    # the general (per-column) path at λ = 1 is bit-exact too
    net.set_lambda(1.0)
    for block in net.blocks.values():
        block.lam_self.fill_(1.0)
    first = next(iter(net.blocks.values()))
    first.lam_self.fill_(1.0)
    with torch.no_grad():
        first.lam[...] = 1.0
    net.lambdas.mode = lambda name: "general"  # force the general path with weights that are all 1
    general = _grads(net, inputs, fb)
    assert set(net.paths().values()) == {"general"}
    for p in net.model_parameters():
        assert torch.equal(plain[id(p)], general[id(p)])


def test_lambda_zero_is_fully_synthetic():
    """With every λ = 0 and λ^self = 0, a non-terminal node's gradient ignores the terminal feedback."""
    batch = 5
    net = _build(1, batch)
    _randomise(net, 7)
    net.set_lambda(0.0)
    net.set_self_lambda(0.0)
    inputs = _inputs(net, batch, 2)
    out = net(inputs)
    fb1, fb2 = _feedback(net, out, 3), _feedback(net, out, 4)
    g1, g2 = _grads(net, inputs, fb1), _grads(net, inputs, fb2)
    want = reference_gradients(net, inputs, fb1)
    for p in net.model_parameters():
        torch.testing.assert_close(g1[id(p)], want[id(p)], rtol=1e-5, atol=1e-9)
        torch.testing.assert_close(g1[id(p)], g2[id(p)])  # feedback never reaches any parameter
    net.set_lambda(1.0)
    net.set_self_lambda(1.0)
    g3, g4 = _grads(net, inputs, fb1), _grads(net, inputs, fb2)
    assert any(not torch.allclose(g3[id(p)], g4[id(p)]) for p in net.model_parameters())


def test_neuron_array_equals_per_neuron_loop():
    torch.manual_seed(0)
    arr = SlotNeuronArray(count=5, in_dim=6, dim=3, slots=4, residual=True).double()
    u = torch.randn(5, 7, 6, dtype=torch.float64, requires_grad=True)
    r = torch.randn(5, 7, 3, dtype=torch.float64, requires_grad=True)
    h, _ = arr(u, r)
    m = arr.slots
    loop = torch.stack([slot_neuron_reference(u[i], arr.proj[i, :m], arr.proj[i, m:], arr.bias[i], r[i])
                        for i in range(5)])
    torch.testing.assert_close(h, loop, rtol=1e-12, atol=1e-12)
    w = torch.randn_like(h)
    g_vec = torch.autograd.grad((h * w).sum(), [u, r, arr.proj, arr.bias])
    g_loop = torch.autograd.grad((loop * w).sum(), [u, r, arr.proj, arr.bias])
    for a, b in zip(g_vec, g_loop):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def _routing_by_autograd(out, bias, scale, slots):
    """Eq. 140–142 with ATen's softmax, tanh and a matmul: what SlotRouting's backward replaces."""
    n, b, _ = out.shape
    alpha = torch.softmax(out[..., :slots] * scale, dim=-1)
    y = torch.tanh(out[..., slots:] + bias.unsqueeze(1)).view(n, b, slots, -1)
    return torch.matmul(alpha.unsqueeze(-2), y).squeeze(-2), alpha, y


def _batch_last(t: torch.Tensor) -> torch.Tensor:
    """The same values stored batch-last: a transposed view of ``[N, ·, B]`` memory."""
    return t.movedim(1, -1).contiguous().movedim(-1, 1)


@pytest.mark.parametrize("batch_last", [False, True])
@pytest.mark.parametrize("per_neuron_scale", [False, True])
def test_slot_routing_backward_equals_autograd(per_neuron_scale, batch_last):
    torch.manual_seed(1)
    n, b, m, q = 4, 6, 3, 5
    scale = torch.rand(n, 1, 1, dtype=torch.float64) + 0.2 if per_neuron_scale else 0.4
    out = 2 * torch.randn(n, b, m + m * q, dtype=torch.float64)
    out = (_batch_last(out) if batch_last else out).requires_grad_()
    assert is_batch_last(out) == batch_last
    bias = torch.randn(n, m * q, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda o, c: slot_routing(o, c, scale, m)[0], (out, bias))
    got, want = slot_routing(out, bias, scale, m), _routing_by_autograd(out, bias, scale, m)
    assert all(is_batch_last(t) == batch_last for t in got)  # the outputs keep the input's layout
    for a, w in zip(got, want):
        torch.testing.assert_close(a, w, rtol=1e-12, atol=1e-12)
    g = torch.randn(n, b, q, dtype=torch.float64)
    for a, w in zip(torch.autograd.grad(got[0], (out, bias), g), torch.autograd.grad(want[0], (out, bias), g)):
        torch.testing.assert_close(a, w, rtol=1e-12, atol=1e-12)
    assert not got[1].requires_grad and not got[2].requires_grad  # α and y are forward quantities only


def test_slot_routing_float32_agrees_with_autograd_and_saturates_safely():
    torch.manual_seed(2)
    out = (30 * torch.randn(50, 64, 5 + 50)).requires_grad_()  # large logits: the softmax must not overflow
    bias = torch.randn(50, 50, requires_grad=True)
    got, want = slot_routing(out, bias, 50 ** -0.5, 5), _routing_by_autograd(out, bias, 50 ** -0.5, 5)
    assert bool(torch.isfinite(got[0]).all())
    torch.testing.assert_close(got[0], want[0], rtol=1e-6, atol=1e-6)
    g = torch.randn_like(got[0])
    for a, w in zip(torch.autograd.grad(got[0], (out, bias), g), torch.autograd.grad(want[0], (out, bias), g)):
        torch.testing.assert_close(a, w, rtol=1e-5, atol=1e-5)


def test_batch_last_gather_and_slot_generator_equal_the_plain_layout():
    torch.manual_seed(3)
    count, parents, fan_in, q, b, m = 6, 9, 3, 4, 7, 2
    prev = torch.randn(parents, b, q)
    table = torch.randint(0, parents, (count * fan_in,))
    plain = gather_by_table(prev, table, count, fan_in)
    strided = gather_by_table(_batch_last(prev), table, count, fan_in)
    assert plain.is_contiguous() and is_batch_last(strided)
    assert torch.equal(plain, strided)
    gen = SlotGenerator(count, fan_in * q, q, m, init_std=0.3)
    alpha = torch.softmax(torch.randn(count, b, m), dim=-1)
    want = gen(plain, {"alpha": alpha})
    got = gen(strided, {"alpha": _batch_last(alpha)})
    assert is_batch_last(got) and not is_batch_last(want)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    g = torch.randn_like(want)
    for a, w in zip(torch.autograd.grad(got, list(gen.parameters()), g),
                    torch.autograd.grad(want, list(gen.parameters()), g)):  # the batch-last mix's own backward
        torch.testing.assert_close(a, w, rtol=1e-5, atol=1e-5)
    arr = SlotNeuronArray(count, fan_in * q, q, m)
    h, aux = arr(strided)  # an array's output and forward quantities are batch-last
    assert is_batch_last(h) and is_batch_last(aux["alpha"]) and is_batch_last(aux["y"])
    torch.testing.assert_close(h, arr(plain)[0], rtol=1e-6, atol=1e-6)


def test_generator_loss_targets_received_feedback():
    net = _build(2, 4)
    _randomise(net, 5)
    inputs = _inputs(net, 4, 0)
    out = net(inputs)
    fb = _feedback(net, out, 0)
    sum((out[k] * fb[k]).sum() for k in out).backward()
    total = 0.0
    for name in net.blocks:
        entry = net.trace.nodes[name]
        assert entry.received is not None
        total += float(torch.mean((entry.prediction.detach() - entry.received) ** 2))
    assert net.generator_loss().item() == pytest.approx(total)
    term = [n for n in net.terminal_blocks if n in fb][0]
    torch.testing.assert_close(net.received(term), fb[term])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fast_tanh_is_within_two_ulp_and_keeps_special_values(dtype):
    x = torch.cat([torch.linspace(-12, 12, 200001, dtype=dtype), torch.randn(100000, dtype=dtype) * 1e-4,
                   torch.tensor([0.0, -0.0, 1e-30, -1e-30, float("inf"), -float("inf")], dtype=dtype)])
    got = tanh_(x.clone())
    exact = torch.tanh(x.to(torch.float64))  # float64: ATen's own (0.5 ulp) as the reference
    ulp = torch.from_numpy(np.spacing(np.abs(exact.to(dtype).numpy()))).to(torch.float64)
    assert float(((got.to(torch.float64) - exact).abs() / ulp).max()) <= 2.0
    assert torch.equal(torch.signbit(got[x == 0]), torch.signbit(x[x == 0]))  # tanh(−0) = −0
    assert bool(torch.isnan(tanh_(torch.tensor([float("nan")], dtype=dtype))).all())


def test_fast_tanh_falls_back_inside_torch_func_and_for_strided_tensors():
    x = torch.randn(4, 6)
    per_row = torch.func.vmap(lambda r: tanh_(r.clone()))(x)  # functorch tensors have no storage for NumPy
    torch.testing.assert_close(per_row, torch.tanh(x))
    view = x.t()  # not contiguous: ATen's in-place tanh
    want = torch.tanh(view)
    assert torch.equal(tanh_(view), want)
