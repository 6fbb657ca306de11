"""Hostile calls of the library and the drawing command: wrong λ values, stray or non-finite inputs,
output paths that do not exist or cannot be written — each an SggraphError naming the node or file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import sggraph
from sggraph import DataError, DimensionError, LambdaError
from sggraph.cli import main
from sggraph.core.unroll import Cell
from sggraph.engine.recurrent import compile_cell

ROOT = Path(__file__).resolve().parent.parent


def _graph() -> sggraph.Graph:
    g = sggraph.Graph("t")
    g.add_node("z", 3)
    g.add_node("h", 4, ["z"], fn="tanh")
    g.add_node("y", 1, ["h"], fn="linear")
    g.add_array("x", 4, 1)
    g.add_array("a", 3, 2, parents="x", fan_in=2)
    return g


def _tables(net) -> list[torch.Tensor]:
    return [t.clone() for b in net.blocks.values() for t in (b.lam, b.lam_self)]


@pytest.mark.parametrize("grouping", ["edge", "parent", "child"])
@pytest.mark.parametrize("target,value,node", [
    ({"node": "h"}, torch.full((5, 7), 0.5), "h"),
    ({"node": "a"}, torch.full((5, 7), 0.5), "a"),
    ({"edge": ("z", "h")}, torch.full((3,), 0.5), "h"),
    ({"edge": ("x", "a")}, torch.full((5, 7), 0.5), "a"),
    ({}, torch.full((3,), 0.5), None),
    ({"node": "h"}, "0.5", "h"),
    ({"node": "a"}, "high", "a"),
    ({"edge": ("z", "h")}, None, "h"),
    ({}, [0.5, 0.2], None),
    ({"node": "h"}, torch.tensor(0.5 + 0.5j), "h"),
])
def test_set_lambda_with_a_wrong_value_names_the_node_and_changes_nothing(grouping, target, value, node):
    net = sggraph.compile(_graph(), grouping=grouping)
    net.set_lambda(0.3)
    before = _tables(net)
    with pytest.raises(LambdaError) as info:
        net.set_lambda(value, **target)
    if node is not None:
        assert info.value.node == node
    elif isinstance(value, torch.Tensor):
        assert info.value.node is not None  # "every node": the first one whose table the tensor does not fit
    assert "Fix:" in str(info.value)
    assert all(torch.equal(a, b) for a, b in zip(before, _tables(net)))


def test_set_self_lambda_with_a_wrong_value_names_the_node():
    net = sggraph.compile(_graph(), grouping="edge")
    with pytest.raises(LambdaError, match="does not fit") as info:
        net.set_self_lambda(torch.ones(9), node="a")
    assert info.value.node == "a"
    with pytest.raises(LambdaError, match="got str"):
        net.set_self_lambda("1")


def test_right_shaped_tensors_still_set_lambda():
    net = sggraph.compile(_graph(), grouping="child")
    net.set_lambda(torch.tensor([0.1, 0.2, 0.3]), node="a")  # one λ per neuron
    assert torch.allclose(net.get_self_lambda("a"), torch.tensor([0.1, 0.2, 0.3]))
    net.set_lambda(torch.tensor(0.7), node="h")
    assert net.get_lambda(("z", "h")) == pytest.approx(0.7)


def _cell_net():
    cell = Cell("c")
    cell.add_input("obs", 3)
    cell.set_state("h", count=4, dim=2, fan_in=2, input="obs", input_neurons=2)
    return compile_cell(cell)


def test_recurrent_set_lambda_with_a_wrong_value_names_the_node():
    net = _cell_net()
    before = _tables(net)
    with pytest.raises(LambdaError) as info:
        net.set_lambda(torch.ones(7, 7), node="h")
    assert info.value.node == "h"
    with pytest.raises(LambdaError, match="got str"):
        net.set_lambda("0.5", node="h")
    assert all(torch.equal(a, b) for a, b in zip(before, _tables(net)))


def test_an_input_that_is_not_a_source_is_refused():
    net = sggraph.compile(_graph())
    inputs = {"z": torch.randn(2, 3), "x": torch.randn(2, 4)}
    assert net(inputs)["y"].shape == (2, 1)
    with pytest.raises(DimensionError, match="input 'zz' is not a source of graph 't'") as info:
        net({**inputs, "zz": torch.randn(2, 3)})
    assert info.value.node == "zz" and "z, x" in info.value.fix
    with pytest.raises(DimensionError, match="not a tensor"):
        net({**inputs, "z": [[0.0, 1.0, 2.0]]})


def test_a_non_finite_input_is_caught_at_its_source_and_blamed_on_the_data():
    net = sggraph.compile(_graph())
    z = torch.randn(2, 3)
    z[1, 2] = float("nan")
    with pytest.raises(DataError) as info:
        net({"z": z, "x": torch.randn(2, 4)})
    assert info.value.node == "z" and "NaN or infinite" in info.value.message
    assert "learning rate" not in str(info.value) and "data" in info.value.fix
    net.check_finite = False  # the user's choice: let it through
    assert torch.isnan(net({"z": z, "x": torch.randn(2, 4)})["y"]).any()


def test_a_non_finite_input_to_a_cell_is_caught_and_a_stray_key_refused():
    net = _cell_net()
    obs = torch.randn(5, 2, 3)
    net({"obs": obs})
    obs[3, 0, 0] = float("inf")
    with pytest.raises(DataError, match="NaN or infinite") as info:
        net({"obs": obs})
    assert info.value.node == "obs"
    with pytest.raises(DimensionError, match="input 'act' is not a source of the cell"):
        net({"obs": torch.randn(5, 2, 3), "act": torch.randn(5, 2, 1)})


def test_the_mixer_fix_names_the_possible_sources_of_a_non_finite_gradient():
    net = sggraph.compile(_graph())
    out = net({"z": torch.randn(2, 3), "x": torch.randn(2, 4)})
    with pytest.raises(sggraph.GradientError) as info:
        (out["y"].sum() * float("nan")).backward()
    assert "the inputs" in info.value.fix and "the loss" in info.value.fix


# ------------------------------------------------------------------------------ draw output paths
def test_draw_into_a_missing_directory_creates_nothing(tmp_path, capsys):
    out = tmp_path / "no" / "such" / "dir" / "x.svg"
    assert main(["draw", str(ROOT / "examples" / "expert-net.yaml"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "mkdir -p" in err and "Traceback" not in err
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("suffix", [".svg", ".dot"])
def test_draw_into_an_unwritable_directory_names_the_target_and_the_right_fix(suffix, capsys):
    unwritable = Path("/sys")  # sysfs takes no new files, not even from root
    assert main(["draw", str(ROOT / "examples" / "expert-net.yaml"), "-o", str(unwritable / f"x{suffix}")]) == 2
    err = capsys.readouterr().err
    assert f"cannot write x{suffix}: the directory /sys is not writable" in err
    assert ".tmp" not in err and "dot -T" not in err and "Traceback" not in err


def test_a_graph_too_large_for_memory_is_a_compile_error_naming_the_node(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("name: big\nnodes:\n  - {name: z, dim: 1048576}\n"
                    "  - {name: h, dim: 1048576, parents: [z], fn: identity}\n")  # a 2^40-weight generator
    with pytest.raises(sggraph.CompileError, match="not enough memory") as info:
        sggraph.compile(sggraph.Graph.from_yaml(str(path)))
    assert info.value.node == "h" and info.value.line == 4


def test_a_linear_node_beyond_the_weight_limit_is_refused_before_allocating():
    g = sggraph.Graph("wide")
    g.add_node("z", 2**20)
    g.add_node("y", 2**20, ["z"], fn="linear")
    with pytest.raises(sggraph.CompileError, match="weights, more than") as info:
        sggraph.compile(g)
    assert info.value.node == "y"
