"""Environments and data sets (installed as ``sggraph.envs``)."""

__all__: list[str] = []
