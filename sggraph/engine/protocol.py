"""One interface for compiled nets: :class:`CompiledNet`, satisfied by
:class:`~sggraph.CompiledGraph` and :class:`~sggraph.CompiledCell` with the same names,
arguments and return types for setting and reading λ, adapting λ, the generator loss and
update, and the read API that drawing and experiments use instead of the engine's storage.

>>> import sggraph
>>> g = sggraph.Graph(); g.add_node("z", 2); g.add_node("y", 1, ["z"], fn="linear")
>>> isinstance(sggraph.compile(g), CompiledNet)
True
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from .mixing import Record

__all__ = ["CompiledNet"]


@runtime_checkable
class CompiledNet(Protocol):
    """What every compiled net offers (implementations may take further keyword options)."""

    grouping: str
    synthetic: bool
    check_finite: bool

    def set_lambda(self, value: float | torch.Tensor, edge: tuple[str, str] | None = None, *,
                   node: str | None = None) -> None:
        """Set λ on every edge, one edge, or a node's in-edges (per the grouping)."""
        ...

    def get_lambda(self, edge: tuple[str, str]) -> float | torch.Tensor:
        """The weight of one edge (float) or of several (tensor)."""
        ...

    def set_self_lambda(self, value: float | torch.Tensor, node: str | None = None) -> None:
        """Set ``λ^self`` (eq. 6) of every node or of one."""
        ...

    def get_self_lambda(self, node: str) -> float | torch.Tensor:
        """``λ^self`` of a node (float) or of an array or state (tensor)."""
        ...

    def adapt_lambda(self, momentum: float = 0.9, normalize: bool | str = True) -> dict[str, torch.Tensor]:
        """Adaptive λ from the last backward (eq. 18 and the momentum update); ``λ_batch`` per node."""
        ...

    def generator_loss(self) -> torch.Tensor:
        """The generators' regression loss on the last backward's targets."""
        ...

    def update_generators(self, optimizer: torch.optim.Optimizer | None = None) -> float:
        """One generator update on the last backward's targets; returns the loss."""
        ...

    def has_feedback(self) -> bool:
        """Whether the last backward recorded feedback."""
        ...

    def edge_lambdas(self) -> dict[str, torch.Tensor]:
        """Every node's in-edge weights (copies)."""
        ...

    def self_lambdas(self) -> dict[str, torch.Tensor]:
        """Every node's ``λ^self`` (copies)."""
        ...

    def records(self) -> dict[str, Record]:
        """The feedback records of the last grad-enabled forward."""
        ...

    def paths(self) -> dict[str, str]:
        """The path (``plain``, ``child``, ``general``) each node ran in the last grad-enabled forward."""
        ...

    def model_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters the model's optimizer updates."""
        ...

    def generator_parameters(self) -> Iterator[nn.Parameter]:
        """The generators' parameters (their own optimizer)."""
        ...
