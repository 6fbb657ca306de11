"""λ's one owner: the table's checked writes, one λ API for graphs and cells, the momentum rule pinned,
and the step's trace consumed once (adapt_lambda / update_generators twice, empty batches)."""

from __future__ import annotations

import pytest
import torch
from reference import direct_lambda
from test_parent_lambda import _backward as _parent_backward
from test_parent_lambda import _net as _parent_net
from test_parent_lambda import _reference_lambda

import sggraph
from sggraph import LambdaError
from sggraph.core.unroll import Cell
from sggraph.engine import compile_cell
from sggraph.engine.mixing import Record


def _graph() -> sggraph.Graph:
    g = sggraph.Graph("t")
    g.add_node("z", 3)
    g.add_node("h", 4, ["z"], fn="tanh")
    g.add_node("y", 2, ["h"], fn="linear")
    g.add_array("x", 6, 1)
    g.add_array("a", 4, 2, parents="x", fan_in=2, slots=2)
    g.add_node("o", 1, ["a"], fn="linear")
    return g


def _cell() -> Cell:
    cell = Cell("c")
    cell.add_input("obs", 3)
    cell.set_state("h", count=5, dim=2, fan_in=2, slots=2, input="obs", input_neurons=2, seed=1)
    cell.add_node("act", 2, ["h"], fn="linear")
    return cell


def _random_generators(net, seed: int = 3) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.generator_parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.4)


def _graph_step(net, batch: int, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    out = net({"z": torch.randn(batch, 3, generator=gen, dtype=torch.float64),
               "x": torch.randn(batch, 6, generator=gen, dtype=torch.float64)})
    (out["y"] * torch.randn(batch, 2, generator=gen, dtype=torch.float64)).sum().backward(retain_graph=True)
    if batch:
        (out["o"] * torch.randn(batch, 1, generator=gen, dtype=torch.float64)).sum().backward()


def _cell_step(net, batch: int, steps: int = 4, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    out = net({"obs": torch.randn(steps, batch, 3, generator=gen, dtype=torch.float64)})
    (out["act"] * torch.randn(steps, batch, 2, generator=gen, dtype=torch.float64)).sum().backward()


def _versions(net) -> list[int]:
    return [t._version for b in net.blocks.values() for t in (b.lam, b.lam_self)]


def _tables(net) -> list[torch.Tensor]:
    return [t.clone() for b in net.blocks.values() for t in (b.lam, b.lam_self)]


# ------------------------------------------------------------------ the table: checked, then written
@pytest.mark.parametrize("grouping", ["edge", "parent", "child"])
@pytest.mark.parametrize("call", [
    lambda net: net.set_lambda(torch.full((4, 9), 0.5), node="a"),          # a shape that fits no table
    lambda net: net.set_lambda(torch.full((4,), 0.5)),                       # fits some tables, not all
    lambda net: net.set_lambda(1.5, node="h"),                               # out of [0, 1]
    lambda net: net.set_lambda(0.5, edge=("y", "h")),                        # no such edge
    lambda net: net.set_self_lambda(torch.ones(9), node="a"),
    lambda net: net.set_lambda(torch.tensor([0.2, float("nan"), 0.1, 0.3]), node="a"),
])
def test_a_bad_write_leaves_every_table_untouched_not_restored(grouping, call):
    """Validated before written: no table is written at all (version counters unchanged), so nothing had
    to be copied back."""
    net = sggraph.compile(_graph(), grouping=grouping)
    net.set_lambda(0.3)
    before, versions = _tables(net), _versions(net)
    with pytest.raises(LambdaError):
        call(net)
    assert _versions(net) == versions
    assert all(torch.equal(a, b) for a, b in zip(before, _tables(net)))


def test_a_bad_write_on_a_cell_changes_nothing():
    net = compile_cell(_cell())
    versions = _versions(net)
    for bad in (torch.ones(7, 7), "0.5", -0.1):
        with pytest.raises(LambdaError):
            net.set_lambda(bad, node="h")
    assert _versions(net) == versions


def test_the_path_is_cached_until_a_table_changes():
    net = sggraph.compile(_graph(), grouping="edge")
    assert net.lambdas.mode("h") == "child"
    net.set_lambda(0.5, edge=("z", "h"))
    assert net.lambdas.mode("h") == "general"  # λ^self stays 1
    net.set_self_lambda(0.5, node="h")
    assert net.lambdas.mode("h") == "child"
    with torch.no_grad():  # a direct write (load_state_dict does the same) is seen through the version counter
        net.blocks["h"].lam_self.fill_(1.0)
    assert net.lambdas.mode("h") == "general"


# ------------------------------------------------------------------ one API for graphs and cells
def test_compile_cell_with_its_defaults_adapts_lambda():
    net = compile_cell(_cell()).double()
    assert net.grouping == "child" and sggraph.compile(_cell()).grouping == "child"
    net.set_lambda(0.6)
    _random_generators(net)
    _cell_step(net, batch=6)
    got = net.adapt_lambda(momentum=0.5)
    assert set(got) == {"h"} and got["h"].shape == (5,)
    assert not torch.equal(net.get_self_lambda("h"), torch.full((5,), 0.6, dtype=torch.float64))
    assert isinstance(net.update_generators(torch.optim.SGD(net.generator_parameters(), lr=0.1)), float)


def test_the_same_lambda_api_on_a_graph_and_a_cell_gives_the_same_shapes_and_types():
    graph = sggraph.compile(_graph(), grouping="child").double()
    cell = compile_cell(_cell()).double()
    for net in (graph, cell):
        net.set_lambda(0.5)
        _random_generators(net)
    _graph_step(graph, 8)
    _cell_step(cell, 8)
    # one edge into a node: a float; a node's λ^self: a float; an array's or a state's: a [N] tensor
    assert type(graph.get_lambda(("z", "h"))) is float and type(cell.get_lambda(("h", "act"))) is float
    assert type(graph.get_self_lambda("h")) is float and type(cell.get_self_lambda("act")) is float
    for value, n in ((graph.get_self_lambda("a"), 4), (cell.get_self_lambda("h"), 5)):
        assert isinstance(value, torch.Tensor) and value.shape == (n,)
    assert type(graph.get_self_lambda("a[1]")) is float and type(cell.get_self_lambda("h[1]")) is float
    for net, array, width in ((graph, "a", 2), (cell, "h", 3)):  # array tables [N, F (+1)]
        edges, selves = net.edge_lambdas(), net.self_lambdas()
        assert all(isinstance(v, torch.Tensor) for v in list(edges.values()) + list(selves.values()))
        assert edges[array].dim() == 2 and edges[array].shape[1] == width and selves[array].dim() == 1
        node = "y" if net is graph else "act"
        assert edges[node].shape == (1,) and selves[node].shape == ()
        assert set(net.paths().values()) <= {"plain", "child", "general"}
        assert all(isinstance(r, Record) for r in net.records().values())
        assert net.has_feedback() is True
        loss = net.generator_loss()
        assert isinstance(loss, torch.Tensor) and loss.shape == ()
        got = net.adapt_lambda(momentum=0.5)
        assert got and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in got.items())
        assert got[array].shape == (edges[array].shape[0],)
        assert isinstance(net.update_generators(torch.optim.SGD(net.generator_parameters(), lr=0.1)), float)


# ------------------------------------------------------------------ the momentum rule, pinned (#32.16)
def _node_reference_lambda(net, name: str) -> torch.Tensor:
    """eq. 18 for a plain node from its per-sample parameter gradients, one sample at a time by autograd."""
    block, entry = net.blocks[name], net.trace.nodes[name]
    (z,) = entry.inputs
    params = list(block.function.parameters())
    rows = [[], []]
    for b in range(z.shape[0]):
        out = block.function(z[b:b + 1])[0]
        for k, cot in enumerate((entry.received[b], entry.prediction.detach()[b])):
            grads = torch.autograd.grad(out, params, cot, retain_graph=True)
            rows[k].append(torch.cat([g.flatten() for g in grads]))
    return direct_lambda(torch.stack(rows[0]), torch.stack(rows[1]), normalize=False)


def test_child_momentum_is_mu_lambda_plus_one_minus_mu_lambda_batch():
    """λ ← μλ + (1 − μ)λ_batch at μ = 0.7 against eq. 18 computed here (μ² or a swapped μ would miss)."""
    torch.manual_seed(0)
    net = sggraph.compile(_graph(), grouping="child").double()
    net.set_lambda(0.5)
    net.set_lambda(0.8, node="y")
    _random_generators(net)
    _graph_step(net, 9)
    want_batch = {n: _node_reference_lambda(net, n) for n in ("h", "y")}
    got = net.adapt_lambda(momentum=0.7, normalize=False)
    for name, old in (("h", 0.5), ("y", 0.8)):
        batch = float(want_batch[name])
        assert 0.0 < batch < 1.0 and abs(batch - old) > 0.05  # a case that tells the rules apart
        torch.testing.assert_close(got[name], want_batch[name], rtol=1e-7, atol=1e-9)
        want = 0.7 * old + 0.3 * batch
        assert net.get_self_lambda(name) == pytest.approx(want, rel=1e-9)
        assert net.get_lambda(("z" if name == "h" else "h", name)) == pytest.approx(want, rel=1e-9)


def test_parent_momentum_is_mu_lambda_plus_one_minus_mu_lambda_batch():
    net = _parent_net("parent")
    inputs = _parent_backward(net, 7)
    before = {n: net.lambdas.out_edge_mean(n).clone() for n in ("a", "b", "c", "h1")}
    want_batch = {n: _reference_lambda(net, inputs, n, False) for n in before}
    net.adapt_lambda(momentum=0.7, normalize=False)
    for name, old in before.items():
        batch = want_batch[name]
        assert bool(((batch - old).abs() > 1e-3).all())
        want = (0.7 * old + 0.3 * batch).clamp(0, 1)
        torch.testing.assert_close(net.lambdas.out_edge_mean(name), want, rtol=1e-9, atol=1e-12)
    assert net.get_lambda(("a", "b")) == pytest.approx(float(0.7 * before["a"] + 0.3 * want_batch["a"]), rel=1e-9)


# ------------------------------------------------------------------ the trace is consumed once (#32.3, #32.7)
@pytest.mark.parametrize("grouping", ["child", "parent", "edge"])
def test_adapt_lambda_twice_after_one_backward_is_refused_and_changes_nothing(grouping):
    net = sggraph.compile(_graph(), grouping=grouping).double()
    net.set_lambda(0.5)
    _random_generators(net)
    _graph_step(net, 8)
    net.adapt_lambda(momentum=0.5)
    after_first = _tables(net)
    with pytest.raises(LambdaError, match="already ran on this backward") as info:
        net.adapt_lambda(momentum=0.5)
    assert "new forward and backward" in info.value.fix
    assert all(torch.equal(a, b) for a, b in zip(after_first, _tables(net)))
    _graph_step(net, 8, seed=2)  # a new step adapts again
    net.adapt_lambda(momentum=0.5)


def test_adapt_lambda_twice_on_a_cell_is_refused():
    net = compile_cell(_cell()).double()
    net.set_lambda(0.5)
    _random_generators(net)
    _cell_step(net, 6)
    net.adapt_lambda()
    with pytest.raises(LambdaError, match="already ran"):
        net.adapt_lambda()


@pytest.mark.parametrize("grouping", ["child", "parent"])
def test_an_empty_batch_keeps_lambda_and_the_generators(grouping):
    net = sggraph.compile(_graph(), grouping=grouping).double()
    net.set_lambda(0.5)
    _random_generators(net)
    before, gens = _tables(net), [p.clone() for p in net.generator_parameters()]
    _graph_step(net, 0)
    got = net.adapt_lambda(momentum=0.5)
    assert all(bool(torch.isnan(v).all()) for v in got.values())  # no estimate: λ kept
    assert all(torch.equal(a, b) for a, b in zip(before, _tables(net)))
    net.update_generators(torch.optim.SGD(net.generator_parameters(), lr=0.1))
    assert all(torch.equal(a, b) for a, b in zip(gens, net.generator_parameters()))


def test_an_empty_batch_on_a_cell_keeps_theta():
    net = compile_cell(_cell()).double()
    net.set_lambda(0.5)
    _random_generators(net)
    _cell_step(net, 0)
    net.adapt_lambda()
    assert torch.equal(net.get_self_lambda("h"), torch.full((5,), 0.5, dtype=torch.float64))
    gens = [p.clone() for p in net.generator_parameters()]
    net.update_generators(torch.optim.SGD(net.generator_parameters(), lr=0.1))
    assert all(torch.equal(a, b) for a, b in zip(gens, net.generator_parameters()))


@pytest.mark.parametrize("make", ["graph", "cell"])
def test_update_generators_twice_after_one_backward_is_an_sggraph_error(make):
    net = sggraph.compile(_graph(), grouping="child").double() if make == "graph" else compile_cell(_cell()).double()
    net.set_lambda(0.5)
    _random_generators(net)
    (_graph_step if make == "graph" else _cell_step)(net, 6)
    opt = torch.optim.SGD(net.generator_parameters(), lr=0.1)
    net.update_generators(opt)
    with pytest.raises(LambdaError, match="already stepped") as info:
        net.update_generators(opt)
    assert "new forward and backward" in info.value.fix


def test_refreshed_predictions_may_train_the_generators_again():
    """The generators-first order: record_feedback, update_generators, refresh_predictions, backward."""
    net = sggraph.compile(_graph(), grouping="child").double()
    net.set_lambda(0.5)
    _random_generators(net)
    out = net({"z": torch.randn(5, 3, dtype=torch.float64), "x": torch.randn(5, 6, dtype=torch.float64)})
    loss = out["y"].sum() + out["o"].sum()
    net.record_feedback(loss)
    opt = torch.optim.SGD(net.generator_parameters(), lr=0.1)
    net.update_generators(opt)
    net.refresh_predictions()
    loss.backward()
    net.adapt_lambda()
    net.update_generators(opt)


def test_adapt_lambda_keeps_the_lambda_of_a_node_without_parameters():
    """Eq. 18 compares per-sample parameter gradients; a relay (fn: identity) has none, so its λ is kept while
    its neighbours adapt (this crashed with 'torch.cat(): expected a non-empty list')."""
    import sggraph

    g = sggraph.Graph("relay")
    g.add_node("z", 3)
    g.add_node("h", 4, ["z"], fn="tanh")
    g.add_node("r", 4, ["h"], fn="identity")
    g.add_node("y", 1, ["r"], fn="linear")
    torch.manual_seed(0)
    net = sggraph.compile(g, grouping="child")
    for block in net.blocks.values():
        for p in block.generator.parameters():
            torch.nn.init.normal_(p)
    net.set_lambda(0.5)
    net({"z": torch.randn(16, 3)})["y"].pow(2).sum().backward()
    net.adapt_lambda(momentum=0.7)
    assert net.get_self_lambda("r") == 0.5
    assert net.get_self_lambda("h") != 0.5
