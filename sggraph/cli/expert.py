"""``sggraph expert``: the expert network of §5, backprop vs synthetic MSE ratio (Theorem 5)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["add_parser"]


def _cmd_expert(args: argparse.Namespace) -> int:
    from ..experiments.expert import plot_ratios, sweep, write_summary
    from ..runtime.progress import Progress

    total = len(args.case) * len(args.n) * sum(k <= d for d in args.d for k in args.k)
    bar = Progress(total, "expert network", unit="setting", quiet=args.quiet)

    def progress(row: dict) -> None:
        bar.update(1, case=row["case"], d=row["d"], k=row["k"], n=row["n"])
        if not args.json:
            with bar.paused():
                print(f"{row['case']:10s} d={row['d']:2d} k={row['k']} n={row['n']}  "
                      f"ratio {row['ratio']:9.2f}  [{row['ci_low']:8.2f}, {row['ci_high']:8.2f}]  "
                      f"theory {row['theory']:6.0f}", flush=True)

    with bar:
        rows = sweep(args.d, args.k, args.case, args.n, trials=args.trials, m=args.m, seed=args.seed,
                     sigma=args.sigma, p=args.p, tau=args.tau, progress=progress)
    if args.out:
        out = Path(args.out)
        write_summary(rows, out)
        for path in plot_ratios(rows, out):
            if not args.json:
                print(f"wrote {path}")
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0



def add_parser(sub) -> None:
    """Add ``sggraph expert`` to the subcommands ``sub``."""
    p = sub.add_parser("expert", help="the expert network of §5: backprop vs synthetic MSE ratio (Theorem 5)",
                       description="The expert network of §5 (App. F): per setting of d, k and n, the gradient MSE of backprop against synthetic gradients (tabular generators) over trials, with bootstrap confidence intervals, against Theorem 5's ratio 2^(d-k).")
    p.add_argument("--d", type=int, nargs="+", default=list(range(4, 13)), help="target dimensions d")
    p.add_argument("--k", type=int, nargs="+", default=[2, 3, 4], help="coordinates per expert k")
    p.add_argument("--case", nargs="+", default=["noisy", "activation", "partial"],
                   help="feedback cases: noisy, activation, partial")
    p.add_argument("--n", type=int, nargs="+", default=[1, 2, 3, 4], help="samples per partition")
    p.add_argument("--trials", type=int, default=20, help="Monte Carlo trials per setting")
    p.add_argument("--m", type=int, default=5, help="number of experts")
    p.add_argument("--sigma", type=float, default=0.5, help="noise std (noisy case)")
    p.add_argument("--p", type=float, default=0.5, help="activation probability (activation case)")
    p.add_argument("--tau", type=float, default=0.5, help="std of the unobserved variable (partial case)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--out", help="write summary.csv, summary.json and ratio_<case>.png here")
    p.add_argument("--quiet", action="store_true", help="no progress bar or progress lines on stderr")
    p.set_defaults(run=_cmd_expert)
