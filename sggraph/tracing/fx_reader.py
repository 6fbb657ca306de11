"""Read an ``nn.Module`` with ``torch.fx``: the traced operations, which submodule calls are nodes,
and the shape of every value on the example inputs.

The chosen nodes are traced as leaves (their own ``forward`` runs as is, never traced into), and
so are the ``leaves`` the user lists. A model that ``torch.fx`` cannot trace (data-dependent
control flow, an unsupported operation) is a :class:`~sggraph.CompileError` naming the module,
the qualified name of the submodule being traced, the file and line of the offending source, and
the fix.

>>> import torch
>>> from torch import nn
>>> reading = read_module(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)), (torch.zeros(2, 3),))
>>> [n.target for n in reading.chosen]
['0', '1', '2']
>>> reading.values[reading.chosen[0]].shape
(2, 4)
"""

from __future__ import annotations

import difflib
import linecache
import os
import traceback
from collections.abc import Sequence

import attrs
import torch
from torch import fx, nn

from ..exceptions import CompileError

__all__ = ["Reading", "ValueInfo", "read_module"]

_TORCH_DIR = os.path.dirname(torch.__file__)
_OWN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@attrs.frozen
class ValueInfo:
    """What the example run gave for one fx value: a tensor's shape and dtype, or another kind."""

    kind: str  # "tensor" or the type's name
    shape: tuple[int, ...] = ()
    dtype: torch.dtype | None = None


@attrs.frozen
class Reading:
    """The traced module.

    Attributes
    ----------
    root : nn.Module
        The user's module.
    graph : torch.fx.Graph
        Its operations; the chosen submodule calls are ``call_module`` nodes.
    chosen : list of fx.Node
        The chosen submodule calls in call order (a module called twice appears twice).
    values : dict
        ``fx.Node -> ValueInfo`` for every node the example run produced.
    batch : int
        The example batch size (dimension 0 of the first input).
    """

    root: nn.Module
    graph: fx.Graph
    chosen: list
    values: dict
    batch: int


class _Tracer(fx.Tracer):
    """An fx tracer that keeps ``leaves`` opaque and remembers where tracing failed."""

    def __init__(self, leaves: set[str]) -> None:
        super().__init__()
        self.leaves = leaves
        self.failed_in: str | None = None

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return module_qualified_name in self.leaves or super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m, forward, args, kwargs):  # noqa: ANN001, ANN201 - fx's signature
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                try:
                    self.failed_in = self.path_of_module(m)
                except NameError:
                    self.failed_in = type(m).__name__
            raise


def _module_names(module: nn.Module) -> list[str]:
    return [name for name, _ in module.named_modules() if name]


def check_names(module: nn.Module, names: Sequence[str], what: str) -> list[str]:
    """``names`` as a list, each a qualified submodule name of ``module``, none nested in another."""
    if isinstance(names, str):
        names = [names]
    known = _module_names(module)
    known_set = set(known)
    out = []
    for name in names:
        if not isinstance(name, str) or name not in known_set:
            close = difflib.get_close_matches(str(name), known, n=4, cutoff=0.5)
            hint = f"the closest are {', '.join(repr(c) for c in close)}" if close else \
                f"the submodules are {', '.join(known[:12])}{' …' if len(known) > 12 else ''}"
            raise CompileError(f"{what} entry {name!r} is not a submodule of {type(module).__name__}", node=str(name),
                               fix=f"list qualified submodule names as in model.named_modules(); {hint}")
        out.append(name)
    if len(set(out)) != len(out):
        dup = next(n for n in out if out.count(n) > 1)
        raise CompileError(f"{what} lists {dup!r} twice", node=dup, fix="list each submodule once")
    return out


def _check_not_nested(names: Sequence[str]) -> None:
    for a in names:
        for b in names:
            if b.startswith(a + "."):
                raise CompileError(f"nodes lists both {a!r} and its submodule {b!r}", node=b,
                                   fix=f"a node is one submodule call: keep {a!r} (its whole forward is one node) "
                                       f"or list its parts instead of it")


def _user_frame(exc: BaseException) -> tuple[str | None, int | None, str]:
    """File, line and source text of the innermost traceback frame outside torch and sggraph."""
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        path = os.path.abspath(frame.filename)
        if path.startswith(_TORCH_DIR) or path.startswith(_OWN_DIR) or frame.filename.startswith("<"):
            continue
        text = (frame.line or linecache.getline(frame.filename, frame.lineno or 0)).strip()
        return frame.filename, frame.lineno, text
    return None, None, ""


def _trace_error(module: nn.Module, tracer: _Tracer, exc: Exception) -> CompileError:
    file, line, text = _user_frame(exc)
    where = tracer.failed_in
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    inside = f"submodule '{where}'" if where else "its own forward"
    source = f" at `{text}`" if text else ""
    fix = (f"list fewer or other nodes so that '{where}' is inside one node (a node's forward runs as is, untraced), "
           f"or mark it as a leaf: trace(..., leaves=['{where}'])") if where else \
        ("torch.fx cannot trace control flow that depends on tensor values in the top-level forward: move that code "
         "into a submodule and list it in nodes=[...] or leaves=[...]")
    return CompileError(f"torch.fx cannot trace {type(module).__name__} ({inside}){source}: {first}",
                        node=where, file=file, line=line, fix=fix)


class _Recorder(fx.Interpreter):
    """Runs the traced graph once and records what every node produced."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.infos: dict[fx.Node, ValueInfo] = {}

    def run_node(self, n: fx.Node):  # noqa: ANN201 - fx's signature
        out = super().run_node(n)
        if isinstance(out, torch.Tensor):
            self.infos[n] = ValueInfo("tensor", tuple(out.shape), out.dtype)
        else:
            self.infos[n] = ValueInfo(type(out).__name__)
        return out


def _run_without_side_effects(gm: fx.GraphModule, module: nn.Module, inputs: Sequence[torch.Tensor]
                              ) -> dict[fx.Node, ValueInfo]:
    """Record every value's shape on ``inputs``; the module's buffers (BatchNorm statistics) and the
    random number generator are left as they were."""
    saved = {k: v.detach().clone() for k, v in module.state_dict(keep_vars=True).items()
             if isinstance(v, torch.Tensor) and not isinstance(v, nn.Parameter)}
    rng = torch.random.get_rng_state()
    recorder = _Recorder(gm)
    try:
        with torch.no_grad():
            recorder.run(*inputs)
    except Exception as exc:
        file, line, text = _user_frame(exc)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CompileError(f"{type(module).__name__} failed on the example inputs"
                           f"{f' at `{text}`' if text else ''}: {first}", file=file, line=line,
                           fix="pass example_inputs the module accepts (a tensor or a tuple of tensors, batch first)"
                           ) from None
    finally:
        torch.random.set_rng_state(rng)
        state = module.state_dict(keep_vars=True)
        with torch.no_grad():
            for k, v in saved.items():
                state[k].copy_(v)
    return recorder.infos


def read_module(module: nn.Module, example_inputs: Sequence[torch.Tensor], nodes: Sequence[str] | None = None,
                leaves: Sequence[str] = ()) -> Reading:
    """Trace ``module`` with ``torch.fx`` and run it once on ``example_inputs`` for the shapes.

    Parameters
    ----------
    module : nn.Module
    example_inputs : sequence of Tensor
        Positional inputs, batch first.
    nodes : sequence of str, optional
        Qualified names of the submodules whose calls are nodes (default: the direct children).
    leaves : sequence of str
        Further submodules kept opaque (not traced into) without being nodes.
    """
    if not isinstance(module, nn.Module):
        raise CompileError(f"trace needs a torch.nn.Module, got {type(module).__name__}",
                           fix="pass the model object (an nn.Module instance)")
    if nodes is None:
        chosen_names = [name for name, _ in module.named_children()]
    else:
        chosen_names = check_names(module, nodes, "nodes")
        _check_not_nested(chosen_names)
    leaf_names = check_names(module, leaves, "leaves")
    for name in chosen_names:
        outer = next((leaf for leaf in leaf_names if name.startswith(leaf + ".")), None)
        if outer is not None:
            raise CompileError(f"nodes lists {name!r}, inside the leaf {outer!r} (a leaf's forward runs as one call)",
                               node=name, fix=f"drop {outer!r} from leaves, or list {outer!r} itself as the node")
    tracer = _Tracer(set(chosen_names) | set(leaf_names))
    try:
        graph = tracer.trace(module)
    except CompileError:
        raise
    except Exception as exc:  # fx raises TraceError, TypeError, RuntimeError, … on what it cannot trace
        raise _trace_error(module, tracer, exc) from None
    chosen = [n for n in graph.nodes if n.op == "call_module" and n.target in set(chosen_names)]
    called = {n.target for n in chosen}
    if nodes is not None:
        for name in chosen_names:
            if name not in called:
                raise CompileError(f"submodule '{name}' is never called by {type(module).__name__}.forward",
                                   node=name, fix="list submodules that the forward calls (a module used only "
                                                  "through its parameters cannot be a node)")
    gm = fx.GraphModule(module, graph)
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(example_inputs):
        raise CompileError(f"{type(module).__name__}.forward takes {len(placeholders)} input(s) "
                           f"({', '.join(str(p.target) for p in placeholders)}) but {len(example_inputs)} example "
                           f"input(s) were given", fix="pass one example tensor per forward argument, as a tuple")
    for p, x in zip(placeholders, example_inputs):
        if not isinstance(x, torch.Tensor) or x.dim() == 0:
            raise CompileError(f"example input '{p.target}' is a {type(x).__name__ if not isinstance(x, torch.Tensor) else '0-d tensor'}, "
                               "not a batch", node=str(p.target),
                               fix="pass tensors whose first dimension is the batch")
    batch = int(example_inputs[0].shape[0])
    for p, x in zip(placeholders, example_inputs):
        if x.shape[0] != batch:
            raise CompileError(f"example input '{p.target}' has batch {x.shape[0]}, the first has {batch}",
                               node=str(p.target), fix="give every example input the same batch size (dimension 0)")
    values = _run_without_side_effects(gm, module, example_inputs)
    return Reading(module, graph, chosen, values, batch)
