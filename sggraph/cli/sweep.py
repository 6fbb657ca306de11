"""``sggraph sweep``: run a sweep spec on a local process pool or Ray."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..sweeps import load_spec, plan_runs, run_sweep

__all__ = ["add_parser"]

# ---------------------------------------------------------------------------------------------
# the command line


def _cmd_sweep(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec, args.root_parser)
    if args.dry_run:
        plans = plan_runs(spec, args.out or Path("runs") / "sweeps" / spec.name)
        actions = {a: sum(p.action == a for p in plans) for a in ("new", "resume", "skip")}
        print(f"sweep '{spec.name}': {len(plans)} runs — {actions['new']} to start, {actions['resume']} to resume, "
              f"{actions['skip']} finished before")
        for plan in plans:
            print(f"{plan.action:6s} sggraph {' '.join(plan.argv)}")
        return 0
    out = args.out or str(Path("runs") / "sweeps" / spec.name)
    records = run_sweep(spec, out, backend=args.backend, workers=args.workers, address=args.address,
                        threads=args.threads, log=lambda s: print(s, flush=True), progress=not args.quiet)
    return 1 if any(r["status"] != "finished" for r in records) else 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``sweep`` subcommand to an ``argparse`` subparsers object.

    Examples
    --------
    >>> parser = argparse.ArgumentParser(prog="sggraph"); sub = parser.add_subparsers()
    >>> _ = add_parser(sub)
    >>> args = parser.parse_args(["sweep", "spec.yaml", "--backend", "ray", "--workers", "2"])
    >>> args.spec, args.backend, args.workers, args.address
    ('spec.yaml', 'ray', 2, None)
    """
    p = subparsers.add_parser(
        "sweep", help="run a command over a grid of settings (local process pool or Ray)",
        description="Run a sweep spec: every grid cell is one run directory under --out. Finished runs are "
                    "skipped, killed runs resumed; failed runs are reported and the exit code is 1.")
    p.add_argument("spec", metavar="SPEC.yaml", help="sweep spec (see examples/sweeps/)")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local: a process pool on this machine; ray: Ray tasks (pip install -e '.[ray]')")
    p.add_argument("--address", help="Ray cluster address for --backend ray (default: start a local Ray)")
    p.add_argument("--workers", type=int, help="runs at once (default: the CPUs available to this process)")
    p.add_argument("--threads", type=int, help="torch threads per run, passed as OMP_NUM_THREADS "
                                               "(default: available CPUs // workers)")
    p.add_argument("--out", help="sweep directory (default runs/sweeps/NAME)")
    p.add_argument("--dry-run", action="store_true", help="print each run's command and what would happen")
    p.add_argument("--quiet", action="store_true", help="no progress bar over the runs")
    p.set_defaults(run=_cmd_sweep)
    return p
