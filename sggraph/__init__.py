"""sggraph — synthetic-gradient propagation on layered computational graphs.

The torch-free core (:class:`Graph`, YAML specs, analysis) is importable without
torch; the compiler, generators and training live in the torch layer.
"""

from .analysis import (
    ConditionReport,
    check_conditions,
    extended_ancestors,
    siblings,
    theorem3_condition,
    theorem3_constants,
)
from .exceptions import (
    CompileError,
    ConfigError,
    DataError,
    DimensionError,
    GradientError,
    GraphError,
    LambdaError,
    SggraphError,
    SpecError,
)
from .graph import Graph, Node, NodeArray
from .unroll import Cell, unroll

from . import generators  # the torch layer
from .compile import GROUPINGS, CompiledGraph, compile
from .recurrent import CompiledCell, compile_cell

__version__ = "0.1.0"

__all__ = [
    "GROUPINGS",
    "Cell",
    "CompileError",
    "CompiledCell",
    "CompiledGraph",
    "ConditionReport",
    "ConfigError",
    "DataError",
    "DimensionError",
    "GradientError",
    "Graph",
    "GraphError",
    "LambdaError",
    "Node",
    "NodeArray",
    "SggraphError",
    "SpecError",
    "check_conditions",
    "compile",
    "compile_cell",
    "extended_ancestors",
    "generators",
    "siblings",
    "theorem3_condition",
    "theorem3_constants",
    "unroll",
]
