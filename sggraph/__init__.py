"""sggraph — synthetic-gradient propagation on layered computational graphs.

Three layers, each a subpackage, importing only downwards:

* :mod:`sggraph.core` — the torch-free core: :class:`Graph`, YAML specs, the paper's
  conditions and sibling-extended ancestors, recurrent cells and their unrolling;
* :mod:`sggraph.engine` — the torch layer: the compiler (eq. 5–6), generators, adaptive λ,
  training and the MSE profiler;
* the shell — :mod:`sggraph.draw`, :mod:`sggraph.sweeps`, :mod:`sggraph.experiments`,
  :mod:`sggraph.cli`.

The core is importable without torch: the engine's names below load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .core.analysis import (
    ConditionReport,
    check_conditions,
    extended_ancestors,
    siblings,
    theorem3_condition,
    theorem3_constants,
)
from .core.graph import Graph, Node, NodeArray
from .core.unroll import Cell, unroll
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

if TYPE_CHECKING:  # the engine, loaded lazily at runtime
    from .engine import diagnostics, generators, training  # noqa: F401
    from .engine.compile import GROUPINGS, CompiledGraph, compile
    from .engine.protocol import CompiledNet
    from .engine.recurrent import CompiledCell, compile_cell
    from .tracing import TracedNet, TraceSpec, trace

__version__ = "0.1.0"

#: Names served from the engine (module, attribute; attribute None: the module itself).
_LAZY = {
    "GROUPINGS": ("sggraph.engine.compile", "GROUPINGS"),
    "CompiledGraph": ("sggraph.engine.compile", "CompiledGraph"),
    "compile": ("sggraph.engine.compile", "compile"),
    "CompiledCell": ("sggraph.engine.recurrent", "CompiledCell"),
    "compile_cell": ("sggraph.engine.recurrent", "compile_cell"),
    "CompiledNet": ("sggraph.engine.protocol", "CompiledNet"),
    "generators": ("sggraph.engine.generators", None),
    "training": ("sggraph.engine.training", None),
    "diagnostics": ("sggraph.engine.diagnostics", None),
    "viz": ("sggraph.draw", None),
    "trace": ("sggraph.tracing", "trace"),
    "TracedNet": ("sggraph.tracing", "TracedNet"),
    "TraceSpec": ("sggraph.tracing", "TraceSpec"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = importlib.import_module(module)
        value = value if attr is None else getattr(value, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sggraph' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "GROUPINGS",
    "Cell",
    "CompileError",
    "CompiledCell",
    "CompiledGraph",
    "CompiledNet",
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
    "TraceSpec",
    "TracedNet",
    "check_conditions",
    "compile",
    "compile_cell",
    "extended_ancestors",
    "generators",
    "siblings",
    "theorem3_condition",
    "theorem3_constants",
    "trace",
    "unroll",
]
