"""``--unroll`` is bounded like node dims: past :data:`MAX_UNROLLED_NODES` nodes it is refused at once, located,
naming the most steps the cell takes, before anything is built."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

import sggraph
from sggraph.cli import main
from sggraph.core.unroll import MAX_UNROLLED_NODES, unroll, unrolled_size
from sggraph.exceptions import GraphError

CELL = Path(__file__).resolve().parent.parent / "examples" / "popgym-sparsenet-cell.yaml"


@pytest.mark.parametrize("command", [["check-conditions"], ["draw", "-o", "x.svg"]])
def test_an_unroll_past_the_bound_is_a_located_refusal(command, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([command[0], str(CELL), *command[1:], "--unroll", "400"]) == 2  # 52,528 nodes
    err = capsys.readouterr().err
    assert f"{CELL}:1:" in err and "400 unrolled steps make a graph of 52,528 nodes" in err
    assert "unroll for at most 380 steps" in err and "Traceback" not in err
    assert not (tmp_path / "x.svg").exists()


def test_the_refusal_builds_nothing():
    cell = sggraph.Cell.from_yaml(CELL)
    tracemalloc.start()
    try:
        with pytest.raises(GraphError, match="more than the limit"):
            unroll(cell, 10**9)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # bytes: the size is computed, not the graph


def test_the_bound_itself_unrolls_and_its_size_is_exact():
    cell = sggraph.Cell.from_yaml(CELL)
    assert len(unroll(cell, 3).nodes) == unrolled_size(cell, 3)
    most = (MAX_UNROLLED_NODES - unrolled_size(cell, 0)) // (unrolled_size(cell, 1) - unrolled_size(cell, 0))
    assert unrolled_size(cell, most) <= MAX_UNROLLED_NODES < unrolled_size(cell, most + 1)
