"""Adaptive λ per parent node (§4.2, eq. 16–18) for the ``parent`` and ``edge`` groupings.

The reference recomputes everything one sample at a time with plain autograd: the parts of a
parent's feedback (children's received feedback and predictions pulled back through each
child's function), the parent's per-sample parameter gradients under each part, and eq. 18
written out term by term.
"""

from __future__ import annotations

import pytest
import torch
from lambda_regression import train_on_linear_feedback
from reference import direct_lambda

import sggraph
from sggraph import LambdaError
from sggraph.engine.blocks import ArrayBlock
from sggraph.engine.lam import feedback_parts


def _graph() -> sggraph.Graph:
    g = sggraph.Graph("fan")
    g.add_node("z", 3)
    g.add_node("a", 4, ["z"], fn="tanh")
    g.add_node("b", 3, ["a"], fn="tanh")
    g.add_node("c", 2, ["a"], fn="linear")
    g.add_node("y", 2, ["b", "c"], fn="linear")
    g.add_array("x", 10, 1)
    g.add_array("h1", 6, 3, parents="x", fan_in=4, slots=3)
    g.add_array("h2", 6, 3, parents="h1", fan_in=2, residual=True, slots=2, seed=3)
    g.add_node("o", 2, ["h2"], fn="tanh")
    g.add_node("o1", 3, ["h2[1]", "h2[4]"], fn="linear")
    return g


def _net(grouping: str, seed: int = 0):
    torch.manual_seed(seed)
    net = sggraph.compile(_graph(), grouping=grouping).double()
    for p in net.generator_parameters():
        torch.nn.init.normal_(p, std=0.3)
    if grouping == "parent":
        net.set_lambda(0.7, node="a")
        net.set_lambda(0.4, node="b")
        net.set_lambda(0.9, node="c")
        net.set_lambda(torch.linspace(0.1, 0.9, 6, dtype=torch.float64), node="h1")
        net.set_lambda(torch.linspace(0.8, 0.3, 6, dtype=torch.float64), node="h2")
    else:  # free weights: a parent's out-edges differ
        net.set_lambda(0.2, ("a", "b"))
        net.set_lambda(0.8, ("a", "c"))
        net.set_lambda(0.6, ("b", "y"))
        net.set_lambda(0.3, ("c", "y"))
        gen = torch.Generator().manual_seed(7)
        net.set_lambda(torch.rand(6, 3, generator=gen, dtype=torch.float64), ("h1", "h2"))  # + residual
        net.set_lambda(0.5, ("h2", "o"))
        net.set_lambda(0.25, ("h2[1]", "o1"))
    return net


def _batch(batch: int, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    inputs = {"z": torch.randn(batch, 3, generator=gen, dtype=torch.float64),
              "x": torch.randn(batch, 10, generator=gen, dtype=torch.float64)}
    feedback = {"y": torch.randn(batch, 2, generator=gen, dtype=torch.float64),
                "o": torch.randn(batch, 2, generator=gen, dtype=torch.float64),
                "o1": torch.randn(batch, 3, generator=gen, dtype=torch.float64)}
    return inputs, feedback


def _backward(net, batch: int, seed: int = 1):
    inputs, feedback = _batch(batch, seed)
    out = net(inputs)
    sum((out[k] * feedback[k]).sum() for k in feedback).backward()
    return inputs


# ---------------------------------------------------------------- the reference, one sample at a time
def _values(net, inputs, b: int) -> dict[str, torch.Tensor]:
    """Every node's value on sample ``b`` (arrays ``[N, q]``), from the public activations."""
    with torch.no_grad():
        acts = net.activations(inputs)
    return {k: v[b] for k, v in acts.items()}


def _child_output(net, child: str, values: dict[str, torch.Tensor]) -> torch.Tensor:
    """A child's output on one sample as a function of its parents' values (kept differentiable)."""
    block = net.blocks[child]
    if isinstance(block, ArrayBlock):
        prev = values[block.parent]  # [Np, q]
        u = prev[block.table].reshape(block.count, 1, -1)
        r = prev.unsqueeze(1) if block.residual else None
        return block.function(u, r)[0][:, 0]  # [N, q]
    parts = []
    for ref in block.parents:
        base, _, rest = ref.partition("[")
        v = values[base]
        parts.append(v[int(rest[:-1])] if rest else v.reshape(-1))
    return block.function(torch.cat(parts).unsqueeze(0))[0]


def _reference_parts(net, inputs, parent: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``P_v, S_v`` per sample (the parent's record layout), by autograd through every child."""
    batch = next(iter(inputs.values())).shape[0]
    children = [name for name, block in net.blocks.items()
                if (isinstance(block, ArrayBlock) and block.parent == parent)
                or (not isinstance(block, ArrayBlock) and any(r.partition("[")[0] == parent for r in block.parents))]
    rows_p, rows_s = [], []
    for b in range(batch):
        values = _values(net, inputs, b)
        leaf = values[parent].clone().requires_grad_(True)
        values[parent] = leaf
        total_p, total_s = torch.zeros_like(leaf), torch.zeros_like(leaf)
        for child in children:
            block = net.blocks[child]
            out = _child_output(net, child, values)
            received = net.trace.nodes[child].received
            predicted = net.trace.nodes[child].prediction.detach()
            g = received[:, b] if isinstance(block, ArrayBlock) else received[b]
            h = predicted[:, b] if isinstance(block, ArrayBlock) else predicted[b]
            total_p += torch.autograd.grad(out, leaf, g, retain_graph=True)[0]
            total_s += torch.autograd.grad(out, leaf, h)[0]
        rows_p.append(total_p)
        rows_s.append(total_s)
    dim = 1 if isinstance(net.blocks[parent], ArrayBlock) else 0
    return torch.stack(rows_p, dim=dim), torch.stack(rows_s, dim=dim)


def _reference_lambda(net, inputs, parent: str, normalize: bool) -> torch.Tensor:
    """eq. 18 per parent node: per-sample parameter gradients under ``P_b`` and ``S_b`` by autograd."""
    block = net.blocks[parent]
    part_p, part_s = _reference_parts(net, inputs, parent)
    batch = next(iter(inputs.values())).shape[0]
    params = list(block.function.parameters())
    rows: dict[int, list[list[torch.Tensor]]] = {}
    for b in range(batch):
        values = _values(net, inputs, b)
        if isinstance(block, ArrayBlock):
            prev = values[block.parent]
            u = prev[block.table].reshape(block.count, 1, -1)
            r = prev.unsqueeze(1) if block.residual else None
            out = block.function(u, r)[0][:, 0]
            cots = (part_p[:, b], part_s[:, b])
        else:
            out = _child_output(net, parent, values)
            cots = (part_p[b], part_s[b])
        grads = [torch.autograd.grad(out, params, cot, retain_graph=True) for cot in cots]
        units = block.count if isinstance(block, ArrayBlock) else 1
        for i in range(units):  # an array neuron's parameters are row i of every parameter
            vecs = [torch.cat([gr[i].flatten() if units > 1 else gr.flatten() for gr in gs]) for gs in grads]
            rows.setdefault(i, [[], []])
            rows[i][0].append(vecs[0])
            rows[i][1].append(vecs[1])
    lam = [direct_lambda(torch.stack(p), torch.stack(s), normalize) for p, s in rows.values()]
    return torch.stack(lam) if isinstance(block, ArrayBlock) else lam[0]


# ----------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("grouping", ["parent", "edge"])
def test_feedback_parts_rebuild_the_feedback_each_parent_received(grouping):
    """``g̃_v = Σ_c λ_{v→c} J_vᶜᵀ g̃_c + (1 − λ_{v→c}) J_vᶜᵀ ĥ_c``: with one λ per parent the parts mix to it."""
    net = _net(grouping)
    inputs = _backward(net, 6)
    parts = feedback_parts(net.blocks, net.trace)
    assert set(parts) == {"a", "b", "c", "h1", "h2"}
    for name in parts:
        want_p, want_s = _reference_parts(net, inputs, name)
        torch.testing.assert_close(parts[name][0], want_p, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(parts[name][1], want_s, rtol=1e-10, atol=1e-12)
    if grouping == "parent":
        for name in ("a", "b", "c"):
            lam = net.get_lambda((name, net.graph.children(name)[0]))
            torch.testing.assert_close(net.trace.nodes[name].received,
                                       lam * parts[name][0] + (1 - lam) * parts[name][1], rtol=1e-10, atol=1e-12)
        # every out-edge of an h1 neuron is a table entry of h2; h2's neurons feed o through one shared
        # weight (o reads h2 whole), and neurons 1 and 4 also feed o1 with their own: the others have one λ
        for name, neurons in (("h1", list(range(6))), ("h2", [0, 2, 3, 5])):
            lam = net.lambdas.out_edge_mean(name).view(-1, 1, 1)
            mixed = lam * parts[name][0] + (1 - lam) * parts[name][1]
            torch.testing.assert_close(net.trace.nodes[name].received[neurons], mixed[neurons],
                                       rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("grouping", ["parent", "edge"])
@pytest.mark.parametrize("normalize", [False, True])
def test_lambda_batch_equals_the_per_sample_reference(grouping, normalize):
    net = _net(grouping)
    inputs = _backward(net, 7)
    got = net.adapt_lambda(momentum=0.5, normalize=normalize)
    assert set(got) == {"a", "b", "c", "h1", "h2"}
    for name, lam_batch in got.items():
        want = _reference_lambda(net, inputs, name, normalize)
        torch.testing.assert_close(lam_batch, want, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("grouping", ["parent", "edge"])
def test_update_ties_every_out_edge_of_a_parent_with_momentum(grouping):
    net = _net(grouping)
    _backward(net, 8)
    before = {name: net.lambdas.out_edge_mean(name).clone() for name in ("a", "b", "c", "h1", "h2")}
    got = net.adapt_lambda(momentum=0.25)
    want = {name: (0.25 * before[name] + 0.75 * lam_batch).clamp(0, 1) for name, lam_batch in got.items()}
    assert not any(bool(torch.isnan(w).any()) for w in want.values())
    # one value per parent on all its out-edges
    for name in ("a", "b", "c", "h1"):
        torch.testing.assert_close(net.lambdas.out_edge_mean(name), want[name])
    assert net.get_lambda(("a", "b")) == net.get_lambda(("a", "c"))
    table = net.blocks["h2"].table
    torch.testing.assert_close(net.blocks["h2"].lam[:, :2], want["h1"][table])  # per parent neuron
    torch.testing.assert_close(net.blocks["h2"].lam[:, 2], want["h1"])  # the residual edge h1[i] -> h2[i]
    assert net.get_lambda(("h2[1]", "o1")) == pytest.approx(float(want["h2"][1]))
    assert net.get_lambda(("h2[4]", "o1")) == pytest.approx(float(want["h2"][4]))
    assert net.get_lambda(("h2", "o")) == pytest.approx(float(want["h2"].mean()))  # a whole array read flattened
    assert torch.equal(net.blocks["a"].lam_self, torch.ones((), dtype=torch.float64))  # λ^self untouched


@pytest.mark.parametrize("normalize", [True, False, "feedback"])
def test_closed_form_for_slot_arrays_equals_the_generic_path(normalize):
    from sggraph.engine.lam import ParentRule

    net = _net("parent")
    _backward(net, 9)
    rule = ParentRule()  # the estimates alone: each backward's feedback adapts λ once
    fast = rule.estimate(net.lambdas, net.trace, normalize=normalize, nodes=["h1", "h2"], fast=True)
    generic = rule.estimate(net.lambdas, net.trace, normalize=normalize, nodes=["h1", "h2"], fast=False)
    for name in ("h1", "h2"):
        torch.testing.assert_close(fast[name], generic[name], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("grouping", ["parent", "edge"])
def test_lambda_stays_in_unit_interval_and_batch_of_one_is_a_no_op(grouping):
    net = _net(grouping)
    for seed in range(4):
        _backward(net, 8, seed)
        net.adapt_lambda(momentum=0.0)
        for block in net.blocks.values():
            assert bool(((block.lam >= 0) & (block.lam <= 1)).all())
    before = {k: v.clone() for k, v in net.state_dict().items() if k.endswith((".lam", ".lam_self"))}
    _backward(net, 1)
    result = net.adapt_lambda(momentum=0.5)
    assert all(bool(torch.isnan(v).all()) for v in result.values())
    for k, v in net.state_dict().items():
        if k in before:
            assert torch.equal(before[k], v), k


def _regression_chain(grouping: str, noise: float, generator_bias: float, normalize: bool = False,
                      steps: int = 30) -> float:
    """``z → h → y``: the terminal y gets ``g_b = A h_b + noise·ε``; y's generator predicts ``A h`` (+ a bias).
    h's λ weighs what y sends back to it: the true feedback against y's prediction."""
    torch.manual_seed(0)
    g = sggraph.Graph()
    g.add_node("z", 4)
    g.add_node("h", 3, ["z"], fn="linear")
    g.add_node("y", 3, ["h"], fn="identity")
    net = sggraph.compile(g, grouping=grouping)
    net.set_lambda(0.5, ("h", "y"))
    train_on_linear_feedback(net, "h", noise, generator_bias, steps, normalize)
    return float(net.get_lambda(("h", "y")))


@pytest.mark.parametrize("grouping", ["parent", "edge"])
def test_noisy_feedback_with_exact_generator_moves_lambda_towards_zero(grouping):
    assert _regression_chain(grouping, noise=10.0, generator_bias=0.0) < 0.15


@pytest.mark.parametrize("grouping", ["parent", "edge"])
@pytest.mark.parametrize("normalize", [False, True])
def test_noiseless_feedback_with_biased_generator_moves_lambda_towards_one(grouping, normalize):
    assert _regression_chain(grouping, noise=0.0, generator_bias=1.0, normalize=normalize) > 0.9


def test_errors_name_the_fix():
    net = _net("parent")
    with pytest.raises(LambdaError, match="backward"):
        net.adapt_lambda()
    _backward(net, 4)
    with pytest.raises(LambdaError, match="momentum"):
        net.adapt_lambda(momentum=1.5)
    with pytest.raises(LambdaError, match="source"):
        net.adapt_lambda(nodes=["z"])
