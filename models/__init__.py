"""Model families built from the sggraph engine (installed as ``sggraph.models``)."""

__all__ = ["sparsenet"]

from . import popgym_layers  # noqa: E402,F401  (registers fn: embedding and fn: slot_actor)
