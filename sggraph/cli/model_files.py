"""The model file of a command: a layered graph, or a recurrent cell with ``--unroll T``.

Commands that work on a layered graph take either kind of YAML file: a graph as it is, a
cell as the graph of ``T`` unrolled steps (``--unroll T``). A graph given ``--unroll``, or a
cell without it where a graph is needed, is a located error (exit code 2).
"""

from __future__ import annotations

import argparse

from ..core.files import load_model_file
from ..core.graph import Graph
from ..core.unroll import Cell, check_unroll, unroll
from ..exceptions import ConfigError, GraphError
from .python_models import is_python_target, load_traced_graph

__all__ = ["add_unroll_argument", "load_graph", "load_graph_or_cell", "load_model"]


def add_unroll_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """Add ``--unroll T`` (``what``: what the command does with the unrolled graph)."""
    parser.add_argument("--unroll", type=int, metavar="T",
                        help=f"the file declares a recurrent cell: {what} the graph of T unrolled steps")


def load_model(path: str, steps: int | None) -> Graph | Cell:
    """The graph or cell of ``path``, checked against ``--unroll`` (``steps``): a graph takes none."""
    if steps is not None and (isinstance(steps, bool) or steps < 1):
        raise ConfigError(f"--unroll must be at least 1 (got {steps})", fix="pass --unroll T with T >= 1 steps")
    if is_python_target(path):  # FILE.py:NAME: the graph sggraph.trace reads from a PyTorch model
        if steps is not None:
            raise ConfigError("--unroll applies to recurrent cells, and FILE.py:NAME is a traced module", file=path,
                              fix="drop --unroll")
        return load_traced_graph(path)
    model = load_model_file(path)
    if isinstance(model, Graph) and steps is not None:
        raise ConfigError("--unroll applies to recurrent cells, and this file declares a layered graph",
                          file=path, line=1, fix="drop --unroll (a cell file has `inputs:` and `state:`)")
    if isinstance(model, Cell) and steps is not None:
        try:
            check_unroll(model, steps)  # bounded before anything is built
        except GraphError as err:
            raise model.locate(err) from None
    return model


def load_graph_or_cell(path: str, steps: int | None) -> Graph | Cell:
    """The graph of ``path``; for a cell, its unrolled graph when ``steps`` is given, else the cell."""
    model = load_model(path, steps)
    if isinstance(model, Graph) or steps is None:
        return model
    try:
        return unroll(model, steps)
    except GraphError as err:
        raise model.locate(err) from None


def load_graph(path: str, steps: int | None, command: str) -> Graph:
    """The layered graph of ``path`` (a cell needs ``steps``); ``command`` names the command in errors."""
    model = load_graph_or_cell(path, steps)
    if isinstance(model, Cell):
        line = model.where(model.state.name)[1] if model.state is not None else 1
        raise ConfigError(f"this file declares a recurrent cell, and `sggraph {command}` works on the layered graph "
                          "of its unrolled steps", file=path, line=line,
                          fix="pass --unroll T, the number of steps to unroll (e.g. --unroll 80)")
    return model
