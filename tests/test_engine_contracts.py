"""Contracts of the compiled nets: records survive evaluation forwards, generator call conventions,
one non-finite check for every mixer, one momentum rule, graphs' equality and hashing."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import sggraph
from sggraph import CompileError, GradientError, LambdaError
from sggraph.core.unroll import Cell


def _graph():
    g = sggraph.Graph("contracts")
    g.add_node("z", 3)
    g.add_node("h", 4, ["z"], fn="tanh")
    g.add_node("y", 2, ["h"], fn="linear")
    return g


def _cell():
    cell = Cell("rnn")
    cell.add_input("obs", 3)
    cell.set_state("h", count=6, dim=2, fan_in=2, slots=2, seed=1, input="obs", input_neurons=2)
    cell.add_node("act", 3, ["h"], fn="linear")
    return cell


def _randomise_generators(net, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.generator_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


def _graph_step(net, seed=0):
    gen = torch.Generator().manual_seed(seed)
    out = net({"z": torch.randn(16, 3, generator=gen)})
    (out["y"] * torch.randn(16, 2, generator=gen)).sum().backward()


# ---------------------------------------------------------------- defect 1: no_grad forwards keep records
@pytest.mark.parametrize("method", ["adapt_lambda", "update_generators"])
def test_a_no_grad_forward_between_backward_and_update_keeps_the_records(method):
    def run(evaluate: bool):
        torch.manual_seed(0)
        net = sggraph.compile(_graph(), grouping="child")
        net.set_lambda(0.6)
        _randomise_generators(net)
        _graph_step(net)
        if evaluate:
            with torch.no_grad():
                net({"z": torch.randn(5, 3)})
        if method == "adapt_lambda":
            return net.adapt_lambda(momentum=0.5, normalize=False)["h"]
        opt = torch.optim.SGD(net.generator_parameters(), lr=0.1)
        return torch.tensor(net.update_generators(opt))

    assert torch.equal(run(False), run(True))


def test_refresh_predictions_still_works_after_a_no_grad_forward():
    torch.manual_seed(0)
    net = sggraph.compile(_graph(), grouping="child")
    net.set_lambda(0.5)
    _randomise_generators(net)
    out = net({"z": torch.randn(8, 3)})
    loss = out["y"].pow(2).sum()
    net.record_feedback(loss)
    with torch.no_grad():
        net({"z": torch.randn(2, 3)})
    net.update_generators(torch.optim.SGD(net.generator_parameters(), lr=0.1))
    net.refresh_predictions()
    loss.backward()
    assert net.received("h").shape == (8, 4)


def test_updates_without_recorded_feedback_raise_a_clear_error():
    net = sggraph.compile(_graph(), grouping="child")
    opt = torch.optim.SGD(net.generator_parameters(), lr=0.1)
    with pytest.raises(LambdaError, match="feedback recorded by a backward"):
        net.update_generators(opt)
    with pytest.raises(LambdaError, match="feedback recorded by a backward"):
        net.adapt_lambda()
    net({"z": torch.randn(4, 3)})  # a forward without its backward
    with pytest.raises(LambdaError, match="update_generators"):
        net.update_generators(opt)


def test_cell_records_survive_a_no_grad_forward_and_are_required():
    def run(evaluate: bool):
        torch.manual_seed(0)
        net = sggraph.compile(_cell(), grouping="child")
        net.set_lambda(0.7)
        _randomise_generators(net)
        gen = torch.Generator().manual_seed(1)
        out = net({"obs": torch.randn(4, 5, 3, generator=gen)})
        (out["act"] * torch.randn(4, 5, 3, generator=gen)).sum().backward()
        if evaluate:
            with torch.no_grad():
                net({"obs": torch.randn(2, 5, 3)})
        lam = net.adapt_lambda(momentum=0.5, max_samples=None)["h"]
        loss = net.update_generators(torch.optim.SGD(net.generator_parameters(), lr=0.1))
        return lam, loss

    (lam_a, loss_a), (lam_b, loss_b) = run(False), run(True)
    assert torch.equal(lam_a, lam_b) and loss_a == loss_b
    fresh = sggraph.compile(_cell(), grouping="child")
    with pytest.raises(LambdaError, match="feedback recorded by a backward"):
        fresh.adapt_lambda()
    with pytest.raises(LambdaError, match="feedback recorded by a backward"):
        fresh.update_generators(torch.optim.SGD(fresh.generator_parameters(), lr=0.1))


# ---------------------------------------------------------------- defect 2: one-argument generators
@pytest.mark.parametrize("grouping", ["child", "edge"])
def test_one_argument_generators_are_accepted(grouping):
    torch.manual_seed(0)
    net = sggraph.compile(_graph(), generators={"h": nn.Linear(3, 4)}, grouping=grouping)
    net.set_lambda(0.5)
    if grouping == "edge":
        net.set_self_lambda(0.5)
    _graph_step(net)
    assert net.update_generators(torch.optim.SGD(net.generator_parameters(), lr=0.1)) > 0


def test_two_argument_generators_get_aux():
    seen = []

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 4)

        def forward(self, z, aux):
            seen.append(aux)
            return self.lin(z)

    net = sggraph.compile(_graph(), generators={"h": Spy()}, grouping="child")
    net.set_lambda(0.5)
    _graph_step(net)
    assert seen == [None]


def test_a_generator_of_three_required_arguments_is_rejected_at_compile_time():
    class Bad(nn.Module):
        def forward(self, z, aux, extra):
            return z

    with pytest.raises(CompileError, match=r"node 'h'.*generators\['h'\]"):
        sggraph.compile(_graph(), generators={"h": Bad()})
    with pytest.raises(CompileError, match="not an nn.Module"):
        sggraph.compile(_graph(), generators={"h": lambda z: z})
    with pytest.raises(CompileError, match="node 'act'"):
        sggraph.compile(_cell(), generators={"act": Bad()})


def test_one_argument_generator_on_a_cell_node():
    torch.manual_seed(0)
    generator = nn.Linear(12, 3)
    net = sggraph.compile(_cell(), generators={"act": generator}, grouping="child")
    net.set_lambda(0.5)
    out = net({"obs": torch.randn(3, 2, 3)})
    out["act"].sum().backward()
    before = generator.weight.detach().clone()
    loss = net.update_generators(torch.optim.SGD(net.generator_parameters(), lr=0.1))
    assert math.isfinite(float(loss)) and float(loss) > 0  # it regressed onto the feedback it received
    assert not torch.equal(generator.weight, before)  # and the user's own module took the step


# ---------------------------------------------------------------- defect 7: one mixer, one momentum rule
def test_param_mix_checks_non_finite_gradients_itself():
    from sggraph.engine.mixing import ParamMix, Record

    p = torch.zeros(3, requires_grad=True)
    rec = Record("w")
    rec.synthetic_params["w"] = torch.zeros(3)
    out = ParamMix.apply(p, torch.tensor(0.5), rec, "w")
    with pytest.raises(GradientError, match="parameter mixer"):
        (out * float("inf")).sum().backward()


def test_cell_adapt_lambda_checks_the_momentum_range():
    net = sggraph.compile(_cell(), grouping="child")
    with pytest.raises(LambdaError, match="momentum"):
        net.adapt_lambda(momentum=1.5)


# ---------------------------------------------------------------- defect 4: equality and hashing agree
def test_graphs_that_compare_equal_are_not_hashable_by_identity():
    a, b = _graph(), _graph()
    assert a == b
    with pytest.raises(TypeError):
        hash(a)
    with pytest.raises(TypeError):
        {a}  # noqa: B018


# ---------------------------------------------------------------- one interface for compiled nets
def test_compiled_graph_and_cell_share_one_protocol():
    import inspect

    from sggraph import CompiledNet

    graph_net = sggraph.compile(_graph(), grouping="child")
    cell_net = sggraph.compile(_cell(), grouping="child")
    for net in (graph_net, cell_net):
        assert isinstance(net, CompiledNet)
    for name, member in vars(CompiledNet).items():
        if name.startswith("_") or not callable(member):
            continue
        want = inspect.signature(member)
        for net in (graph_net, cell_net):
            got = inspect.signature(getattr(type(net), name))
            params = list(got.parameters.values())
            for i, p in enumerate(want.parameters.values()):  # the protocol's parameters, in order, same kinds
                assert params[i].name == p.name and params[i].kind == p.kind, (type(net).__name__, name)
                assert params[i].default == p.default, (type(net).__name__, name, p.name)
            extra = params[len(want.parameters):]
            assert all(p.default is not p.empty for p in extra), (type(net).__name__, name)
            assert got.return_annotation == want.return_annotation, (type(net).__name__, name)


def test_read_api_of_both_nets():
    net = sggraph.compile(_cell(), grouping="child")
    net.set_lambda(0.25, ("h[0]", "h[3]"))  # a cell ties a node's in-edges: sets h's θ
    assert net.get_self_lambda("h[3]") == 0.25
    assert net.edge_lambdas()["h"].shape == (6, 3) and float(net.self_lambdas()["h"].max()) == 0.25
    out = net({"obs": torch.randn(3, 2, 3)})
    out["act"].sum().backward()
    records = net.records()
    assert {"act", "h@1", "h@3"} <= set(records) and records["h@2"].received.shape == (6, 2, 2)
    assert net.paths()["h"] == "child"
    assert set(net.adapt_lambda(momentum=0.5)) == {"h"}
    gnet = sggraph.compile(_graph(), grouping="child")
    gnet.set_lambda(0.5)
    gnet({"z": torch.randn(4, 3)})["y"].sum().backward()
    assert gnet.records()["h"].received.shape == (4, 4) and gnet.paths() == {"h": "child", "y": "child"}
    assert gnet.edge_lambdas()["h"].tolist() == [0.5] and float(gnet.self_lambdas()["y"]) == 0.5


def test_the_core_imports_without_torch():
    import subprocess
    import sys

    code = ("import sys, sggraph; g = sggraph.Graph(); g.add_node('z', 1); g.add_node('y', 1, ['z']); "
            "sggraph.check_conditions(g); assert 'torch' not in sys.modules, 'the core imported torch'")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- defect 5: messages say the thing itself
def test_no_message_or_docstring_cites_the_design_notes():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    cited = [str(p.relative_to(root)) for folder in ("sggraph", "models", "envs") for p in (root / folder).rglob("*.py")
             if "DESIGN.md" in p.read_text(encoding="utf-8")]
    assert cited == []


def test_a_wrong_yaml_type_says_what_is_expected():
    from sggraph import SpecError

    with pytest.raises(SpecError) as err:
        sggraph.Graph.from_dict({"nodes": [{"name": "z", "dim": "two"}]})
    assert "integers" in str(err.value) and "DESIGN" not in str(err.value)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_all_finite_agrees_with_the_elementwise_test(dtype):
    """The sum-first check gives isfinite(x).all() on every case: clean, one NaN / +inf / -inf anywhere,
    +inf and -inf together (sum NaN), finite elements whose sum overflows, empty, integer, complex, requires_grad."""
    from sggraph.engine.mixing import all_finite

    gen = torch.Generator().manual_seed(0)
    big = torch.finfo(dtype).max
    cases = [torch.randn(7, 5, generator=gen).to(dtype), torch.empty(0, dtype=dtype),
             torch.full((4,), big, dtype=dtype), torch.tensor([big, -big, big], dtype=dtype),
             torch.arange(6), torch.randn(3, requires_grad=True).to(dtype), torch.tensor([1 + 1j, complex("nan")])]
    for bad in (float("nan"), float("inf"), -float("inf")):
        for where in (0, 17, 34):
            x = torch.randn(7, 5, generator=gen).to(dtype)
            x.view(-1)[where] = bad
            cases.append(x)
    both = torch.randn(10, generator=gen).to(dtype)
    both[2], both[7] = float("inf"), -float("inf")
    cases.append(both)
    for x in cases:
        assert all_finite(x) == bool(torch.isfinite(x).all()), x
