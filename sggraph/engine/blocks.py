"""The compiled blocks: one declared node, node array or recurrent state with its function and generator.

:class:`NodeBlock` and :class:`ArrayBlock` run one node's forward on the path the net picks
(``plain``, ``child`` or ``general``, see :mod:`sggraph.engine.compile`) and write what the
backward and the generator step need into the forward's :class:`~sggraph.engine.trace.NodeTrace`;
the feed-forward and the recurrent compilers share them. Each block stores its in-edge weights
``lam`` and ``λ^self`` (``lam_self``) as buffers (the checkpoint's keys); the net's
:class:`~sggraph.engine.lam.table.LambdaTable` owns and writes them, and the blocks only read them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..exceptions import CompileError, DataError, DimensionError
from .generators import call_generator, takes_aux
from .mixing import InMix, OutMix, ParamMix, Record, RecordGrad, all_finite
from .neuron import gather_by_table
from .trace import NodeTrace

__all__ = ["ArrayBlock", "Block", "NodeBlock", "SourceBlock", "StateBlock", "block_parameters", "check_generators",
           "check_input_kind", "check_inputs", "first_parameter", "observes", "split_ref", "step_on", "synthetic_vjp"]


def step_on(loss: torch.Tensor, optimizer: torch.optim.Optimizer | None) -> float:
    """One ``optimizer`` step on ``loss`` (when it has a graph); returns its value."""
    if optimizer is not None and loss.requires_grad:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return float(loss.detach())


def observes(generator: nn.Module) -> bool:
    """Generators with an ``observe(z, target)`` method (tabular) learn by observation, not by gradient."""
    return callable(getattr(generator, "observe", None))


def split_ref(ref: str) -> tuple[str, int | None]:
    base, _, rest = ref.partition("[")
    return (base, int(rest[:-1])) if rest else (base, None)


def check_inputs(inputs: object, sources: Sequence[str], what: str, finite: bool,
                 like: torch.Tensor | None = None, integer: frozenset[str] = frozenset()) -> None:
    """Raise unless ``inputs`` maps exactly the ``sources`` to real tensors holding data (with ``finite``:
    without NaN or inf) of the dtype and device of ``like`` (the net's first parameter, when it has one); the
    sources named in ``integer`` may also take integer tensors (token ids)."""
    if not isinstance(inputs, Mapping):
        raise DimensionError(f"the inputs must be a mapping of source name to tensor, got {type(inputs).__name__}",
                             fix=f"call net({{'{next(iter(sources), 'x')}': tensor, ...}})")
    for name in inputs:
        if name not in sources:
            raise DimensionError(f"input '{name}' is not a source of {what}", node=str(name),
                                 fix=f"pass only the sources ({', '.join(sources)}); check the spelling")
    for name in sources:
        if name not in inputs:
            raise DimensionError("no input given for this source", node=name,
                                 fix=f"pass net({{'{name}': tensor, ...}}) with every source: {', '.join(sources)}")
        x = inputs[name]
        if not isinstance(x, torch.Tensor):
            raise DimensionError(f"the input is a {type(x).__name__}, not a tensor", node=name,
                                 fix="pass a torch tensor (torch.as_tensor(...) converts arrays and lists)")
        check_input_kind(name, x, like, integer=name in integer)
        if finite and x.is_floating_point() and not all_finite(x):
            raise DataError("the input holds NaN or infinite values", node=name,
                            fix="clean the data before it reaches the net (the NaN/inf is in the input batch, not "
                                "in training); set net.check_finite = False to let it through")


def first_parameter(module: nn.Module) -> torch.Tensor | None:
    """The first floating-point parameter of ``module`` (its dtype and device are the net's), or None."""
    return next((p for p in module.parameters() if p.is_floating_point()), None)


def check_input_kind(name: str, x: torch.Tensor, like: torch.Tensor | None, integer: bool = False) -> None:
    """Raise a :class:`~sggraph.DataError` naming the source unless ``x`` is a floating-point tensor with data,
    of ``like``'s dtype and device (``like`` None: any floating dtype); with ``integer``, an integer tensor
    (token ids) on ``like``'s device passes too."""
    dtype = like.dtype if like is not None else torch.get_default_dtype()
    if x.is_meta:
        raise DataError("the input is a 'meta' tensor (a shape without data), which the net cannot compute on",
                        node=name, fix=f"pass a tensor with values, e.g. torch.zeros({tuple(x.shape)}, dtype={dtype})")
    token_ids = integer and not x.is_floating_point() and not x.is_complex() and x.dtype != torch.bool
    if not x.is_floating_point() and not token_ids:
        raise DataError(f"the input is a {x.dtype} tensor; the net computes on floating-point inputs ({dtype})",
                        node=name, fix=f"convert it: x.to({dtype})")
    if x.is_floating_point() and like is not None and x.dtype != like.dtype:
        raise DataError(f"the input is {x.dtype} but the net's parameters are {like.dtype}", node=name,
                        fix=f"convert the input (x.to({like.dtype})) or the net (net.to({x.dtype}))")
    if like is not None and x.device != like.device:
        raise DataError(f"the input is on {x.device} but the net is on {like.device}", node=name,
                        fix=f"move the input (x.to('{like.device}')) or the net (net.to('{x.device}'))")


def synthetic_vjp(out: torch.Tensor, h: torch.Tensor, rec: Record, inputs: dict[int, torch.Tensor],
                   params: dict[str, torch.Tensor]) -> None:
    """Fill ``rec`` with ``J_zᵀ ĥ`` per input and ``J_θᵀ ĥ`` per mixed parameter (one VJP)."""
    wanted = [(("in", k), t) for k, t in inputs.items() if t.requires_grad]
    wanted += [(("param", n), t) for n, t in params.items()]
    if not wanted or not out.requires_grad:
        return
    grads = torch.autograd.grad(out, [t for _, t in wanted], h.detach(), retain_graph=True, allow_unused=True)
    for ((kind, key), t), g in zip(wanted, grads):
        g = torch.zeros_like(t) if g is None else g
        if kind == "in":
            rec.synthetic_input[key] = g  # type: ignore[index]
        else:
            rec.synthetic_params[key] = g  # type: ignore[index]


def check_generators(generators: Mapping[str, nn.Module], where=lambda name: (None, None)) -> None:
    """Reject, naming the node (and its file and line), a generator that is not a module taking
    ``z`` or ``(z, aux)``."""
    for name, gen in generators.items():
        file, line = where(name)
        if not isinstance(gen, nn.Module):
            raise CompileError(f"generators[{name!r}] is a {type(gen).__name__}, not an nn.Module", node=name,
                               file=file, line=line, fix="pass a torch.nn.Module mapping z to the node's shape")
        if takes_aux(gen) is None:
            raise CompileError(f"generators[{name!r}] ({type(gen).__name__}) cannot be called as generator(z) "
                               "or generator(z, aux)", node=name, file=file, line=line,
                               fix="give its forward one argument z, or two (z, aux)")


class Block(nn.Module):
    """One declared node or array: its function, generator and λ storage (no state of a forward)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def predict(self, z: torch.Tensor, aux: dict | None) -> torch.Tensor:
        """The generator's ``ĥ_v``: ``generator(z, aux)``, or ``generator(z)`` for one-argument modules."""
        gen = self.generator  # type: ignore[attr-defined]
        return call_generator(gen, z, aux) if self._gen_aux else call_generator(gen, z)

    def _set_generator(self, generator: nn.Module) -> None:
        self.generator = generator
        self._gen_aux = takes_aux(generator) is not False


class NodeBlock(Block):
    """A plain node: ``x_v = f_v(cat(parents))``; λ per parent ``[P]``, ``λ^self`` scalar."""

    def __init__(self, name: str, parents: Sequence[str], parent_dims: Sequence[int], dim: int,
                 function: nn.Module, generator: nn.Module) -> None:
        super().__init__(name)
        self.parents = tuple(parents)
        self.parent_dims = tuple(parent_dims)
        self.dim = dim
        self.function = function
        self._set_generator(generator)
        self.register_buffer("lam", torch.ones(len(parents)))
        self.register_buffer("lam_self", torch.ones(()))
        self.register_buffer("_dims", torch.tensor(self.parent_dims, dtype=torch.long), persistent=False)

    def run(self, values: Mapping[str, torch.Tensor], entry: NodeTrace | None) -> torch.Tensor:
        """The node's output ``[B, dim]``; ``entry`` (None under ``torch.no_grad()``: an evaluation
        forward leaves the trace alone) says the path and receives what the forward leaves."""
        parts = []
        for ref in self.parents:
            base, idx = split_ref(ref)
            v = values[base]
            if idx is not None:
                v = v[idx]
            elif v.dim() == 3:  # a whole array, neuron-major [N, B, q] -> [B, N q]
                v = v.transpose(0, 1).reshape(v.shape[1], v.shape[0] * v.shape[2])
            parts.append(v)
        z_raw = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
        if entry is None or entry.mode == "plain":
            return self._checked(self.function(z_raw), z_raw)
        mode, rec = entry.mode, entry.record
        assert rec is not None
        entry.generator_input = z_raw.detach()
        entry.inputs = (entry.generator_input,)
        h = entry.prediction = self.predict(entry.generator_input, None)
        if mode == "child":
            out = entry.output = self._checked(self.function(z_raw), z_raw)
            rec.synthetic_output = h.detach()
            return OutMix.apply(out, self.lam_self, rec)
        lam_cols = torch.repeat_interleave(self.lam, self._dims.to(self.lam.device))
        z = InMix.apply(z_raw, lam_cols, rec, 0)
        params = {}
        if bool((self.lam_self != 1).any()):
            params = {n: ParamMix.apply(p, self.lam_self, rec, n) for n, p in self.function.named_parameters()}
            out = torch.func.functional_call(self.function, params, (z,))
        else:
            out = self.function(z)
        out = entry.output = self._checked(out, z_raw)
        synthetic_vjp(out, h, rec, {0: z}, params)
        return RecordGrad.apply(out, rec)

    def _checked(self, out: object, z: torch.Tensor) -> torch.Tensor:
        if not isinstance(out, torch.Tensor) or out.shape != (z.shape[0], self.dim):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise DimensionError(f"its function returned shape {shape}, expected [B={z.shape[0]}, dim={self.dim}]",
                                 node=self.name, fix=f"make the function map [B, {z.shape[-1]}] to [B, {self.dim}], "
                                 f"or change the node's dim to match")
        return out

    def edge_slots(self, parent: str) -> list[int]:
        return [i for i, p in enumerate(self.parents) if p == parent]


class ArrayBlock(Block):
    """A node array: gather by the parent table, one batched template call.

    λ is ``[N, F (+1 residual column)]``, ``λ^self`` is ``[N]``.
    """

    def __init__(self, name: str, parent: str, table: np.ndarray, residual: bool, count: int, dim: int,
                 parent_dim: int, function: nn.Module, generator: nn.Module) -> None:
        super().__init__(name)
        self.parent = parent
        self.count, self.dim, self.parent_dim = count, dim, parent_dim
        self.fan_in = int(table.shape[1])
        self.residual = residual
        self.function = function
        self._set_generator(generator)
        self.register_buffer("table", torch.as_tensor(table, dtype=torch.long), persistent=False)
        self.register_buffer("flat_table", self.table.flatten(), persistent=False)
        self.register_buffer("lam", torch.ones(count, self.fan_in + int(residual)))
        self.register_buffer("lam_self", torch.ones(count))

    def gather(self, prev: torch.Tensor) -> torch.Tensor:
        """``prev [Np, B, qp]`` → local inputs ``u [N, B, F·qp]``."""
        return gather_by_table(prev, self.flat_table, self.count, self.fan_in)

    def run(self, values: Mapping[str, torch.Tensor], entry: NodeTrace | None) -> torch.Tensor:
        """The array's output ``[N, B, q]`` (neuron-major); ``entry`` as for :meth:`NodeBlock.run`."""
        prev = values[self.parent]
        u_raw = self.gather(prev)
        r_raw = prev if self.residual else None
        if entry is None or entry.mode == "plain":
            return self._checked(self.function(u_raw, r_raw)[0], u_raw)
        mode, rec = entry.mode, entry.record
        assert rec is not None
        entry.inputs = (u_raw.detach(), None if r_raw is None else r_raw.detach())
        if mode == "child":
            out, aux = self.function(u_raw, r_raw)
            out = entry.output = self._checked(out, u_raw)
            entry.aux = {k: v.detach() for k, v in aux.items()}
            entry.generator_input = u_raw.detach()
            h = entry.prediction = self.predict(entry.generator_input, aux)
            rec.synthetic_output = h.detach()
            return OutMix.apply(out, self.lam_self.view(-1, 1, 1), rec)
        f, qp = self.fan_in, self.parent_dim
        u = InMix.apply(u_raw, self.lam[:, :f].repeat_interleave(qp, dim=1).unsqueeze(1), rec, 0)
        r = InMix.apply(r_raw, self.lam[:, f:].unsqueeze(1), rec, 1) if self.residual else None
        params = {}
        if bool((self.lam_self != 1).any()):
            shaped = self.lam_self
            params = {n: ParamMix.apply(p, shaped.view(-1, *([1] * (p.dim() - 1))), rec, n)
                      for n, p in self.function.named_parameters()}
        out, aux = self.function(u, r, params) if params else self.function(u, r)
        out = entry.output = self._checked(out, u_raw)
        entry.generator_input = u_raw.detach()
        h = entry.prediction = self.predict(entry.generator_input, aux)
        synthetic_vjp(out, h, rec, {0: u, 1: r} if r is not None else {0: u}, params)
        return RecordGrad.apply(out, rec)

    def _checked(self, out: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        want = (self.count, u.shape[1], self.dim)
        if out.shape != want:
            raise DimensionError(f"its array function returned shape {tuple(out.shape)}, expected {list(want)}",
                                 node=self.name, fix="return [count, B, dim] from the array module")
        return out

    def columns_for(self, parent_index: int | None, child_index: int | None) -> torch.Tensor:
        """Boolean mask ``[N, F(+1)]`` of table entries from parent neuron ``parent_index``."""
        mask = torch.zeros(self.count, self.fan_in + int(self.residual), dtype=torch.bool, device=self.lam.device)
        if parent_index is None:
            mask[:] = True
        else:
            mask[:, : self.fan_in] = self.table == parent_index
            if self.residual:
                mask[parent_index, self.fan_in] = parent_index < self.count
        if child_index is not None:
            keep = torch.zeros_like(mask)
            keep[child_index] = mask[child_index]
            mask = keep
        return mask


class SourceBlock(nn.Module):
    def __init__(self, name: str, dim: int, count: int | None) -> None:
        super().__init__()
        self.name, self.dim, self.count = name, dim, count




class StateBlock(nn.Module):
    """A recurrent cell's state array: its step function and generator, the parent table (into the
    previous step's state) and the λ storage ``lam [N, F + 1]`` (column ``F``: the input edge of the
    first ``input_neurons`` neurons; unused for the others) and ``λ^self`` ``[N]`` (the base θ)."""

    def __init__(self, name: str, table: np.ndarray, count: int, dim: int, input_neurons: int,
                 function: nn.Module, generator: nn.Module) -> None:
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

    def gather(self, prev: torch.Tensor) -> torch.Tensor:
        """``prev [N, B, q]`` → the neurons' recurrent inputs ``[N, B, F·q]``."""
        return gather_by_table(prev, self.flat_table, self.count, self.fan_in)


def block_parameters(blocks: Mapping[str, nn.Module], part: str) -> Iterator[nn.Parameter]:
    """The parameters of every block's ``function`` (``part="function"``) or ``generator``: what the
    model's optimizer and the generators' optimizer update, in block order."""
    for block in blocks.values():
        yield from getattr(block, part).parameters()
