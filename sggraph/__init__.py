"""sggraph — synthetic-gradient propagation on layered computational graphs.

Three layers, each a subpackage, importing only downwards:

* :mod:`sggraph.core` — the torch-free core: :class:`Graph`, YAML specs, the paper's
  conditions and sibling-extended ancestors, recurrent cells and their unrolling;
* :mod:`sggraph.engine` — the torch layer: the compiler (eq. 5–6), generators, adaptive λ,
  training and the MSE profiler;
* the shell — :mod:`sggraph.draw` (public as :mod:`sggraph.viz`), :mod:`sggraph.sweeps`,
  :mod:`sggraph.experiments`, :mod:`sggraph.cli`.

The core is importable without torch: the engine's names below load on first use.
``sggraph.compile`` builds the synthetic-gradient module of a graph; it is not ``torch.compile``
(whose result may be passed to it afterwards, like any ``nn.Module``).
"""

import importlib as _importlib

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

__version__ = "0.1.0"

#: Names served lazily, on first use (module, attribute; attribute None: the module itself), so that
#: ``import sggraph`` and the core need no torch.
_LAZY = {
    "GROUPINGS": ("sggraph.engine", "GROUPINGS"),
    "CompiledGraph": ("sggraph.engine", "CompiledGraph"),
    "compile": ("sggraph.engine", "compile"),
    "CompiledCell": ("sggraph.engine", "CompiledCell"),
    "compile_cell": ("sggraph.engine", "compile_cell"),
    "CompiledNet": ("sggraph.engine", "CompiledNet"),
    "generators": ("sggraph.engine.generators", None),
    "training": ("sggraph.engine.training", None),
    "diagnostics": ("sggraph.engine.diagnostics", None),
    "viz": ("sggraph.viz", None),
    "trace": ("sggraph.tracing", "trace"),
    "TracedNet": ("sggraph.tracing", "TracedNet"),
    "TraceSpec": ("sggraph.tracing", "TraceSpec"),
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        module, attr = _LAZY[name]
        if module.startswith("sggraph.engine"):
            _importlib.import_module("sggraph.models")  # registers the POPGym node functions (fn: embedding, ...)
        value = _importlib.import_module(module)
        value = value if attr is None else getattr(value, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sggraph' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(n for n in set(globals()) | set(_LAZY) if not n.startswith("_") or n == "__version__")


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
    "diagnostics",
    "extended_ancestors",
    "generators",
    "siblings",
    "theorem3_condition",
    "theorem3_constants",
    "trace",
    "training",
    "unroll",
    "viz",
]
