"""Bad input to the compiler gets clear, node-naming errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import sggraph
from sggraph import CompileError, DimensionError, GradientError, LambdaError


def _graph():
    g = sggraph.Graph("g")
    g.add_node("z", 3)
    g.add_node("h", 4, ["z"], fn="tanh")
    g.add_node("y", 2, ["h"], fn="linear")
    return g


def test_function_output_dim_mismatch_is_named_at_first_forward():
    net = sggraph.compile(_graph(), functions={"h": nn.Linear(3, 5)})
    with pytest.raises(DimensionError) as err:
        net({"z": torch.randn(2, 3)})
    assert err.value.node == "h"
    assert "[B=2, dim=4]" in str(err.value) and err.value.fix


def test_missing_function_names_node_and_fix(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("name: g\nnodes:\n  - {name: z, dim: 2}\n  - {name: y, dim: 1, parents: [z]}\n")
    with pytest.raises(CompileError) as err:
        sggraph.compile(sggraph.Graph.from_yaml(str(path)))
    assert err.value.node == "y" and err.value.line == 4 and str(path) in str(err.value)
    assert "fn:" in err.value.fix


def test_unknown_function_override_name():
    with pytest.raises(CompileError, match="names no node"):
        sggraph.compile(_graph(), functions={"nope": nn.Identity()})


@pytest.mark.parametrize("value", [-0.1, 1.5, math.nan, torch.tensor([0.5, 2.0])])
def test_lambda_out_of_range_or_nan(value):
    net = sggraph.compile(_graph())
    with pytest.raises(LambdaError) as err:
        net.set_lambda(value)
    assert "[0, 1]" in str(err.value)
    with pytest.raises(LambdaError):
        net.set_self_lambda(value, node="h")


def test_unknown_edge():
    net = sggraph.compile(_graph())
    with pytest.raises(LambdaError) as err:
        net.set_lambda(0.5, edge=("z", "y"))
    assert "no edge z -> y" in str(err.value)
    with pytest.raises(LambdaError):
        net.get_lambda(("y", "h"))
    with pytest.raises(LambdaError, match="source"):
        net.set_self_lambda(0.5, node="z")


def test_nan_gradient_reaching_mixer_names_node():
    net = sggraph.compile(_graph())
    net.set_lambda(0.5)
    out = net({"z": torch.randn(4, 3)})
    loss = (out["y"] * torch.tensor(float("nan"))).sum()
    with pytest.raises(GradientError) as err:
        loss.backward()
    assert err.value.node == "y" and "NaN" in str(err.value)


def test_wrong_input_shape_names_source():
    net = sggraph.compile(_graph())
    with pytest.raises(DimensionError) as err:
        net({"z": torch.randn(4, 2)})
    assert err.value.node == "z" and "[B, 3]" in str(err.value)
    with pytest.raises(DimensionError, match="no input"):
        net({})


def test_identity_needs_matching_dim():
    g = sggraph.Graph()
    g.add_node("z", 3)
    g.add_node("r", 2, ["z"], fn="identity")
    with pytest.raises(CompileError) as err:
        sggraph.compile(g)
    assert err.value.node == "r" and "dim: 3" in err.value.fix


def test_lambda_api_per_edge_parent_child():
    g = sggraph.Graph()
    g.add_node("z", 2)
    g.add_node("a", 2, ["z"], fn="tanh")
    g.add_node("b", 2, ["z"], fn="tanh")
    g.add_node("y", 1, ["a", "b"], fn="linear")
    net = sggraph.compile(g)
    net.set_lambda(0.25, edge=("a", "y"))
    assert net.get_lambda(("a", "y")) == 0.25 and net.get_lambda(("b", "y")) == 1.0
    assert net.get_self_lambda("y") == 1.0
    child = sggraph.compile(g, grouping="child")
    child.set_lambda(0.3, edge=("a", "y"))  # ties θ_y: both in-edges and λ^self
    assert child.get_lambda(("b", "y")) == pytest.approx(0.3) and child.get_self_lambda("y") == pytest.approx(0.3)
    parent = sggraph.compile(g, grouping="parent")
    parent.set_lambda(0.6, node="z")  # λ_z on all of z's out-edges
    assert parent.get_lambda(("z", "a")) == pytest.approx(0.6) and parent.get_lambda(("z", "b")) == pytest.approx(0.6)
    assert parent.get_lambda(("a", "y")) == 1.0


def test_array_lambda_tensor_and_neuron_edges():
    g = sggraph.Graph()
    g.add_array("x", 5, 1)
    g.add_array("h", 3, 2, parents="x", table=[[0, 1], [1, 2], [3, 4]])
    net = sggraph.compile(g)
    lam = torch.tensor([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]])
    net.set_lambda(lam, edge=("x", "h"))
    torch.testing.assert_close(net.get_lambda(("x", "h")), lam)
    assert net.get_lambda(("x[2]", "h[1]")) == pytest.approx(0.4)
    net.set_lambda(0.9, edge=("x[1]", "h[0]"))
    assert net.get_lambda(("x[1]", "h[0]")) == pytest.approx(0.9)
    with pytest.raises(LambdaError):
        net.set_lambda(torch.ones(2, 2), edge=("x", "h"))
    with pytest.raises(LambdaError, match="no edge"):
        net.get_lambda(("x[4]", "h[0]"))
