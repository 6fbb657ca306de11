"""Compile a recurrent :class:`~sggraph.unroll.Cell`: BPTT with the same per-edge mixing on every step.

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
>>> from sggraph.unroll import Cell
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

import numpy as np
import torch
from torch import nn

from .compile import (
    GROUPINGS,
    _check_value,
    _NodeBlock,
    _split_ref,
    _synthetic_vjp,
    check_generators,
    step_on,
)
from .exceptions import CompileError, DimensionError, LambdaError
from .functions import make_function
from .generators import LinearGenerator
from .mixing import InMix, OutMix, ParamMix, Record, RecordGrad
from .neuron import gather_by_table, project_wired
from .unroll import Cell

__all__ = ["GENERATOR_TARGETS", "CompiledCell", "RecurrentSlotArray", "RecurrentSlotGenerator", "compile_cell",
           "state_lambda_from_forward", "temporal_schedule"]

#: What the state's generator regresses onto: the feedback the state received (``g̃``, the
#: engine's bootstrapped target, §3.5) or the mixture it passed on, ``θ_t g̃ + (1 − θ_t) ĥ``
#: (the authors' POPGym code, ``child`` path only).
GENERATOR_TARGETS = ("received", "mixed")


class RecurrentSlotArray(nn.Module):
    """Slot neurons whose input is ``fan_in`` neurons of the previous state, plus an external
    input for the first ``input_neurons`` neurons only.

    Parameters
    ----------
    count, rec_dim, dim, slots : int
        ``N``, ``F·q`` (previous-state input size), ``q``, ``M``.
    input_neurons, input_dim : int
        How many neurons read the external input, and its size.
    scale_dim : int, optional
        The ``d`` of every neuron's routing temperature ``1/√d`` and of its init std ``1/√d``
        (keys, slot maps, biases ~ N(0, 1/d)). None (default): each neuron's wired input size
        (``F·q``, plus ``d_in`` for the input neurons). ``F·q + d_in`` for all neurons is the
        authors' POPGym code, where every neuron's input is ``[parents, embedding]`` with the
        embedding masked to zero outside the input neurons; only what is wired is computed either way.

    Attributes
    ----------
    proj : ``[N, M + M·q, F·q]`` keys and slot maps on the recurrent input
    proj_in : ``[n_in, M + M·q, d_in]`` keys and slot maps on the external input
    bias : ``[N, M·q]``
    """

    def __init__(self, count: int, rec_dim: int, dim: int, slots: int, input_neurons: int = 0,
                 input_dim: int = 0, scale_dim: int | None = None) -> None:
        super().__init__()
        self.count, self.rec_dim, self.dim, self.slots = count, rec_dim, dim, slots
        self.input_neurons, self.input_dim, self.scale_dim = input_neurons, input_dim, scale_dim
        width = slots + slots * dim
        if scale_dim is None:
            total = torch.full((count,), float(rec_dim))
            total[:input_neurons] += input_dim
        else:
            if scale_dim < 1:
                raise CompileError(f"scale_dim must be positive, got {scale_dim}", fix="use e.g. F·q + d_in")
            total = torch.full((count,), float(scale_dim))
        std = total.rsqrt()
        self.proj = nn.Parameter(torch.randn(count, width, rec_dim) * std.view(-1, 1, 1))
        self.proj_in = nn.Parameter(torch.randn(input_neurons, width, input_dim) * std[:input_neurons].view(-1, 1, 1))
        self.bias = nn.Parameter(torch.randn(count, slots * dim) * std.view(-1, 1))
        # the integer fan-in is exact in any dtype; 1/√d is taken in the module's dtype when used
        self.register_buffer("fan_total", total, persistent=False)

    @property
    def scale(self) -> torch.Tensor:
        """Routing temperature ``1/√d_i`` per neuron ``[N]`` (``d_i``: see ``scale_dim``)."""
        return self.fan_total.rsqrt()

    def project_input(self, e: torch.Tensor, proj_in: torch.Tensor | None = None) -> torch.Tensor:
        """``e [R, d_in]`` → ``[n_in, R, M + M·q]`` (only the wired neurons)."""
        return project_wired(e, self.proj_in if proj_in is None else proj_in)

    def step(self, u: torch.Tensor, e_proj: torch.Tensor | None = None,
             params: Mapping[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, dict]:
        """One step: ``u [N, B, F·q]``, ``e_proj [n_in, B, M + M·q]`` → ``h [N, B, q]``, ``aux``."""
        p = params or {}
        proj, bias = p.get("proj", self.proj), p.get("bias", self.bias)
        n, b, _ = u.shape
        m = self.slots
        out = torch.bmm(u, proj.transpose(1, 2))
        if e_proj is not None and self.input_neurons:  # split, not slice: a slice's backward zero-fills
            wired, rest = out.split([self.input_neurons, n - self.input_neurons], dim=0)
            out = torch.cat([wired + e_proj, rest], dim=0)
        logits, slot = out.split([m, out.shape[-1] - m], dim=-1)
        alpha = torch.softmax(logits * self.scale.view(-1, 1, 1), dim=-1)
        y = torch.tanh(slot + bias.unsqueeze(1)).view(n, b, m, self.dim)
        return torch.matmul(alpha.unsqueeze(-2), y).squeeze(-2), {"alpha": alpha, "y": y}

    def extra_repr(self) -> str:
        scale = "" if self.scale_dim is None else f", scale_dim={self.scale_dim}"
        return (f"count={self.count}, rec_dim={self.rec_dim}, dim={self.dim}, slots={self.slots}, "
                f"input_neurons={self.input_neurons}, input_dim={self.input_dim}{scale}")


class RecurrentSlotGenerator(nn.Module):
    """Eq. 144 for the recurrent neurons: ``ĥ_i = Σ_s α_{i,s} (Ã_{i,s} [u_i, e] + b̃_{i,s})``, zero-initialised."""

    def __init__(self, count: int, rec_dim: int, dim: int, slots: int, input_neurons: int = 0,
                 input_dim: int = 0) -> None:
        super().__init__()
        self.slots, self.dim = slots, dim
        self.weight = nn.Parameter(torch.zeros(count, slots * dim, rec_dim))
        self.weight_in = nn.Parameter(torch.zeros(input_neurons, slots * dim, input_dim))
        self.bias = nn.Parameter(torch.zeros(count, slots * dim))

    def project_input(self, e: torch.Tensor) -> torch.Tensor:
        """``e [R, d_in]`` → ``[n_in, R, M·q]``."""
        return project_wired(e, self.weight_in)

    def step(self, u: torch.Tensor, e_proj: torch.Tensor | None, alpha: torch.Tensor) -> torch.Tensor:
        n, b, _ = u.shape
        pre = torch.baddbmm(self.bias.unsqueeze(1), u, self.weight.transpose(1, 2))
        if e_proj is not None and e_proj.shape[0]:  # split, not slice: a slice's backward zero-fills
            wired, rest = pre.split([e_proj.shape[0], n - e_proj.shape[0]], dim=0)
            pre = torch.cat([wired + e_proj, rest], dim=0)
        return (alpha.detach().unsqueeze(-1) * pre.view(n, b, self.slots, self.dim)).sum(2)


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
            pdims = [st.dim if _split_ref(p)[1] is not None else dims[p] for p in node.parents]
            if name in functions:
                fn = functions[name]
            elif node.fn is not None:
                fn = make_function(node.fn, sum(pdims), node.dim, node=name)
            else:
                raise CompileError("no function for this node", node=name,
                                   fix=f"give fn=..., or compile_cell(cell, functions={{'{name}': module}})")
            gen = generators.get(name) or LinearGenerator(sum(pdims), node.dim)
            (self.pre if stages[name] == "pre" else self.post)[name] = _NodeBlock(name, node.parents, pdims,
                                                                                   node.dim, fn, gen)
        input_dim = dims[st.input] if st.input is not None else 0
        fn = functions.get(st.name) or RecurrentSlotArray(st.count, st.fan_in * st.dim, st.dim, st.slots,
                                                          st.input_neurons, input_dim)
        gen = generators.get(st.name) or RecurrentSlotGenerator(st.count, st.fan_in * st.dim, st.dim, st.slots,
                                                                st.input_neurons, input_dim)
        self.state = _StateBlock(st.name, st.parent_table(), st.count, st.dim, st.input_neurons, fn, gen)
        used = {_split_ref(p)[0] for n in self.post.values() for p in n.parents}
        self.terminals = [n for n in self.post if n not in used]
        self.final_state: torch.Tensor | None = None

    # the interface _NodeBlock.run expects of its net
    def _mode_for(self, block) -> str:
        if not self.synthetic or not torch.is_grad_enabled() or block.name in self.plain_nodes:
            return "plain"
        return block.modes()

    @property
    def blocks(self) -> dict[str, nn.Module]:
        out: dict[str, nn.Module] = dict(self.pre.items())
        out[self.state.name] = self.state
        out.update(self.post.items())
        return out

    def model_parameters(self):
        """Parameters of the node functions and the state array."""
        for b in self.blocks.values():
            yield from b.function.parameters()

    def generator_parameters(self):
        """Parameters of the generators."""
        for b in self.blocks.values():
            yield from b.generator.parameters()

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
        mode = self._mode_for(st)  # "plain" under no_grad: an evaluation forward keeps the records
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
            e_gen = gen.project_input(e_all.detach()).reshape(st.input_neurons, t_steps, batch, -1)
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
            pred_all = st.prediction_all = gen.step(u_all, e_gen_all, alpha_all)
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
        e_gen = None if e_t is None else gen.project_input(e_t.detach())
        pred = gen.step(u_raw.detach(), e_gen, aux["alpha"])
        if valid_t is not None:
            pred = pred * valid_t.view(1, batch, 1).to(pred.dtype)
        _synthetic_vjp(out, pred, rec, inputs, params)
        st.records.append(rec)
        st.predictions.append(pred)
        st.step_inputs.append((u_raw.detach(), None if e_t is None else e_t.detach(), aux["alpha"].detach()))
        return RecordGrad.apply(out, rec)

    # ------------------------------------------------------------- λ and generators
    def set_lambda(self, value: float | torch.Tensor, node: str | None = None) -> None:
        """Set λ: every edge (``node=None``), or all in-edges of a node (child grouping: θ too).

        For the state, a ``[N]`` tensor sets per-neuron values.
        """
        _check_value(value, "λ")
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
            from .lambdas import no_feedback_error

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
                     max_samples: int | None = 128, valid: torch.Tensor | None = None) -> torch.Tensor | None:
        """Adapt the state neurons' base θ from the last backward.

        Every (step, sequence) pair is a sample of the per-step parameter gradients; the batch
        estimate of eq. 18 uses ``max_samples`` of them (the samples of ``⌈max_samples / B⌉``
        random steps; None: all ``T·B``, as the authors' POPGym code), then
        ``θ ← μ θ + (1 − μ) λ_batch``. ``valid [T, B]`` (bool, optional) keeps only those
        samples (e.g. steps inside episodes). ``normalize``: see :mod:`sggraph.lambdas`
        (the authors' code: ``"feedback"``). Returns ``λ_batch [N]`` (NaN: kept).
        """
        from .lambdas import check_momentum, momentum_update, no_feedback_error, recurrent_state_lambda

        check_momentum(momentum)
        if self.grouping != "child":
            raise LambdaError("adaptive λ is implemented for the 'child' grouping",
                              fix="compile the cell with grouping='child'")
        st = self.state
        if not any(r.received is not None for r in st.records):
            raise no_feedback_error("adapt_lambda")
        usable = [i for i, r in enumerate(st.records) if r.received is not None]
        if valid is not None:
            usable = [i for i in usable if bool(valid[i].any())]
        if not usable:
            return None
        if _has_forward_tensors(st):
            lam_batch = state_lambda_from_forward(st, usable, normalize, max_samples, valid)
        else:
            lam_batch = recurrent_state_lambda(st, usable, normalize, max_samples, valid)
        momentum_update(st.lam_self, st.lam, lam_batch, momentum)
        return lam_batch

    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.model_parameters())
        return (f"CompiledCell({self.cell.name!r}, state={self.state.count}x{self.state.dim}, params={n}, "
                f"grouping={self.grouping!r}, rho={self.rho})")


def _has_forward_tensors(st: _StateBlock) -> bool:
    return (st.mode == "child" and st.u_all is not None and st.fed_all is not None and st.alpha_all is not None
            and len(st.y_steps) == len(st.records) > 0 and (st.input_neurons == 0 or st.e_all is not None)
            and isinstance(st.function, RecurrentSlotArray))


@torch.no_grad()
def state_lambda_from_forward(st: _StateBlock, steps: list[int], normalize: bool | str = True,
                              max_samples: int | None = None, valid: torch.Tensor | None = None) -> torch.Tensor:
    """λ_batch ``[N]`` of the state neurons from the last child-path forward and backward.

    The estimate of :func:`sggraph.lambdas.recurrent_state_lambda` (same samples, same random
    steps under ``max_samples``; tested equal), organised for speed when every sample is used:

    * the samples' inputs, routing weights and slot outputs come from the forward (no
      re-concatenation, no rerun of the slots);
    * the received and the predicted feedback are stacked, so every pass serves both;
    * a neuron's per-sample gradient is linear in its cotangent ``c_b``, so each normalisation
      is a per-sample scale of ``c_b`` (``feedback``: ``1/‖c_b‖``; ``gradient``: ``1/‖p̃_b‖``);
    * the inner products need no slot-map rows: ``⟨dpre_b, dpre′_b⟩ = Σ_j c_b[j] c′_b[j]
      Σ_s (α_s (1 − y_{s,j}²))²``;
    * each batch mean ``Σ_b rows_b ⊗ x_b`` is one matmul per input block.
    """
    from .lambdas import _DIRECTION_EPS, batch_lambda_from_stats, normalization_mode

    fn = st.function
    mode = normalization_mode(normalize)
    t_steps = len(st.records)
    batch = st.u_all.shape[1] // t_steps  # type: ignore[union-attr]
    if max_samples is not None:  # the samples of ⌈max_samples / B⌉ random steps (as recurrent_state_lambda)
        keep = max(1, -(-max_samples // batch))
        if keep < len(steps):
            chosen = torch.randperm(len(steps))[:keep].sort().values.tolist()
            steps = [steps[i] for i in chosen]
    device = st.u_all.device  # type: ignore[union-attr]
    mask = torch.zeros(t_steps, batch, dtype=torch.bool, device=device)
    mask[steps] = True
    if valid is not None:
        mask &= valid.to(device=device, dtype=torch.bool)
    cols = mask.reshape(-1).nonzero().squeeze(1)
    r = cols.numel()
    n, m, q, k = fn.count, fn.slots, fn.dim, fn.input_neurons
    if r < 2:
        return torch.full((n,), float("nan"), dtype=st.u_all.dtype, device=device)  # type: ignore[union-attr]
    pick = (lambda x, dim: x) if r == t_steps * batch else (lambda x, dim: x.index_select(dim, cols))
    u = pick(st.u_all, 1)  # [N, R, F q]
    alpha = pick(st.alpha_all, 1)  # [N, R, M]
    y = pick(torch.cat(st.y_steps, dim=1), 1)  # [N, R, M, q]
    received = torch.cat([rec.received for rec in st.records], dim=1)
    cot = torch.stack([pick(received, 1), pick(st.fed_all, 1)], dim=2)  # [N, R, 2, q]: received, predicted
    if mode == "feedback":
        cot = cot / cot.norm(dim=-1, keepdim=True).clamp_min(_DIRECTION_EPS)
    x2 = (u * u).sum(-1)  # [N, R] ‖x_b‖²
    e = pick(st.e_all, 0) if k else None  # [R, d_in]
    if e is not None:
        x2 = torch.cat([x2[:k] + (e * e).sum(-1), x2[k:]], dim=0)
    gate = alpha.unsqueeze(-1) * (1 - y * y)  # [N, R, M, q] ∂ slot pre-activation / ∂ h̄
    gate2 = (gate * gate).sum(2)  # [N, R, q]
    scale = fn.scale.to(u).view(-1, 1, 1, 1)

    def logit_rows(c):  # [N, R, 2, q] → [N, R, 2, M]: ∂/∂ routing logits
        dalpha = torch.matmul(c, y.transpose(-1, -2))  # [N, R, 2, M]
        a = alpha.unsqueeze(2)
        return a * (dalpha - (a * dalpha).sum(-1, keepdim=True)) * scale

    dlogit = logit_rows(cot)

    def inner(i, j):  # ⟨p̃_b, s̃_b⟩-type products per sample, without forming the slot-map rows
        pre = (gate2 * cot[:, :, i] * cot[:, :, j]).sum(-1)
        return ((dlogit[:, :, i] * dlogit[:, :, j]).sum(-1) + pre) * x2 + pre

    pp, ps, ss = inner(0, 0), inner(0, 1), inner(1, 1)
    if mode == "gradient":  # unit per-sample gradients: scale each cotangent by 1/‖p̃_b‖ (the map is linear)
        w = torch.stack([pp, ss], dim=2).clamp_min(0).sqrt().add(1e-12).reciprocal()  # [N, R, 2]
        pp, ps, ss = pp * w[..., 0] ** 2, ps * w[..., 0] * w[..., 1], ss * w[..., 1] ** 2
        cot, dlogit = cot * w.unsqueeze(-1), dlogit * w.unsqueeze(-1)
    dpre = gate.unsqueeze(2) * cot.unsqueeze(3)  # [N, R, 2, M, q]
    blocks = []  # per parameter block: the batch sums of both cotangents, [N, 2, ·]
    for rows in (dlogit, dpre.flatten(3)):  # keys, slot maps: Σ_b rows_b ⊗ x_b
        flat = rows.reshape(n, r, -1).transpose(1, 2)  # [N, 2 W, R]
        blocks.append(torch.bmm(flat, u).view(n, 2, -1))
        if e is not None:
            on_e = torch.matmul(flat[:k], e).view(k, 2, -1)
            blocks.append(torch.cat([on_e, on_e.new_zeros(n - k, 2, on_e.shape[-1])], dim=0))
    blocks.append(dpre.sum(1).flatten(2))  # biases
    means = torch.cat(blocks, dim=-1) / r  # [N, 2, P]
    return batch_lambda_from_stats(means[:, 0], means[:, 1], pp, ps, ss)


def compile_cell(cell: Cell, functions: Mapping[str, nn.Module] | None = None,
                 generators: Mapping[str, nn.Module] | None = None, *, grouping: str = "edge",
                 rho: float | None = 0.1, generator_target: str = "received") -> CompiledCell:
    """Compile a recurrent cell (see :class:`CompiledCell`)."""
    return CompiledCell(cell, functions, generators, grouping, rho, generator_target)
