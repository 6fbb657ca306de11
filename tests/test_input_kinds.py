"""Inputs the net cannot compute on (another float dtype, integers, booleans, 'meta' tensors) are a DataError
naming the source and the conversion, never torch's dtype error from deep inside."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import sggraph
from sggraph.exceptions import DataError

ROOT = Path(__file__).resolve().parent.parent


def _net():
    return sggraph.compile(sggraph.Graph.from_yaml(ROOT / "examples" / "regression-dag.yaml"))


@pytest.mark.parametrize("make,needle,fix", [
    (lambda: torch.ones(3, 4, dtype=torch.float64), "is torch.float64 but the net's parameters are torch.float32",
     "x.to(torch.float32)"),
    (lambda: torch.ones(3, 4, dtype=torch.int64), "torch.int64 tensor", "x.to(torch.float32)"),
    (lambda: torch.ones(3, 4, dtype=torch.bool), "torch.bool tensor", "x.to(torch.float32)"),
    (lambda: torch.ones(3, 4, device="meta"), "'meta' tensor", "torch.zeros((3, 4)"),
])
def test_an_input_of_another_kind_is_a_located_error(make, needle, fix):
    net = _net()
    with pytest.raises(DataError) as err:
        net({"x1": make(), "x2": torch.ones(3, 4)})
    assert needle in str(err.value) and fix in str(err.value) and "node 'x1'" in str(err.value)


def test_the_net_follows_its_own_dtype():
    net = _net().double()
    out = net({"x1": torch.ones(3, 4, dtype=torch.float64), "x2": torch.ones(3, 4, dtype=torch.float64)})
    assert out["y"].dtype == torch.float64
    with pytest.raises(DataError, match="net.to"):
        net({"x1": torch.ones(3, 4), "x2": torch.ones(3, 4)})


def test_a_cell_checks_its_inputs_the_same_way():
    cell = sggraph.compile(sggraph.Cell.from_yaml(ROOT / "examples" / "popgym-sparsenet-cell.yaml"))
    with pytest.raises(DataError, match="node 'obs'.*torch.float64"):
        cell({"obs": torch.ones(2, 3, 56, dtype=torch.float64)})
