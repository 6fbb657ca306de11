"""``sggraph draw``: draw a YAML graph or recurrent cell (optionally with λ from a trained run) with graphviz."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..core.graph import Graph
from ..core.unroll import Cell
from ..exceptions import ConfigError
from .model_files import add_unroll_argument, load_model

__all__ = ["add_parser", "run_draw"]

# -------------------------------------------------------------------------- CLI
def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``draw`` subcommand to an ``argparse`` subparsers object.

    ``sggraph draw MODEL.yaml -o OUT.{svg,png,pdf,dot} [--node NAME]
    [--lambda-from RUN_DIR_OR_CHECKPOINT] [--expand-arrays N] [--unroll T]``

    ``MODEL.yaml`` is a graph, or a recurrent cell: drawn folded (one step), or with
    ``--unroll T`` as the layered graph of ``T`` steps.

    The handler is set with ``set_defaults(run=run_draw)`` and returns the exit code.

    Examples
    --------
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="sggraph"); sub = parser.add_subparsers()
    >>> _ = add_parser(sub)
    >>> args = parser.parse_args(["draw", "examples/expert-net.yaml", "-o", "expert.svg", "--node", "e1"])
    >>> args.file, args.out, args.node, args.run is run_draw
    ('examples/expert-net.yaml', 'expert.svg', 'e1', True)
    """
    p = subparsers.add_parser(
        "draw", help="draw a YAML graph or recurrent cell with graphviz (layers, arrays, conditions, λ)",
        description="Draw a YAML graph: layers as ranks, arrays as one box each, the paper's conditions marked; "
                    "optionally a node's siblings and extended ancestors, and λ from a trained run. A recurrent "
                    "cell is drawn folded (one step), or unrolled with --unroll T.")
    p.add_argument("file", metavar="MODEL.yaml", help="graph or recurrent cell YAML file")
    p.add_argument("-o", "--out", required=True, metavar="OUT.{svg,png,pdf,dot}",
                   help="output file; the suffix picks the format")
    p.add_argument("--node", metavar="NAME", help="highlight this node, its siblings and extended ancestors")
    p.add_argument("--lambda-from", dest="lambda_from", metavar="RUN_DIR_OR_CHECKPOINT",
                   help="colour edges by λ from a checkpoint.pt (or a run directory holding one)")
    p.add_argument("--expand-arrays", dest="expand_arrays", type=int, metavar="N",
                   help="draw the first N neurons of every array individually (unrolled cells: per step; by default a "
                        "state of more than 6 neurons is one box per step)")
    add_unroll_argument(p, "draw")
    p.set_defaults(run=run_draw)
    return p


def run_draw(args: argparse.Namespace) -> int:
    """Handler of ``sggraph draw``: load, draw, render, print the written path; returns 0.

    Raises sggraph exceptions on bad input (the CLI prints them and exits 2).
    """
    from ..draw import RENDER_FORMATS, draw, render

    out = Path(args.out)
    if out.suffix.lower() not in RENDER_FORMATS:
        raise ConfigError(f"cannot write '{out}': unknown suffix '{out.suffix or '(none)'}'",
                          fix="name the output file .svg, .png, .pdf or .dot")
    if not out.parent.is_dir():  # a mistyped path creates no directories
        raise ConfigError(f"cannot write '{out}': the directory {out.parent} does not exist",
                          fix=f"create it first (mkdir -p {out.parent}) or write the drawing into an existing "
                              "directory")
    expand = getattr(args, "expand_arrays", None)
    if expand is not None and expand < 0:
        raise ConfigError(f"--expand-arrays must be 0 or more (got {expand})", fix="pass --expand-arrays N, N >= 0")
    steps = getattr(args, "unroll", None)
    model = load_model(args.file, steps)  # a cell stays a cell: draw() unrolls it with its step boxes
    if isinstance(model, Cell) and steps is None and (args.node is not None or expand is not None):
        flag = "--node" if args.node is not None else "--expand-arrays"
        raise ConfigError(f"{flag} needs the unrolled graph; without --unroll a cell is drawn folded (one step)",
                          file=args.file, fix=f"pass --unroll T as well, e.g. --unroll 3 {flag} "
                                              f"{'h@2:0' if flag == '--node' else '4'}")
    target: Any = model
    if getattr(args, "lambda_from", None):
        state, source = _load_lambdas(args.lambda_from)
        target = _net_with_lambdas(model, state, source)
    if isinstance(model, Cell):
        drawing = draw(target, node=args.node, expand_arrays=expand, unroll=steps)
    else:
        drawing = draw(target, node=args.node, expand_arrays=expand or None)
    print(render(drawing, out))
    return 0


def _load_lambdas(where: str) -> tuple[dict, str]:
    """The λ entries (:func:`~sggraph.engine.compile.lambda_state`) of a checkpoint file or run directory."""
    import torch

    path = Path(where)
    if path.is_dir():
        path = path / "checkpoint.pt"
        if not path.exists():
            raise ConfigError("the run directory holds no checkpoint.pt", file=str(path.parent),
                              fix="point --lambda-from at a run directory written by `sggraph train`, "
                                  "or at a checkpoint file")
    elif not path.exists():
        raise ConfigError("no such file or directory", file=str(path),
                          fix="point --lambda-from at a run directory or a checkpoint.pt file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many kinds on a non-checkpoint
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"cannot read the checkpoint: {first}", file=str(path),
                          fix="pass a checkpoint.pt written by `sggraph train` (torch.save of {'model': state_dict})"
                          ) from None
    # `sggraph train`: {"model": ...} (bandit, expert) or {"policy": ...} (POPGym)
    state = obj.get("model", obj.get("policy", obj)) if isinstance(obj, Mapping) else None
    if not isinstance(state, Mapping):
        raise ConfigError("the checkpoint holds no model state dict", file=str(path),
                          fix="pass a checkpoint whose 'model' entry is a CompiledGraph state_dict")
    from ..engine import lambda_state

    lam = lambda_state(state)
    if not lam:
        raise ConfigError("the checkpoint holds no λ buffers (keys ending in .lam or .lam_self)", file=str(path),
                          fix="use the checkpoint of a compiled sggraph model (e.g. an sgprop run); "
                              "backprop-only baselines such as the MLP have no λ")
    return lam, str(path)


def _net_with_lambdas(model: Graph | Cell, state: Mapping, source: str) -> Any:
    """Compile ``model`` (child grouping) and load the λ buffers of ``state`` into it."""
    from torch import nn

    from ..draw.style import shorten
    from ..engine import compile as compile_graph

    # only λ is needed: nodes without a built-in function get a stand-in module
    nodes = model.nodes.values()
    functions = {n.name: nn.Identity() for n in nodes if n.parents and n.fn is None}
    net = compile_graph(model, functions, grouping="child")  # type: ignore[arg-type]
    if isinstance(model, Cell):  # a policy wraps its compiled cell: keys `net.state.lam`, …
        own = set(net.state_dict())
        state = {_own_key(k, own): v for k, v in state.items()}
    try:
        result = net.load_state_dict(dict(state), strict=False)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln] or [str(exc).splitlines()[0]]
        raise ConfigError(f"the checkpoint's λ does not fit '{model.name}': {lines[0]}", file=source,
                          fix="draw the YAML of the graph or cell the run was trained on") from None
    if result.unexpected_keys:
        names = sorted({k.split(".")[1] if k.startswith(("blocks.", "pre.", "post.")) else k.split(".")[0]
                        for k in result.unexpected_keys})
        raise ConfigError(f"the checkpoint has λ for nodes that '{model.name}' lacks: {shorten(names, 5)}",
                          file=source, fix="draw the YAML of the graph or cell the run was trained on")
    return net


def _own_key(key: str, own: set[str]) -> str:
    """``key`` without the leading module names that the compiled cell's own keys lack."""
    parts = key.split(".")
    for i in range(len(parts)):
        if ".".join(parts[i:]) in own:
            return ".".join(parts[i:])
    return key
