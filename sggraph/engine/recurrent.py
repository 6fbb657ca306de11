"""Compile a recurrent :class:`~sggraph.core.unroll.Cell`: BPTT with the same per-edge mixing on every step.

The compiled cell runs ``T`` steps of the state array (one batched slot-neuron step per
time step, parents gathered from the previous state), with per-step reset masks (episode
starts zero the state, which also cuts the gradient there). Pre nodes (an embedding) and
post nodes (an actor head) run once over all ``T·B`` rows — exact, since their weights do
not change with ``t``. The external input reaches only the neurons wired to it
(``input_neurons``): its projection is one matmul for those neurons alone.

Every unrolled edge ``state@t−1:j → state@t:i`` carries the cell edge's ``λ``; under the
``child`` grouping the temporal schedule of App. H.4 turns the base ``θ_i`` into
per-step ``θ_{t,i}``: ``θ_T = θ``, ``θ_{t,i} = min(1, θ_{t+1,i} + ρ δ_{t+1,i})`` with
``δ_{t+1,i}`` the mean of ``1 − θ_{t+1,j}`` over ``i``'s children ``j``.

>>> import torch
>>> from sggraph.core.unroll import Cell
>>> cell = Cell("rnn"); cell.add_input("obs", 3)
>>> cell.set_state("h", count=6, dim=2, fan_in=2, slots=2, input="obs", input_neurons=2)
>>> cell.add_node("act", 4, ["h"], fn="linear")
>>> net = compile_cell(cell, grouping="child")
>>> out = net({"obs": torch.randn(5, 3, 3)})     # T = 5 steps, B = 3 sequences
>>> out["act"].shape
torch.Size([5, 3, 4])
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import torch
from torch import nn

from ..core.unroll import Cell
from ..exceptions import CompileError, DimensionError, LambdaError
from .blocks import (
    GROUPINGS,
    NodeBlock,
    block_parameters,
    check_generators,
    check_inputs,
    check_lambda_value,
    first_parameter,
    guard_lambda_write,
    split_ref,
    step_on,
    synthetic_vjp,
)
from .functions import make_function
from .generators import LinearGenerator, call_generator
from .lambdas import (
    check_momentum,
    has_forward_tensors,
    momentum_update,
    no_feedback_error,
    recurrent_state_lambda,
    state_lambda_from_forward,
)
from .mixing import InMix, OutMix, ParamMix, Record, RecordGrad
from .neuron import RecurrentSlotArray, RecurrentSlotGenerator, gather_by_table

__all__ = ["GENERATOR_TARGETS", "CompiledCell", "RecurrentSlotArray", "RecurrentSlotGenerator", "compile_cell",
           "state_lambda_from_forward", "temporal_schedule"]

#: What the state's generator regresses onto: the feedback the state received (``g̃``, the
#: engine's bootstrapped target, §3.5) or the mixture it passed on, ``θ_t g̃ + (1 − θ_t) ĥ``
#: (the authors' POPGym code, ``child`` path only).
GENERATOR_TARGETS = ("received", "mixed")


def temporal_schedule(theta: torch.Tensor, children: torch.Tensor, steps: int, rho: float = 0.1) -> torch.Tensor:
    """Per-step weights ``[T, N]`` from base ``θ [N]`` (App. H.4).

    ``children[i, j] = 1 / |C(i)|`` when ``j`` is a child of ``i`` (rows of childless
    neurons are zero). ``θ_T = θ``; ``θ_t = min(1, θ_{t+1} + ρ · children @ (1 − θ_{t+1}))``.

    >>> c = torch.tensor([[0.0, 1.0], [0.0, 0.0]], dtype=torch.float64)  # neuron 0's only child: 1
    >>> temporal_schedule(torch.tensor([0.5, 0.2], dtype=torch.float64), c, steps=3, rho=0.5).tolist()
    [[1.0, 0.2], [0.9, 0.2], [0.5, 0.2]]
    """
    out = [theta]
    for _ in range(steps - 1):
        nxt = out[-1]
        out.append(torch.clamp(nxt + rho * (children @ (1 - nxt)), max=1.0))
    return torch.stack(out[::-1])


class _StateBlock(nn.Module):
    def __init__(self, name: str, table: np.ndarray, count: int, dim: int, input_neurons: int,
                 function: RecurrentSlotArray, generator: RecurrentSlotGenerator) -> None:
        super().__init__()
        self.name, self.count, self.dim, self.input_neurons = name, count, dim, input_neurons
        self.fan_in = int(table.shape[1])
        self.function, self.generator = function, generator
        self.register_buffer("table", torch.as_tensor(table, dtype=torch.long), persistent=False)
        self.register_buffer("flat_table", self.table.flatten(), persistent=False)
        children = torch.zeros(count, count)
        for i in range(count):
            for j in table[i]:
                children[int(j), i] = 1.0
        children = children / children.sum(1, keepdim=True).clamp_min(1)
        self.register_buffer("child_mean", children, persistent=False)
        self.register_buffer("lam", torch.ones(count, self.fan_in + 1))  # column F: the input edge
        self.register_buffer("lam_self", torch.ones(count))
        self.records: list[Record] = []
        self.predictions: list[torch.Tensor] = []
        self.step_inputs: list[tuple] = []
        self.prediction_all: torch.Tensor | None = None
        self.fed_all: torch.Tensor | None = None  # [N, T B, q] the ĥ the mixers used (0 on padding)
        self.thetas: torch.Tensor | None = None  # [T, N] the per-step θ of the last child-path forward
        self.u_all: torch.Tensor | None = None  # [N, T B, F q] detached recurrent inputs (child path)
        self.e_all: torch.Tensor | None = None  # [T B, d_in] detached external input (child path)
        self.alpha_all: torch.Tensor | None = None  # [N, T B, M] detached routing weights (child path)
        self.y_steps: list[torch.Tensor] = []  # per step [N, B, M, q] detached slot outputs (child path)
        self.mode = "plain"

    def gather(self, prev: torch.Tensor) -> torch.Tensor:
        return gather_by_table(prev, self.flat_table, self.count, self.fan_in)

    def modes(self) -> str:
        lam = self.lam.clone()
        lam[self.input_neurons:, self.fan_in] = self.lam_self[self.input_neurons:]  # unused column
        return "child" if bool((lam == self.lam_self.unsqueeze(1)).all()) else "general"


class CompiledCell(nn.Module):
    """A compiled recurrent cell (see the module docstring).

    Call with ``inputs[name]`` of shape ``[T, B, dim]`` and optional ``resets [T, B]`` (bool:
    the state is zeroed before step ``t`` where true). Returns every terminal post node's
    output ``[T, B, dim]``; the last state ``[B, N, q]`` is in :attr:`final_state`.

    Attributes
    ----------
    cell : Cell
    grouping : str
    rho : float or None
        Temporal-schedule coefficient (``child`` grouping); None switches the schedule off.
    synthetic, check_finite : bool
        As for :class:`~sggraph.CompiledGraph`.
    plain_nodes : set of str
        Pre / post nodes that always run plain backprop (no generator, no mixing), e.g. an
        embedding and an actor head kept at ``λ = 1``.
    generator_target : {'received', 'mixed'}
        The state generator's regression target (:data:`GENERATOR_TARGETS`); default
        ``received``, the engine's rule.
    """

    def __init__(self, cell: Cell, functions: Mapping[str, nn.Module] | None = None,
                 generators: Mapping[str, nn.Module] | None = None, grouping: str = "edge",
                 rho: float | None = 0.1, generator_target: str = "received") -> None:
        super().__init__()
        if grouping not in GROUPINGS:
            raise CompileError(f"unknown grouping '{grouping}'", fix=f"use one of {', '.join(GROUPINGS)}")
        if generator_target not in GENERATOR_TARGETS:
            raise CompileError(f"unknown generator_target '{generator_target}'",
                               fix=f"use one of {', '.join(GENERATOR_TARGETS)}")
        self.generator_target = generator_target
        stages = cell.stages()
        cell.levels()
        st = cell.state
        assert st is not None
        self.cell, self.grouping, self.rho = cell, grouping, rho
        self.synthetic, self.check_finite = True, True
        self.plain_nodes: set[str] = set()
        functions, generators = dict(functions or {}), dict(generators or {})
        check_generators({k: v for k, v in generators.items() if k != st.name})
        dims = dict(cell.inputs)
        dims.update({n: node.dim for n, node in cell.nodes.items()})
        dims[st.name] = st.count * st.dim
        self.pre = nn.ModuleDict()
        self.post = nn.ModuleDict()
        for name, node in cell.nodes.items():
            pdims = [st.dim if split_ref(p)[1] is not None else dims[p] for p in node.parents]
            if name in functions:
                fn = functions[name]
            elif node.fn is not None:
                fn = make_function(node.fn, sum(pdims), node.dim, node=name)
            else:
                raise CompileError("no function for this node", node=name,
                                   fix=f"give fn=..., or compile_cell(cell, functions={{'{name}': module}})")
            gen = generators.get(name) or LinearGenerator(sum(pdims), node.dim)
            (self.pre if stages[name] == "pre" else self.post)[name] = NodeBlock(name, node.parents, pdims,
                                                                                   node.dim, fn, gen)
        input_dim = dims[st.input] if st.input is not None else 0
        fn = functions.get(st.name) or RecurrentSlotArray(st.count, st.fan_in * st.dim, st.dim, st.slots,
                                                          st.input_neurons, input_dim, scale_dim=st.scale_dim)
        gen = generators.get(st.name) or RecurrentSlotGenerator(st.count, st.fan_in * st.dim, st.dim, st.slots,
                                                                st.input_neurons, input_dim)
        self.state = _StateBlock(st.name, st.parent_table(), st.count, st.dim, st.input_neurons, fn, gen)
        used = {split_ref(p)[0] for n in self.post.values() for p in n.parents}
        self.terminals = [n for n in self.post if n not in used]
        self.final_state: torch.Tensor | None = None

    # the interface NodeBlock.run expects of its net
    def mode_for(self, block) -> str:
        if not self.synthetic or not torch.is_grad_enabled() or block.name in self.plain_nodes:
            return "plain"
        return block.modes()

    @property
    def blocks(self) -> dict[str, nn.Module]:
        out: dict[str, nn.Module] = dict(self.pre.items())
        out[self.state.name] = self.state
        out.update(self.post.items())
        return out

    def model_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the node functions and the state array (what the model optimizer updates).
        ``net.parameters()`` holds the generators' too (:meth:`generator_parameters`): give the model's optimizer
        these."""
        return block_parameters(self.blocks, "function")

    def generator_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the generators."""
        return block_parameters(self.blocks, "generator")

    def schedule(self, steps: int, horizon: int | None = None) -> torch.Tensor:
        """The per-step ``θ [T, N]`` of the state neurons for the first ``steps`` steps.

        The schedule is anchored at ``horizon`` (default ``steps``): base θ at step ``horizon``,
        rising towards step 1; with ``horizon > steps`` only its first ``steps`` rows are used
        (the authors anchor it at the rollout length, however early the episodes ended).
        """
        theta = self.state.lam_self
        if self.grouping != "child" or self.rho is None:
            return theta.unsqueeze(0).expand(steps, -1)
        length = steps if horizon is None else max(int(horizon), steps)
        return temporal_schedule(theta, self.state.child_mean, length, self.rho)[:steps]

    def forward(self, inputs: Mapping[str, torch.Tensor], resets: torch.Tensor | None = None,
                state: torch.Tensor | None = None, valid: torch.Tensor | None = None,
                horizon: int | None = None) -> dict[str, torch.Tensor]:
        """Run the cell (see the class docstring); ``valid [T, B]`` (bool) marks the steps inside
        episodes (padding steps get no synthetic feedback), ``horizon`` anchors the temporal
        schedule (see :meth:`schedule`)."""
        st = self.state
        check_inputs(inputs, list(self.cell.inputs), "the cell", self.check_finite, first_parameter(self))
        first = next(iter(self.cell.inputs))
        t_steps, batch = inputs[first].shape[:2]
        values: dict[str, torch.Tensor] = {}
        for name, dim in self.cell.inputs.items():
            x = inputs.get(name)
            if x is None or x.dim() != 3 or x.shape != (t_steps, batch, dim):
                raise DimensionError(f"expected an input of shape [T={t_steps}, B={batch}, {dim}]", node=name,
                                     fix="pass every cell input as a [T, B, dim] tensor")
            values[name] = x.reshape(t_steps * batch, dim)
        for name, block in self.pre.items():
            values[name] = block.run(values, self)
        mode = self.mode_for(st)  # "plain" under no_grad: an evaluation forward keeps the records
        if torch.is_grad_enabled():
            st.mode = mode
            st.records, st.predictions, st.step_inputs, st.prediction_all, st.fed_all = [], [], [], None, None
            st.u_all = st.e_all = st.alpha_all = None
            st.y_steps = []
        fn, gen = st.function, st.generator
        e_all = values[self.cell.state.input] if self.cell.state.input is not None else None  # type: ignore
        width = fn.slots + fn.slots * fn.dim
        e_proj = e_gen = None
        if e_all is not None and mode != "general":
            e_proj = fn.project_input(e_all).reshape(st.input_neurons, t_steps, batch, width)
        if e_all is not None and mode != "plain":
            e_gen = call_generator(gen.project_input, e_all.detach()).reshape(st.input_neurons, t_steps, batch, -1)
        # unbind once: slicing per step would make each step's backward zero-fill the whole tensor
        e_steps = [None] * t_steps if e_proj is None else e_proj.unbind(1)
        e_rows = [None] * t_steps if e_all is None else e_all.detach().view(t_steps, batch, -1).unbind(0)
        thetas = self.schedule(t_steps, horizon) if mode == "child" else None
        if torch.is_grad_enabled():
            st.thetas = thetas
        h = torch.zeros(st.count, batch, st.dim, dtype=self.state.lam.dtype, device=self.state.lam.device) \
            if state is None else state.transpose(0, 1)
        hs = []
        for t in range(t_steps):
            if resets is not None:
                h = h * (~resets[t].bool()).to(h.dtype).view(1, batch, 1)
            u = st.gather(h)
            if mode == "plain":
                h, _ = fn.step(u, e_steps[t])
            elif mode == "child":  # ĥ_t is filled in after the loop, in one batched generator call
                out, aux = fn.step(u, e_steps[t])
                rec = Record(f"{st.name}@{t + 1}", self.check_finite)
                st.records.append(rec)
                st.step_inputs.append((u.detach(), e_rows[t], aux["alpha"].detach()))
                if "y" in aux:
                    st.y_steps.append(aux["y"].detach())
                h = OutMix.apply(out, thetas[t].view(-1, 1, 1), rec)  # type: ignore[index]
            else:
                h = self._general_step(u, e_all, t, t_steps, batch, None if valid is None else valid[t])
            hs.append(h)
        if mode == "child":
            u_all = st.u_all = torch.cat([x[0] for x in st.step_inputs], dim=1)  # [N, T B, F q]
            st.e_all = None if e_all is None else e_all.detach()  # [T B, d_in]
            alpha_all = st.alpha_all = torch.cat([x[2] for x in st.step_inputs], dim=1)
            e_gen_all = None if e_gen is None else e_gen.reshape(st.input_neurons, t_steps * batch, -1)
            pred_all = st.prediction_all = call_generator(gen.step, u_all, e_gen_all, alpha_all)
            fed = pred_all if valid is None else pred_all * valid.reshape(1, t_steps * batch, 1).to(pred_all.dtype)
            st.fed_all = fed.detach()
            st.predictions = list(fed.split(batch, dim=1))
            for rec, pred in zip(st.records, st.predictions):
                rec.synthetic_output = pred.detach()
        self.final_state = h.transpose(0, 1)
        values[st.name] = torch.stack(hs, dim=1).reshape(st.count, t_steps * batch, st.dim)
        for name, block in self.post.items():
            values[name] = block.run(values, self)
        return {n: values[n].view(t_steps, batch, -1) for n in self.terminals}

    def _general_step(self, u_raw, e_all, t, t_steps, batch, valid_t=None):
        st = self.state
        fn, gen = st.function, st.generator
        rec = Record(f"{st.name}@{t + 1}", self.check_finite)
        f, q = st.fan_in, st.dim
        u = InMix.apply(u_raw, st.lam[:, :f].repeat_interleave(q, dim=1).unsqueeze(1), rec, 0)
        params = {}
        if bool((st.lam_self != 1).any()):
            params = {n: ParamMix.apply(p, st.lam_self.view(-1, *([1] * (p.dim() - 1)))[: p.shape[0]], rec, n)
                      for n, p in fn.named_parameters()}
        inputs = {0: u}
        e_proj = e_t = None
        if e_all is not None:
            e_t = e_all.view(t_steps, batch, -1)[t]
            e_exp = e_t.unsqueeze(0).expand(st.input_neurons, -1, -1)
            e_mixed = InMix.apply(e_exp, st.lam[: st.input_neurons, f:].unsqueeze(1), rec, 1)
            inputs[1] = e_mixed
            w_in = params.get("proj_in", fn.proj_in)
            e_proj = torch.bmm(e_mixed, w_in.transpose(1, 2))
        out, aux = fn.step(u, e_proj, params)
        e_gen = None if e_t is None else call_generator(gen.project_input, e_t.detach())
        pred = call_generator(gen.step, u_raw.detach(), e_gen, aux["alpha"])
        if valid_t is not None:
            pred = pred * valid_t.view(1, batch, 1).to(pred.dtype)
        synthetic_vjp(out, pred, rec, inputs, params)
        st.records.append(rec)
        st.predictions.append(pred)
        st.step_inputs.append((u_raw.detach(), None if e_t is None else e_t.detach(), aux["alpha"].detach()))
        return RecordGrad.apply(out, rec)

    # ------------------------------------------------------------- λ and generators
    @guard_lambda_write
    def set_lambda(self, value: float | torch.Tensor, edge: tuple[str, str] | None = None, *,
                   node: str | None = None) -> None:
        """Set λ: every edge (both None), all in-edges of a node (child grouping: θ too), or the
        in-edges of an edge's child (a cell ties a node's in-edges: ``edge=(u, v)`` sets ``v``'s).

        For the state, a ``[N]`` tensor sets per-neuron values.
        """
        check_lambda_value(value, "λ")
        if edge is not None and node is not None:
            raise LambdaError("give either edge or node, not both", fix="call set_lambda once per target")
        if edge is not None:
            if not (isinstance(edge, tuple) and len(edge) == 2):
                raise LambdaError(f"edge must be a (parent, child) pair, got {edge!r}", fix="pass edge=('u', 'v')")
            self.get_lambda(edge)  # the edge must exist
            node = split_ref(edge[1])[0]
        targets = list(self.blocks) if node is None else [node]
        for name in targets:
            if name not in self.blocks:
                raise LambdaError(f"'{name}' is not a node of the cell", node=name, fix="name a node or the state")
            block = self.blocks[name]
            v = value.to(block.lam) if isinstance(value, torch.Tensor) else float(value)
            with torch.no_grad():
                if isinstance(v, torch.Tensor) and v.dim() == 1 and block.lam.dim() == 2:
                    block.lam[:] = v.unsqueeze(1)
                else:
                    block.lam[...] = v
                if self.grouping == "child":
                    block.lam_self[...] = v

    @guard_lambda_write
    def set_self_lambda(self, value: float | torch.Tensor, node: str | None = None) -> None:
        """Set ``λ^self`` (the weight of the true feedback in a node's own parameter gradient, eq. 6);
        under the ``child`` grouping this is ``θ`` and also sets the node's in-edges."""
        check_lambda_value(value, "λ^self")
        if self.grouping == "child":
            self.set_lambda(value, node=node)
            return
        for name in list(self.blocks) if node is None else [node]:
            block = self.block(name)
            with torch.no_grad():
                block.lam_self[...] = value.to(block.lam_self) if isinstance(value, torch.Tensor) else float(value)

    def block(self, name: str) -> nn.Module:
        """The compiled block of a node or the state (raises :class:`~sggraph.LambdaError` for unknown names)."""
        if name not in self.blocks:
            raise LambdaError(f"'{name}' is not a node of the cell", node=name, fix="name a node or the state")
        return self.blocks[name]

    def get_lambda(self, edge: tuple[str, str]) -> float | torch.Tensor:
        """The weight of one edge (float), or of several (tensor): ``(h[j], h[i])`` between state
        neurons, ``(input, h[i])`` the input edge of neuron ``i``, ``(h, h)`` the whole state table
        ``[N, F + 1]``, ``(u, v)`` for pre/post nodes."""
        parent, child = edge
        (cb, ci), (pb, pi) = split_ref(child), split_ref(parent)
        block, st = self.block(cb), self.state
        if block is st:
            if ci is None:
                vals = st.lam if pb == st.name else st.lam[:, st.fan_in]
                return vals.clone()
            cols = torch.zeros(st.fan_in + 1, dtype=torch.bool, device=st.lam.device)
            if pb == st.name:
                cols[: st.fan_in] = True if pi is None else st.table[ci] == pi
            else:
                cols[st.fan_in] = ci < st.input_neurons and pb == self.cell.state.input  # type: ignore[union-attr]
            vals = st.lam[ci, cols]
        else:
            vals = block.lam[[k for k, p in enumerate(block.parents) if p == parent or split_ref(p)[0] == parent]]
        if vals.numel() == 0:
            raise LambdaError(f"there is no edge {parent} -> {child}", node=child,
                              fix="name an existing (parent, child) pair; state neurons are name[i]")
        first = vals.flatten()[0]
        return float(first) if bool((vals == first).all()) else vals.clone()

    def get_self_lambda(self, node: str) -> float | torch.Tensor:
        """``λ^self`` of a node (float) or of the state (``[N]`` tensor; ``h[i]``: one neuron)."""
        base, idx = split_ref(node)
        lam_self = self.block(base).lam_self
        if idx is not None:
            return float(lam_self[idx])
        return float(lam_self) if lam_self.dim() == 0 else lam_self.clone()

    # ------------------------------------------------------------- read API
    def edge_lambdas(self) -> dict[str, torch.Tensor]:
        """Every node's in-edge weights (copies): pre/post ``[P]``; the state ``[N, F + 1]`` (column ``F``: the
        input edge)."""
        return {name: b.lam.detach().clone() for name, b in self.blocks.items()}

    def self_lambdas(self) -> dict[str, torch.Tensor]:
        """Every node's ``λ^self`` (copies; the state's ``[N]`` is its base ``θ``)."""
        return {name: b.lam_self.detach().clone() for name, b in self.blocks.items()}

    def records(self) -> dict[str, Record]:
        """The feedback records of the last forward: pre/post nodes by name, the state per step as
        ``name@t`` (``t`` from 1); ``record.received`` is what the last backward delivered."""
        out = {n: b.record for n, b in list(self.pre.items()) + list(self.post.items()) if b.record is not None}
        out.update({r.node: r for r in self.state.records})
        return out

    def paths(self) -> dict[str, str]:
        """The path each node ran in the last grad-enabled forward: ``plain``, ``child`` or ``general``."""
        return {name: b.mode for name, b in self.blocks.items()}

    def has_feedback(self) -> bool:
        """Whether a backward since the last grad-enabled forward recorded feedback at some node or step."""
        nodes = list(self.pre.values()) + list(self.post.values())
        return any(b.record is not None and b.record.received is not None for b in nodes) \
            or any(r.received is not None for r in self.state.records)

    def generator_loss(self, valid: torch.Tensor | None = None) -> torch.Tensor:
        """MSE of every generator against its target, summed over nodes (the state's mean over steps).

        The target is the feedback the node received; for the state with
        ``generator_target="mixed"`` it is the mixture the state passed on,
        ``θ_t g̃ + (1 − θ_t) ĥ`` (ĥ detached). ``valid [T, B]`` (bool, optional) restricts the
        state's regression to those samples, e.g. the steps inside episodes (padding steps
        receive zero feedback): the masked MSE is normalised by the valid elements.
        """
        total = torch.zeros(())
        for block in list(self.pre.values()) + list(self.post.values()):
            rec, pred = block.record, block.prediction
            if rec is not None and pred is not None and rec.received is not None:
                total = total + torch.mean((pred - rec.received) ** 2)
        st = self.state
        received = [r.received for r in st.records]
        mixed = self.generator_target == "mixed"
        if mixed and st.records and st.mode != "child":
            raise LambdaError("generator_target='mixed' needs the child path (one θ per neuron and step)",
                              node=st.name, fix="compile with grouping='child' and keep λ per neuron, or use "
                                                "generator_target='received'")
        if received and all(r is not None for r in received) and st.prediction_all is not None:
            target = torch.cat(received, dim=1)  # [N, T B, q]
            if mixed:
                assert st.thetas is not None and st.fed_all is not None
                batch = target.shape[1] // st.thetas.shape[0]
                theta = st.thetas.t().repeat_interleave(batch, dim=1).unsqueeze(-1).to(target)  # [N, T B, 1]
                target = torch.lerp(st.fed_all, target, theta)  # what the mixers passed on
            err = (st.prediction_all - target) ** 2  # [N, T B, q]
            if valid is None:
                total = total + torch.mean(err)  # = mean over steps
            else:
                w = valid.reshape(1, -1, 1).to(err.dtype)
                total = total + (err * w).sum() / (w.sum() * err.shape[0] * err.shape[2]).clamp_min(1)
        else:
            pairs = [(p, r.received) for p, r in zip(st.predictions, st.records) if r.received is not None]
            if pairs:
                total = total + torch.stack([torch.mean((p - r) ** 2) for p, r in pairs]).mean()
        return total

    def update_generators(self, optimizer: torch.optim.Optimizer | None = None,
                          valid: torch.Tensor | None = None, max_norm: float | None = None) -> float:
        """One optimizer step of the generators on the last backward's targets (see :meth:`generator_loss`).

        ``max_norm``: clip the generators' gradient norm first (the authors' POPGym code: 0.5).
        Raises :class:`~sggraph.LambdaError` when no feedback was recorded.
        """
        if not self.has_feedback():
            raise no_feedback_error("update_generators")
        loss = self.generator_loss(valid)
        if not max_norm:
            return step_on(loss, optimizer)
        if optimizer is not None and loss.requires_grad:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, max_norm)
            optimizer.step()
        return float(loss.detach())

    def adapt_lambda(self, momentum: float = 0.9, normalize: bool | str = True,
                     max_samples: int | None = 128, valid: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Adapt the state neurons' base θ from the last backward.

        Every (step, sequence) pair is a sample of the per-step parameter gradients; the batch
        estimate of eq. 18 uses ``max_samples`` of them (the samples of ``⌈max_samples / B⌉``
        random steps; None: all ``T·B``, as the authors' POPGym code), then
        ``θ ← μ θ + (1 − μ) λ_batch``. ``valid [T, B]`` (bool, optional) keeps only those
        samples (e.g. steps inside episodes). ``normalize``: see :mod:`sggraph.engine.lambdas`
        (the authors' code: ``"feedback"``). Returns ``{state: λ_batch [N]}`` (NaN: kept; empty when
        ``valid`` leaves no sample).
        """
        check_momentum(momentum)
        if self.grouping != "child":
            raise LambdaError(f"a recurrent cell adapts λ under the 'child' grouping (one θ per state neuron), and this "
                              f"one uses '{self.grouping}'; the per-parent rule of 'parent' and 'edge' is for layered "
                              "graphs", fix="compile the cell with grouping='child'")
        st = self.state
        if not any(r.received is not None for r in st.records):
            raise no_feedback_error("adapt_lambda")
        usable = [i for i, r in enumerate(st.records) if r.received is not None]
        if valid is not None:
            usable = [i for i in usable if bool(valid[i].any())]
        if not usable:
            return {}
        if has_forward_tensors(st):
            lam_batch = state_lambda_from_forward(st, usable, normalize, max_samples, valid)
        else:
            lam_batch = recurrent_state_lambda(st, usable, normalize, max_samples, valid)
        momentum_update(st.lam_self, st.lam, lam_batch, momentum)
        return {st.name: lam_batch}

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.model_parameters())
        return (f"CompiledCell({self.cell.name!r}, state={self.state.count}x{self.state.dim}, params={n}, "
                f"grouping={self.grouping!r}, rho={self.rho})")


def compile_cell(cell: Cell, functions: Mapping[str, nn.Module] | None = None,
                 generators: Mapping[str, nn.Module] | None = None, *, grouping: str = "edge",
                 rho: float | None = 0.1, generator_target: str = "received") -> CompiledCell:
    """Compile a recurrent cell (see :class:`CompiledCell`)."""
    return CompiledCell(cell, functions, generators, grouping, rho, generator_target)
