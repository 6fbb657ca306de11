"""What a model file hands the command line: a module, its example inputs and how to trace it.

``sggraph check-conditions FILE.py:NAME`` and ``sggraph draw FILE.py:NAME`` call ``NAME()``; it
returns ``(module, example_inputs)`` or a :class:`TraceSpec`, which adds the options of
:func:`sggraph.trace` (nodes, cuts, stochastic nodes, feedback kinds …).

>>> import torch
>>> from torch import nn
>>> spec = TraceSpec(nn.Linear(3, 1), torch.zeros(2, 3), options={"feedback": {"input": "contextual"}})
>>> spec.options["feedback"]
{'input': 'contextual'}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["TraceSpec"]


@attrs.frozen
class TraceSpec:
    """A module to trace.

    Attributes
    ----------
    module : nn.Module
    example_inputs : Tensor or tuple of Tensor
        Batch first.
    options : mapping
        Keyword arguments of :func:`sggraph.trace` (``nodes``, ``leaves``, ``cuts``, ``generators``,
        ``context``, ``grouping``, ``stochastic``, ``feedback``, ``name``).
    """

    module: Any
    example_inputs: Any
    options: Mapping[str, Any] = attrs.field(factory=dict, converter=dict)

    def trace(self):  # noqa: ANN201 - a TracedNet (imported lazily: torch)
        """``sggraph.trace(module, example_inputs, **options)``."""
        from .build import trace

        return trace(self.module, self.example_inputs, **self.options)
