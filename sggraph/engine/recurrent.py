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

from collections.abc import Mapping

import torch
from torch import nn

from ..core.unroll import Cell
from ..exceptions import CompileError, DimensionError, LambdaError
from .blocks import NodeBlock, StateBlock, check_generators, check_inputs, first_parameter, split_ref, synthetic_vjp
from .functions import make_function
from .generators import LinearGenerator, call_generator
from .lam.table import GROUPINGS, LambdaTable
from .mixing import InMix, OutMix, ParamMix, Record, RecordGrad
from .net import CompiledBase
from .neuron import RecurrentSlotArray, RecurrentSlotGenerator
from .trace import StateTrace, Trace

__all__ = ["GENERATOR_TARGETS", "CompiledCell", "RecurrentSlotArray", "RecurrentSlotGenerator", "compile_cell",
           "temporal_schedule"]

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


class CompiledCell(CompiledBase):
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
    lambdas, trace
        The λ table and the last grad-enabled forward's trace, as for :class:`~sggraph.CompiledGraph`.
    """

    recurrent = True

    def __init__(self, cell: Cell, functions: Mapping[str, nn.Module] | None = None,
                 generators: Mapping[str, nn.Module] | None = None, grouping: str = "child",
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
        self.state = StateBlock(st.name, st.parent_table(), st.count, st.dim, st.input_neurons, fn, gen)
        used = {split_ref(p)[0] for n in self.post.values() for p in n.parents}
        self.terminals = [n for n in self.post if n not in used]
        self.final_state: torch.Tensor | None = None
        self.lambdas = LambdaTable(self, sources=cell.inputs, what="cell", cell_input=st.input)
        self.trace = Trace()

    def _run_node(self, block: NodeBlock, values: dict[str, torch.Tensor]) -> torch.Tensor:
        return block.run(values, self._node_entry(block, plain=block.name in self.plain_nodes))

    @property
    def blocks(self) -> dict[str, nn.Module]:
        out: dict[str, nn.Module] = dict(self.pre.items())
        out[self.state.name] = self.state
        out.update(self.post.items())
        return out

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
        if torch.is_grad_enabled():  # a new step: this forward's trace replaces the last one
            self.trace = Trace()
        for name, block in self.pre.items():
            values[name] = self._run_node(block, values)
        mode = self._mode(st.name)  # "plain" under no_grad: an evaluation forward keeps the trace
        tr = StateTrace(mode)
        if torch.is_grad_enabled():
            self.trace.state, self.trace.state_name = tr, st.name
        fn, gen = st.function, st.generator
        e_all = values[self.cell.state.input] if self.cell.state.input is not None else None  # type: ignore
        width = fn.slots + fn.slots * fn.dim
        e_proj = e_gen = None
        if e_all is not None and mode != "general":
            e_proj = fn.project_input(e_all).reshape(st.input_neurons, t_steps, batch, width)
        if e_all is not None and mode != "plain":
            e_gen = call_generator(gen.project_input, e_all.detach())
            e_gen = e_gen.reshape(st.input_neurons, t_steps, batch, e_gen.shape[-1])
        # unbind once: slicing per step would make each step's backward zero-fill the whole tensor
        e_steps = [None] * t_steps if e_proj is None else e_proj.unbind(1)
        e_rows = [None] * t_steps if e_all is None else e_all.detach().view(t_steps, batch, e_all.shape[-1]).unbind(0)
        thetas = tr.thetas = self.schedule(t_steps, horizon) if mode == "child" else None
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
                tr.records.append(rec)
                tr.step_inputs.append((u.detach(), e_rows[t], aux["alpha"].detach()))
                if "y" in aux:
                    tr.y_steps.append(aux["y"].detach())
                h = OutMix.apply(out, thetas[t].view(-1, 1, 1), rec)  # type: ignore[index]
            else:
                h = self._general_step(tr, u, e_all, t, t_steps, batch, None if valid is None else valid[t])
            hs.append(h)
        if mode == "child":
            u_all = tr.u_all = torch.cat([x[0] for x in tr.step_inputs], dim=1)  # [N, T B, F q]
            tr.e_all = None if e_all is None else e_all.detach()  # [T B, d_in]
            alpha_all = tr.alpha_all = torch.cat([x[2] for x in tr.step_inputs], dim=1)
            e_gen_all = None if e_gen is None else e_gen.reshape(st.input_neurons, t_steps * batch, e_gen.shape[-1])
            pred_all = tr.prediction_all = call_generator(gen.step, u_all, e_gen_all, alpha_all)
            fed = pred_all if valid is None else pred_all * valid.reshape(1, t_steps * batch, 1).to(pred_all.dtype)
            tr.fed_all = fed.detach()
            tr.predictions = list(fed.split(batch, dim=1)) if batch else [fed] * t_steps  # an empty batch: empty steps
            for rec, pred in zip(tr.records, tr.predictions):
                rec.synthetic_output = pred.detach()
        self.final_state = h.transpose(0, 1)
        values[st.name] = torch.stack(hs, dim=1).reshape(st.count, t_steps * batch, st.dim)
        for name, block in self.post.items():
            values[name] = self._run_node(block, values)
        return {n: values[n].view(t_steps, batch, values[n].shape[-1]) for n in self.terminals}

    def _general_step(self, tr: StateTrace, u_raw, e_all, t, t_steps, batch, valid_t=None):
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
            e_t = e_all.view(t_steps, batch, e_all.shape[-1])[t]
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
        tr.records.append(rec)
        tr.predictions.append(pred)
        tr.step_inputs.append((u_raw.detach(), None if e_t is None else e_t.detach(), aux["alpha"].detach()))
        return RecordGrad.apply(out, rec)

    # ------------------------------------------------------------- the state's generator loss
    def _state_generator_loss(self, valid: torch.Tensor | None) -> torch.Tensor | None:
        """The state's part of :meth:`generator_loss` (the mean over steps; see there)."""
        tr, name = self.trace.state, self.state.name
        if tr is None:
            return None
        received = [r.received for r in tr.records]
        mixed = self.generator_target == "mixed"
        if mixed and tr.records and tr.mode != "child":
            raise LambdaError("generator_target='mixed' needs the child path (one θ per neuron and step)",
                              node=name, fix="compile with grouping='child' and keep λ per neuron, or use "
                                             "generator_target='received'")
        if received and all(r is not None for r in received) and tr.prediction_all is not None:
            target = torch.cat(received, dim=1)  # [N, T B, q]
            if target.numel() == 0:
                return None
            if mixed:
                assert tr.thetas is not None and tr.fed_all is not None
                batch = target.shape[1] // tr.thetas.shape[0]
                theta = tr.thetas.t().repeat_interleave(batch, dim=1).unsqueeze(-1).to(target)  # [N, T B, 1]
                target = torch.lerp(tr.fed_all, target, theta)  # what the mixers passed on
            err = (tr.prediction_all - target) ** 2  # [N, T B, q]
            if valid is None:
                return torch.mean(err)  # = mean over steps
            w = valid.reshape(1, -1, 1).to(err.dtype)
            return (err * w).sum() / (w.sum() * err.shape[0] * err.shape[2]).clamp_min(1)
        pairs = [(p, r.received) for p, r in zip(tr.predictions, tr.records) if r.received is not None and p.numel()]
        if pairs:
            return torch.stack([torch.mean((p - r) ** 2) for p, r in pairs]).mean()
        return None

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.model_parameters())
        return (f"CompiledCell({self.cell.name!r}, state={self.state.count}x{self.state.dim}, params={n}, "
                f"grouping={self.grouping!r}, rho={self.rho})")


def compile_cell(cell: Cell, functions: Mapping[str, nn.Module] | None = None,
                 generators: Mapping[str, nn.Module] | None = None, *, grouping: str = "child",
                 rho: float | None = 0.1, generator_target: str = "received") -> CompiledCell:
    """Compile a recurrent cell (see :class:`CompiledCell`).

    The default grouping is ``child`` (one θ per state neuron, the paper's POPGym code): the one
    whose :meth:`~CompiledCell.adapt_lambda` a cell has. ``edge`` and ``parent`` set and mix λ as for a
    graph (a cell ties an edge's write to its child's in-edges) but do not adapt it.
    """
    return CompiledCell(cell, functions, generators, grouping, rho, generator_target)
