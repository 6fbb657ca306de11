"""Model families built from the sggraph engine (installed as ``sggraph.models``)."""

__all__ = ["sparsenet"]
