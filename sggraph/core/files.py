"""Model files: one YAML file declares either a layered graph or a recurrent cell.

:func:`load_model_file` reads the file once and builds whichever it declares (a cell has
``state:``; a graph has ``nodes:`` / ``arrays:``); the command line uses it, so that every
command that takes a model file takes both.

>>> load_model_file("examples/expert-net.yaml")
Graph('expert-net', nodes=7, arrays=0, layers=3)
>>> load_model_file("examples/popgym-sparsenet-cell.yaml").state.count
128
"""

from __future__ import annotations

from ..exceptions import SpecError
from .cell_spec import cell_from_dict, is_cell_document
from .graph import Graph
from .spec import graph_from_dict, read_yaml
from .unroll import Cell

__all__ = ["load_model_file"]


def load_model_file(path: str) -> Graph | Cell:
    """The :class:`~sggraph.Graph` or :class:`~sggraph.Cell` declared in the YAML file ``path``.

    Raises
    ------
    SpecError
        The file is missing, empty, not YAML, or follows neither format.
    GraphError
        The graph or cell it declares is invalid (located at the node's line).
    """
    data, index = read_yaml(path)
    if data is None:
        raise SpecError("the file is empty", file=str(path), line=1,
                        fix="declare a graph (`nodes:` / `arrays:`) or a recurrent cell (`inputs:` and `state:`)")
    if is_cell_document(data):
        return cell_from_dict(data, cls=Cell, file=str(path), index=index)
    return graph_from_dict(data, cls=Graph, file=str(path), index=index)
