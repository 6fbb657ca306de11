"""The forward's record: what one grad-enabled forward leaves for the backward and the generator step.

A compiled net owns one :class:`Trace` for the current step. Every grad-enabled forward replaces
it (an evaluation forward under ``torch.no_grad()`` leaves it as it is); the backward fills the
feedback each node received into its :class:`~sggraph.engine.mixing.Record`; adaptive λ and the
generator update read it. Nothing of a forward is kept on the blocks themselves.

Per node, a :class:`NodeTrace` holds the path the node ran (``mode``), its record, the detached
inputs of its function (``inputs``), the generator's input and prediction ``ĥ_v`` and the
output whose gradient is the received feedback. A recurrent cell's state array keeps its steps
in a :class:`StateTrace`.

The trace also remembers which feedback adaptive λ has consumed and whether the generators
have stepped on its predictions, so that a second :meth:`adapt_lambda` or
:meth:`update_generators` on the same backward is refused instead of applied twice.

>>> t = Trace()
>>> t.node("h", "child").mode, t.has_feedback()
('child', False)
"""

from __future__ import annotations

import torch

from .mixing import Record

__all__ = ["NodeTrace", "StateTrace", "Trace"]


class NodeTrace:
    """One node's (or array's) part of a forward.

    Attributes
    ----------
    mode : str
        ``plain``, ``child`` or ``general``: the path the node ran.
    record : Record or None
        The mixers' scratch; ``record.received`` is the feedback of the last backward
        (``[B, dim]``; arrays neuron-major ``[N, B, q]``).
    inputs : tuple or None
        The detached inputs of the node's function: ``(z [B, Σ parent dims],)`` for a node,
        ``(u [N, B, F·q_parent], r [N, B, q] or None)`` for an array (mixed paths only).
    generator_input : Tensor or None
        The generator's input ``z_v`` (detached).
    prediction : Tensor or None
        ``ĥ_v`` with its autograd graph (the generator's regression reads it).
    aux : dict or None
        Detached forward quantities of an array template (child path), e.g. ``alpha``.
    output : Tensor or None
        The output whose gradient is the received feedback (for ``record_feedback``).
    """

    __slots__ = ("aux", "generator_input", "inputs", "mode", "output", "prediction", "record")

    def __init__(self, mode: str = "plain", record: Record | None = None) -> None:
        self.mode = mode
        self.record = record
        self.inputs: tuple | None = None
        self.generator_input: torch.Tensor | None = None
        self.prediction: torch.Tensor | None = None
        self.aux: dict | None = None
        self.output: torch.Tensor | None = None

    @property
    def received(self) -> torch.Tensor | None:
        """The feedback the node received in the last backward (None before one)."""
        return None if self.record is None else self.record.received

    def __repr__(self) -> str:
        return f"NodeTrace(mode={self.mode!r}, record={self.record!r})"


class StateTrace:
    """A recurrent state array's part of a forward: one record and prediction per step.

    Attributes
    ----------
    mode : str
        The path the state ran.
    records, predictions : list
        Per step ``t``: the record (``received [N, B, q]``) and ``ĥ_t [N, B, q]``.
    step_inputs : list of tuple
        Per step: detached ``(u [N, B, F q], e [B, d_in] or None, alpha [N, B, M])``.
    prediction_all, fed_all : Tensor or None
        ``[N, T B, q]``: every step's prediction (with its graph), and the ``ĥ`` the mixers used
        (0 on padding steps; detached) — child path.
    thetas : Tensor or None
        ``[T, N]`` the per-step θ of a child-path forward.
    u_all, e_all, alpha_all : Tensor or None
        The steps' detached inputs ``[N, T B, F q]``, ``[T B, d_in]``, routing weights ``[N, T B, M]``.
    y_steps : list
        Per step, the detached slot outputs ``[N, B, M, q]`` (child path).
    """

    __slots__ = ("alpha_all", "e_all", "fed_all", "mode", "prediction_all", "predictions", "records",
                 "step_inputs", "thetas", "u_all", "y_steps")

    def __init__(self, mode: str = "plain") -> None:
        self.mode = mode
        self.records: list[Record] = []
        self.predictions: list[torch.Tensor] = []
        self.step_inputs: list[tuple] = []
        self.prediction_all: torch.Tensor | None = None
        self.fed_all: torch.Tensor | None = None
        self.thetas: torch.Tensor | None = None
        self.u_all: torch.Tensor | None = None
        self.e_all: torch.Tensor | None = None
        self.alpha_all: torch.Tensor | None = None
        self.y_steps: list[torch.Tensor] = []


class Trace:
    """The record of one grad-enabled forward, owned by the net for the current step.

    Attributes
    ----------
    nodes : dict
        Node (or array) name -> :class:`NodeTrace`.
    state : StateTrace or None
        A recurrent cell's state array (None for a layered graph).
    """

    def __init__(self) -> None:
        self.nodes: dict[str, NodeTrace] = {}
        self.state: StateTrace | None = None
        self.state_name: str | None = None
        self._adapted_on: tuple | None = None
        self._generators_stepped = False

    def node(self, name: str, mode: str, check_finite: bool = True) -> NodeTrace:
        """A fresh entry for ``name`` (its record named after the node)."""
        entry = self.nodes[name] = NodeTrace(mode, Record(name, check_finite))
        return entry

    # ------------------------------------------------------------------ reading
    def feedback(self) -> tuple[torch.Tensor, ...]:
        """Every received feedback tensor of the last backward (the identity of that backward)."""
        got = [e.record.received for e in self.nodes.values() if e.record is not None and e.record.received is not None]
        if self.state is not None:
            got += [r.received for r in self.state.records if r.received is not None]
        return tuple(got)

    def has_feedback(self) -> bool:
        """Whether a backward since this forward recorded feedback at some node or step."""
        return bool(self.feedback())

    def records(self) -> dict[str, Record]:
        """Records by node; a state's per step as ``name@t`` (``t`` from 1)."""
        out = {n: e.record for n, e in self.nodes.items() if e.record is not None}
        if self.state is not None:
            out.update({r.node: r for r in self.state.records})
        return out

    def mode(self, name: str) -> str:
        """The path ``name`` ran (``plain`` when it did not run in this forward)."""
        if self.state is not None and name == self.state_name:
            return self.state.mode
        entry = self.nodes.get(name)
        return "plain" if entry is None else entry.mode

    # ------------------------------------------------------------ consumption
    def adapted_already(self) -> bool:
        """Whether adaptive λ already ran on exactly this backward's feedback."""
        done = self._adapted_on
        now = self.feedback()
        return done is not None and len(done) == len(now) and all(a is b for a, b in zip(done, now))

    def mark_adapted(self) -> None:
        self._adapted_on = self.feedback()

    @property
    def generators_stepped(self) -> bool:
        """Whether the generators already took their step on this forward's predictions."""
        return self._generators_stepped

    def mark_generators_stepped(self, value: bool = True) -> None:
        self._generators_stepped = value
