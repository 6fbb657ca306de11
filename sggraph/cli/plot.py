"""``sggraph plot``: the paper's figures from a sweep directory."""

from __future__ import annotations

import argparse
from typing import Any

from ..sweeps.columns import ABLATIONS, X_COLUMNS, Y_COLUMNS

__all__ = ["add_parser"]


def _cmd_plot(args: argparse.Namespace) -> int:
    from ..sweeps.figures import load_runs, plot_sweep

    runs, unfinished = load_runs(args.sweep_dir)
    written = plot_sweep(args.sweep_dir, args.out, x=args.x, y=args.y,
                         ablations=args.ablation if args.ablation else tuple(ABLATIONS))
    print(f"{len(runs)} finished runs" + (f" ({len(unfinished)} unfinished left out: "
                                          f"{', '.join(unfinished[:5])}{' ...' if len(unfinished) > 5 else ''})"
                                          if unfinished else ""))
    for path in written.values():
        print(f"wrote {path}")
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``plot`` subcommand to an ``argparse`` subparsers object.

    Examples
    --------
    >>> parser = argparse.ArgumentParser(prog="sggraph"); sub = parser.add_subparsers()
    >>> _ = add_parser(sub)
    >>> args = parser.parse_args(["plot", "runs/sweeps/small", "--out", "figs"])
    >>> args.sweep_dir, args.out, args.run is _cmd_plot
    ('runs/sweeps/small', 'figs', True)
    """
    p = subparsers.add_parser(
        "plot", help="the paper's figures from a sweep directory (PNG + CSV of every plotted number)",
        description="Learning curves at each method's best learning rate, learning-rate sensitivity (AUC), "
                    "λ along training and ablations, each as PNG plus a CSV of the plotted numbers.")
    p.add_argument("sweep_dir", metavar="SWEEP_DIR", help="the --out directory of `sggraph sweep`")
    p.add_argument("--out", help="where to write the figures (default SWEEP_DIR/figures)")
    p.add_argument("--x", help=f"x column of metrics.csv (default: the first of {', '.join(X_COLUMNS)})")
    p.add_argument("--y", help=f"y column of metrics.csv (default: the first of {', '.join(Y_COLUMNS)})")
    p.add_argument("--ablation", nargs="+", metavar="SETTING",
                   help=f"settings to draw as ablations when varied (default: {' '.join(ABLATIONS)})")
    p.set_defaults(run=_cmd_plot)
    return p
