"""Bring your own PyTorch model: :func:`trace` puts per-edge λ, conditions, generators and drawings
on an unmodified ``nn.Module``.

* :mod:`~sggraph.tracing.fx_reader` — ``torch.fx`` tracing, chosen nodes, shapes, located errors;
* :mod:`~sggraph.tracing.partition` — which operations form each node;
* :mod:`~sggraph.tracing.node_functions` — a node's function over the module's own submodules;
* :mod:`~sggraph.tracing.generators` — generators for the traced shapes (dense, convolutional, MLP, cDNI);
* :mod:`~sggraph.tracing.build` — the layered graph (relays, DNI cuts) and its compiled net;
* :mod:`~sggraph.tracing.net` — :class:`TracedNet`, called like the module;
* :mod:`~sggraph.tracing.spec` — :class:`TraceSpec`, what a model file returns to the CLI.
"""

from .build import CUT_PREFIX, trace
from .generators import GENERATOR_KINDS
from .net import TracedNet
from .spec import TraceSpec

__all__ = ["CUT_PREFIX", "GENERATOR_KINDS", "TraceSpec", "TracedNet", "trace"]
